import ArgumentParser
import EventStore
import Foundation
import OTPDomain
import OTPServer
import OTPService
import Postgres

/// Recomputes keyed hash chains and checks recorded heads; exits 1 naming each stream and the first version
/// that does not match (an edited, re-hashed, swapped or deleted row, or deleted last rows).
///
/// With a session, that one stream; otherwise (`--all`, or nothing) every stream, read in large keyset pages
/// (`LogScan`) with a progress line on a terminal. The chains are keyed with a key derived from otpd's secret,
/// so this needs the same secret as `unblock`.
struct Verify: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check hash chains and stream heads (an edited, swapped or deleted row, or a stream's deleted "
            + "last rows, is reported at its stream and version).",
        discussion: "Prints `broken: <tenant>/<session> at version N` for each break, then a summary; exit 1 when "
            + "any chain is broken."
    )
    @OptionGroup var connection: Connection
    @OptionGroup var secret: SecretSource
    @Flag(help: "Every stream (the default without a session).") var all = false
    @Option(help: "The tenant: of the session (default: default), or with --all only its streams.")
    var tenant: String?
    @Argument(help: "One session id to check instead of every stream.") var session: String?

    func validate() throws {
        if all && session != nil { throw ValidationError("give either --all or a session, not both") }
    }

    func run() throws {
        let (secrets, c) = try secret.load(for: "whose event log this is")
        let url = try connection.url(or: c)
        let replay = SessionReplay(secrets: secrets)
        if let session {
            let stream = StreamID(tenant: tenant ?? "default", session: session)
            let conn = try PGConnection(url: url)
            defer { conn.close() }
            let (records, head, _) = try EventStore.readWithHead(stream: stream.text, on: conn)
            guard !records.isEmpty || head != nil else {
                FileHandle.standardError.write(Data("otpctl: no such session: \(stream.text)\n".utf8))
                throw ExitCode(1)
            }
            if let version = replay.firstBrokenVersion(records, head: head) {
                print("broken: \(stream.text) at version \(version)")
                throw ExitCode(1)
            }
            print("checked \(stream.text), \(records.count) events: chain ok")
            return
        }
        var broken = 0
        let totals = try LogScan.run(
            url: url,
            options: ScanOptions(prefix: tenant.map { $0 + "/" }),
            work: { stream in (stream.id, replay.firstBrokenVersion(stream.records, head: stream.head)) },
            report: { verdict in
                guard let version = verdict.1 else { return }
                broken += 1
                print("broken: \(verdict.0) at version \(version)")
            }
        )
        print(
            "checked \(totals.streams) streams, \(totals.events) events in \(format(totals.seconds)) s "
                + "(\(totals.eventsPerSecond) events/s): \(broken == 0 ? "all chains ok" : "\(broken) broken")"
        )
        if broken > 0 { throw ExitCode(1) }
    }
}

/// Seconds with two decimals.
func format(_ seconds: Double) -> String { String(format: "%.2f", seconds) }

extension Connection {
    /// The database URL: `--database-url`, else OTPD_DATABASE_URL, else the configuration's.
    func url(or configuration: Configuration) throws -> String {
        guard
            let url = databaseURL ?? ProcessInfo.processInfo.environment["OTPD_DATABASE_URL"]
                ?? configuration.databaseURL
        else { throw ValidationError("give --database-url, OTPD_DATABASE_URL or a --config with database_url") }
        return url
    }
}
