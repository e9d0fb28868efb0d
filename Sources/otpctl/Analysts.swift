import ArgumentParser
import Foundation
import Logging
import OTPServer
import OTPService
import Postgres

/// Where otpctl's database is: `--database-url`, `OTPD_DATABASE_URL`, or the `database_url` of `--config`.
struct DatabaseSource: ParsableArguments {
    @Option(name: .customLong("database-url"), help: "postgresql:// URL of otpd's database (env OTPD_DATABASE_URL).")
    var databaseURL: String?
    @Option(help: "otpd's TOML configuration, for its database_url (env OTPD_CONFIG).") var config: String?

    func open() throws -> PGConnection {
        let environment = ProcessInfo.processInfo.environment
        var url = databaseURL ?? environment["OTPD_DATABASE_URL"]
        if url == nil, let file = config ?? environment["OTPD_CONFIG"] {
            url = try Configuration.load(file: file).databaseURL
        }
        guard let url else {
            throw ValidationError("give --database-url, OTPD_DATABASE_URL or a --config with database_url")
        }
        return try PGConnection(url: url)
    }
}

/// A progress line on stderr, rewritten in place, only when stderr is a terminal.
struct ProgressLine {
    let enabled = isatty(STDERR_FILENO) != 0
    private var last = ContinuousClock.now - .seconds(1)

    mutating func show(_ text: @autoclosure () -> String, force: Bool = false) {
        guard enabled, force || ContinuousClock.now - last >= .milliseconds(200) else { return }
        last = ContinuousClock.now
        FileHandle.standardError.write(Data("\r\u{1B}[K\(text())".utf8))
    }

    func end() {
        if enabled { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
    }
}

/// STATS as a table, from the same read models and the same query as the RESP command.
struct Stats: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "Print STATS as a table: SINCE seconds (default 3600), BY channel|country|policy|provider (default "
            + "channel).",
        discussion: "Example: otpctl stats SINCE 86400 BY country --tenant acme"
    )
    @OptionGroup var database: DatabaseSource
    @Option(help: "The tenant (default: default, the single-tenant name).") var tenant = "default"
    @Argument(help: "STATS' own arguments: [SINCE seconds] [BY channel|country|policy|provider].")
    var arguments: [String] = []

    func run() throws {
        let query: StatsQuery
        do { query = try StatsQuery.parse(arguments) } catch { throw ValidationError("\(error)") }
        let conn = try database.open()
        defer { conn.close() }
        let groups = try Analytics.stats(tenant: tenant, since: query.since, by: query.by, on: conn)
        guard let first = groups.first else {
            print("no sessions issued in the last \(query.since) s for tenant \(tenant)")
            return
        }
        let header = first.fields.map(\.key)
        let rows = groups.map { g in
            g.fields.map(\.value.text)
        }
        let widths = header.indices.map { i in max(header[i].count, rows.map { $0[i].count }.max() ?? 0) }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { i, c in
                i == 0
                    ? c.padding(toLength: widths[i], withPad: " ", startingAt: 0)
                    : String(repeating: " ", count: widths[i] - c.count) + c
            }.joined(separator: "  ")
        }
        print(line(header))
        for r in rows { print(line(r)) }
    }
}

/// Rebuilds the read models from the whole log (shadow tables, then one transaction over the live ones).
struct Rebuild: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Rebuild the projections from the event log: into shadow tables, then swapped in one transaction; "
            + "STATS and the views answer throughout."
    )
    @OptionGroup var database: DatabaseSource

    func run() throws {
        let conn = try database.open()
        defer { conn.close() }
        var logger = Logger(label: "otpctl")
        logger.logLevel = .error
        var bar = ProgressLine()
        let clock = ContinuousClock()
        let start = clock.now
        let report = try OTPService.Rebuild.run(on: conn, logger: logger) { p in
            let seconds = max(
                0.001,
                Double((clock.now - start).components.attoseconds) / 1e18
                    + Double((clock.now - start).components.seconds)
            )
            bar.show(
                "\(p.phase): \(p.events) events, \(p.sessions) sessions, \(p.written) written, "
                    + "\(Int(Double(p.events) / seconds)) events/s",
                force: p.phase != "reading"
            )
        }
        bar.end()
        let rate = Double(report.events) / max(report.seconds, 0.001)
        print(
            "rebuilt: \(report.events) events, \(report.sessions) sessions in "
                + String(format: "%.2f s (%.0f events/s)", report.seconds, rate)
                + (report.unreadable > 0 ? ", \(report.unreadable) unreadable events left out" : "")
        )
        if report.unreadable > 0 { throw ExitCode(1) }
    }
}
