// Loads a throwaway otpd database with many realistic sessions for `tools/bench/replay.sh`.
//
//   bench-replay-load DATABASE_URL SECRET_FILE SESSIONS
//
// The templates are the sessions otpd itself recorded in the database (the script drives a real otpd). Each
// template's events are decoded with otpd's own EventCodec, then written again SESSIONS times in total (the
// templates in turn) under new stream ids `bench/b<i>`: each copy gets a fresh session key (its destinations,
// seed and fingerprint sealed again under it, as ISSUE would) and a keyed hash chain and head computed with
// the EventStore's HashChain, so `otpctl verify` and `otpctl replay` find every copy intact and foldable.
import EventStore
import Foundation
import OTPDomain
import OTPService
import Postgres

/// Reads the templates and writes the copies (see above).
func load() throws {
    let arguments = CommandLine.arguments
    guard arguments.count == 4, let sessions = Int(arguments[3]), sessions > 0 else {
        FileHandle.standardError.write(Data("usage: bench-replay-load DATABASE_URL SECRET_FILE SESSIONS\n".utf8))
        exit(2)
    }
    let secrets = try Secrets.load(hex: nil, file: arguments[2], dataDirectory: "/nonexistent").0
    let conn = try PGConnection(url: arguments[1], settings: PGSettings(statementTimeout: .seconds(300)))
    let codec = EventCodec()

    // The templates: every stream otpd recorded, decoded with its session key.
    var templates: [[(event: SessionEvent, at: Int64)]] = []
    let keys = try SessionReplay.sealedKeys(in: StreamRange(after: nil, through: nil), on: conn)
    var current: [EventRecord] = []
    func addTemplate(_ records: [EventRecord]) throws {
        guard let first = records.first, let sealed = keys[first.streamID] else { return }
        let key = try secrets.openSessionKey(sealed, stream: first.streamID)
        templates.append(try records.map { (event: try codec.decode($0, key: key), at: $0.at) })
    }
    for record in try EventStore.readInStreamOrder(after: nil, limit: 1_000_000, on: conn) {
        if let last = current.last, last.streamID != record.streamID {
            try addTemplate(current)
            current = []
        }
        current.append(record)
    }
    try addTemplate(current)
    guard !templates.isEmpty else {
        FileHandle.standardError.write(Data("no template sessions in the database\n".utf8))
        exit(1)
    }
    print("\(templates.count) template sessions, \(templates.map(\.count).reduce(0, +)) events")

    var events: [String?] = []
    var heads: [String?] = []
    var sessionKeys: [String?] = []
    func flush() throws {
        try conn.transaction { conn in
            func insert(_ table: String, _ columns: String, _ types: [String], _ values: [String?]) throws {
                guard !values.isEmpty else { return }
                var sql = "INSERT INTO \(table) (\(columns)) VALUES "
                for row in 0..<(values.count / types.count) {
                    sql += row == 0 ? "(" : ", ("
                    sql += types.enumerated().map { "$\(row * types.count + $0.offset + 1)::\($0.element)" }
                        .joined(separator: ", ")
                    sql += ")"
                }
                try conn.query(PGQuery(unsafeSQL: sql, parameters: values))
            }
            try insert(
                "events",
                "stream_id, version, type, data, at_ms, prev_hash, hash",
                ["text", "integer", "text", "json", "bigint", "bytea", "bytea"],
                events
            )
            try insert("stream_heads", "stream_id, version, mac", ["text", "integer", "bytea"], heads)
            try insert("session_keys", "stream_id, sealed_key", ["text", "bytea"], sessionKeys)
        }
        events.removeAll(keepingCapacity: true)
        heads.removeAll(keepingCapacity: true)
        sessionKeys.removeAll(keepingCapacity: true)
    }

    let began = ContinuousClock.now
    var written = 0
    for i in 0..<sessions {
        let session = "b\(i)"
        let stream = "bench/\(session)"
        let fresh = try secrets.newSessionKey(stream: stream)
        var prev = HashChain.genesis
        let template = templates[i % templates.count]
        for (n, (event, at)) in template.enumerated() {
            var event = event
            if case .issued(var issued) = event {
                issued.session = session
                event = .issued(issued)
            }
            let new = try codec.encode(event, stream: stream, key: fresh.key)
            let version = n + 1
            let hash = HashChain.hash(
                key: secrets.chainKey,
                prev: prev,
                streamID: stream,
                version: version,
                type: new.type,
                at: at,
                data: new.data
            )
            events += [stream, String(version), new.type, new.data, String(at), prev.pgText, hash.pgText]
            prev = hash
        }
        let head = HashChain.head(key: secrets.chainKey, streamID: stream, version: template.count, hash: prev)
        heads += [stream, String(head.version), head.mac.pgText]
        sessionKeys += [stream, fresh.sealed.pgText]
        written += template.count
        if events.count >= 7 * 1_000 { try flush() }
        if (i + 1) % 50_000 == 0 { print("  \(i + 1) sessions, \(written) events") }
    }
    try flush()
    let took = ContinuousClock.now - began
    print("loaded \(sessions) sessions, \(written) events in \(took.formatted(.units(allowed: [.seconds])))")
    try conn.execute("ANALYZE events; ANALYZE stream_heads; ANALYZE session_keys")
    conn.close()
}

do { try load() } catch {
    FileHandle.standardError.write(Data("bench-replay-load: \(error)\n".utf8))
    exit(1)
}
