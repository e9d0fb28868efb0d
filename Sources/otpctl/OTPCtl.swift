import ArgumentParser
import EventStore
import Foundation
import Postgres

@main
struct OTPCtl: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "otpctl",
        abstract: "otpd's tool for operators and auditors: check the event log's hash chains, read a history.",
        subcommands: [Verify.self, History.self]
    )
}

struct Connection: ParsableArguments {
    @Option(name: .customLong("database-url"), help: "postgresql:// URL of otpd's database (env OTPD_DATABASE_URL).")
    var databaseURL: String?

    func open() throws -> PGConnection {
        guard let url = databaseURL ?? ProcessInfo.processInfo.environment["OTPD_DATABASE_URL"] else {
            throw ValidationError("give --database-url or set OTPD_DATABASE_URL")
        }
        return try PGConnection(url: url)
    }
}

/// Recomputes every stream's hash chain; exits 1 naming each stream and the first version that does not match.
struct Verify: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check every event's hash chain (an edited or deleted row is reported at its stream and version).")
    @OptionGroup var connection: Connection

    func run() throws {
        let conn = try connection.open()
        defer { conn.close() }
        let streams = try conn.query("SELECT DISTINCT stream_id FROM events ORDER BY stream_id").rows
            .map { try $0.decode(0, as: String.self) }
        var events = 0
        var broken = 0
        for (i, stream) in streams.enumerated() {
            let records = try EventStore.read(stream: stream, on: conn)
            events += records.count
            if let version = HashChain.firstBrokenVersion(records) {
                broken += 1
                print("broken: \(stream) at version \(version)")
            }
            if (i + 1) % 10_000 == 0 {
                FileHandle.standardError.write(Data("otpctl: checked \(i + 1) of \(streams.count) streams\n".utf8))
            }
        }
        print("checked \(streams.count) streams, \(events) events: \(broken == 0 ? "all chains ok" : "\(broken) broken")")
        if broken > 0 { throw ExitCode(1) }
    }
}

/// Prints a session's events, oldest first, as JSON lines.
struct History: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print a session's events as JSON lines.")
    @OptionGroup var connection: Connection
    @Option(help: "The tenant (default: default).") var tenant = "default"
    @Argument(help: "The session id.") var session: String

    func run() throws {
        let conn = try connection.open()
        defer { conn.close() }
        let records = try EventStore.read(stream: "\(tenant)/\(session)", on: conn)
        guard !records.isEmpty else {
            FileHandle.standardError.write(Data("otpctl: no such session\n".utf8))
            throw ExitCode(1)
        }
        for r in records {
            let hash = r.hash.map { String(format: "%02x", $0) }.joined()
            print(#"{"version":\#(r.version),"type":"\#(r.type)","at":\#(r.at),"hash":"\#(hash)","data":\#(r.data)}"#)
        }
    }
}
