import ArgumentParser
import EventStore
import Foundation
import OTPDomain
import OTPServer
import OTPService
import Postgres

/// Writes every event appended within a duration as JSON Lines, for an auditor's own tools.
///
/// Each line: `tenant`, `session`, `version`, `type`, `at` (Unix epoch milliseconds), `data` (the stored JSON
/// object as it is: destinations, seed and fingerprint are sealed there, and no event holds a code) and `hash`
/// (hex). Streams in id order, each oldest first, read in keyset pages inside one snapshot. Needs no secret.
struct Export: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Print every event of the last DURATION as JSON Lines (no code; destinations stay sealed)."
    )
    @OptionGroup var connection: Connection
    @Option(help: "otpd's TOML configuration (for its database URL).") var config: String?
    @Option(help: "How far back: 90m, 24h, 7d, 3600s (events whose time is within it).") var since: String
    @Option(help: "Only this tenant's sessions.") var tenant: String?

    func validate() throws {
        guard Self.milliseconds(since) != nil else {
            throw ValidationError("--since: '\(since)' is not a duration such as 90m, 24h, 7d or 3600s")
        }
    }

    /// A duration written `<n>ms`, `<n>s`, `<n>m`, `<n>h` or `<n>d`, in milliseconds; nil when malformed.
    static func milliseconds(_ text: String) -> Int64? {
        let t = text.trimmingCharacters(in: .whitespaces)
        if t.hasSuffix("d") {
            guard let days = Int64(t.dropLast()), days >= 0 else { return nil }
            let (ms, overflow) = days.multipliedReportingOverflow(by: 86_400_000)
            return overflow ? nil : ms
        }
        guard let last = t.last, last.isLetter else { return nil }  // a unit is required: "24" means nothing here
        return DurationText.milliseconds(t)
    }

    func run() throws {
        var c = Configuration()
        if let config { c = try Configuration.load(file: config) }
        let url = try connection.url(or: c)
        guard let window = Self.milliseconds(since) else { throw ValidationError("--since: not a duration") }
        let conn = try PGConnection(url: url, settings: LogScan.settings)
        defer { conn.close() }
        try conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        let now = try EventStore.now(on: conn)
        let sinceMs = now.subtractingReportingOverflow(window).overflow ? Int64.min : now - window
        var after: (stream: String, version: Int)?
        let out = FileHandle.standardOutput
        while true {
            let records = try EventStore.readInStreamOrder(
                after: after,
                limit: 10_000,
                prefix: tenant.map { $0 + "/" },
                sinceMs: sinceMs,
                on: conn
            )
            var text = ""
            text.reserveCapacity(records.count * 512)
            for r in records { text += Self.line(r) }
            out.write(Data(text.utf8))
            guard records.count == 10_000, let last = records.last else { break }
            after = (last.streamID, last.version)
        }
        try? conn.execute("COMMIT")
    }

    /// One event as a JSON line.
    static func line(_ r: EventRecord) -> String {
        let id = StreamID(text: r.streamID) ?? StreamID(tenant: "", session: r.streamID)
        return #"{"tenant":\#(json(id.tenant)),"session":\#(json(id.session)),"version":\#(r.version),"#
            + #""type":\#(json(r.type)),"at":\#(r.at),"data":\#(r.data),"hash":"\#(Hex.encode(r.hash))"}"# + "\n"
    }

    /// A JSON string literal.
    static func json(_ s: String) -> String { JSONText.quoted(s) }
}
