import Crypto
import EventStore
import Foundation
import Postgres
import PostgresTesting
import Testing

let schemaDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("schema").path

/// A fresh, migrated database.
func migratedDatabase(_ label: String) async throws -> String {
    let url = try await TestDatabase.make(label: label)
    let conn = try PGConnection(url: url)
    defer { conn.close() }
    try Migrator(directory: schemaDirectory).apply(on: conn)
    return url
}

/// The chain key of these tests.
let testKey = ChainKey(Array(repeating: 1, count: 32))

/// A chain check with the stream's recorded head.
func broken(_ stream: String, on conn: PGConnection) throws -> Int? {
    HashChain.firstBrokenVersion(
        try EventStore.read(stream: stream, on: conn),
        head: try EventStore.head(stream: stream, on: conn),
        key: testKey
    )
}

func event(_ n: Int) -> NewEvent { NewEvent(type: "happened", data: #"{"n":\#(n)}"#) }

@Suite(.heavy) struct EventStoreTests {
    @Test func appendThenReadKeepsOrderTextAndChain() async throws {
        let url = try await migratedDatabase("es_read")
        let conn = try PGConnection(url: url)
        defer { conn.close() }
        let now = try EventStore.now(on: conn)
        try EventStore.append(
            [event(1), event(2)],
            to: "t/s1",
            expectedVersion: 0,
            headHash: [],
            at: now,
            key: testKey,
            on: conn
        )
        let first = try EventStore.read(stream: "t/s1", on: conn)
        try EventStore.append(
            [event(3)],
            to: "t/s1",
            expectedVersion: 2,
            headHash: first[1].hash,
            at: now + 1,
            key: testKey,
            on: conn
        )
        let all = try EventStore.read(stream: "t/s1", on: conn)
        #expect(all.map(\.version) == [1, 2, 3])
        #expect(all.map(\.data) == [#"{"n":1}"#, #"{"n":2}"#, #"{"n":3}"#])
        #expect(all[0].prevHash == HashChain.genesis)
        #expect(all[1].prevHash == all[0].hash)
        #expect(all[2].prevHash == all[1].hash)
        #expect(try broken("t/s1", on: conn) == nil)
        #expect(try EventStore.read(stream: "t/other", on: conn).isEmpty)
    }

    @Test func aConflictingAppendNeverOverwrites() async throws {
        let url = try await migratedDatabase("es_conflict")
        let a = try PGConnection(url: url)
        let b = try PGConnection(url: url)
        defer {
            a.close()
            b.close()
        }
        try EventStore.append([event(1)], to: "t/s", expectedVersion: 0, headHash: [], at: 1, key: testKey, on: a)
        let head = try EventStore.read(stream: "t/s", on: a)[0].hash
        // Both writers read version 1; the first commits, the second must fail without writing.
        try a.transaction { c in
            try EventStore.append([event(2)], to: "t/s", expectedVersion: 1, headHash: head, at: 2, key: testKey, on: c)
        }
        #expect(throws: AppendError.versionConflict) {
            try b.transaction { c in
                try EventStore.append(
                    [NewEvent(type: "other", data: "{}")],
                    to: "t/s",
                    expectedVersion: 1,
                    headHash: head,
                    at: 3,
                    key: testKey,
                    on: c
                )
            }
        }
        let all = try EventStore.read(stream: "t/s", on: a)
        #expect(all.map(\.type) == ["happened", "happened"])
        #expect(all[1].data == #"{"n":2}"#)
    }

    @Test func editedOrDeletedRowsBreakTheChainAtTheirVersion() async throws {
        let url = try await migratedDatabase("es_tamper")
        let conn = try PGConnection(url: url)
        defer { conn.close() }
        try EventStore.append(
            (1...4).map(event),
            to: "t/s",
            expectedVersion: 0,
            headHash: [],
            at: 5,
            key: testKey,
            on: conn
        )
        try conn.query(#"UPDATE events SET data = '{"n":99}' WHERE stream_id = 't/s' AND version = 3"#)
        #expect(try broken("t/s", on: conn) == 3)
        try conn.query(#"UPDATE events SET data = '{"n":3}' WHERE stream_id = 't/s' AND version = 3"#)
        #expect(try broken("t/s", on: conn) == nil)
        try conn.query("DELETE FROM events WHERE stream_id = 't/s' AND version = 2")
        #expect(try broken("t/s", on: conn) == 2)
    }

    /// S7: SQL access alone cannot hide an edit by re-hashing the chain with the database's own sha256, nor
    /// delete a stream's last events: the hashes are keyed and the head says where the stream ends.
    @Test func reHashedEditsAndDeletedLastRowsAreReportedAtTheirVersion() async throws {
        let url = try await migratedDatabase("es_rehash")
        let conn = try PGConnection(url: url)
        defer { conn.close() }
        try EventStore.append(
            (1...5).map(event),
            to: "t/r",
            expectedVersion: 0,
            headHash: [],
            at: 5,
            key: testKey,
            on: conn
        )
        // Edit version 3 and recompute every hash from it on as an unkeyed SHA-256 chain would be.
        try conn.query(#"UPDATE events SET data = '{"n":33}' WHERE stream_id = 't/r' AND version = 3"#)
        for v in 3...5 {
            try conn.query(
                """
                UPDATE events e SET prev_hash = p.hash,
                    hash = sha256(p.hash || convert_to(e.stream_id || E'\\n' || e.version || E'\\n' || e.type || E'\\n'
                        || e.at_ms || E'\\n', 'UTF8') || convert_to(e.data::text, 'UTF8'))
                FROM events p WHERE e.stream_id = 't/r' AND e.version = \(v) AND p.stream_id = 't/r' AND p.version = \(v - 1)
                """
            )
        }
        // The forgery is a sound unkeyed chain (what the old SHA-256 chain would have accepted) ...
        let forged = try EventStore.read(stream: "t/r", on: conn)
        for r in forged where r.version >= 3 {
            var h = SHA256()
            h.update(data: r.prevHash)
            h.update(data: Array("\(r.streamID)\n\(r.version)\n\(r.type)\n\(r.at)\n".utf8))
            h.update(data: Array(r.data.utf8))
            #expect(r.hash == Array(h.finalize()), "version \(r.version)")
            #expect(r.prevHash == forged[r.version - 2].hash)
        }
        // ... and the keyed chain reports it where the edit is.
        #expect(try broken("t/r", on: conn) == 3)

        try EventStore.append(
            (1...5).map(event),
            to: "t/d",
            expectedVersion: 0,
            headHash: [],
            at: 5,
            key: testKey,
            on: conn
        )
        #expect(try broken("t/d", on: conn) == nil)
        try conn.query("DELETE FROM events WHERE stream_id = 't/d' AND version >= 4")
        #expect(try broken("t/d", on: conn) == 4)  // the head says 5: versions 4 and 5 are gone
        try conn.query("UPDATE stream_heads SET version = 3 WHERE stream_id = 't/d'")
        #expect(try broken("t/d", on: conn) == 4)  // a head edited to match does not verify without the key
        try conn.query("DELETE FROM stream_heads WHERE stream_id = 't/d'")
        #expect(try broken("t/d", on: conn) == 4)  // nor does a stream whose head is gone
        try conn.query("DELETE FROM events WHERE stream_id = 't/r'")
        #expect(try broken("t/r", on: conn) == 1)  // every event deleted: its head still names it
    }

    /// R4: a transaction that began first but commits last is still read, exactly once, in its place.
    @Test func logReadersSeeEveryEventOnceWhenCommitsComeOutOfOrder() async throws {
        let url = try await migratedDatabase("es_order")
        let slow = try PGConnection(url: url)
        let fast = try PGConnection(url: url)
        let reader = try PGConnection(url: url)
        defer {
            slow.close()
            fast.close()
            reader.close()
        }

        try slow.execute("BEGIN")
        try EventStore.append([event(1)], to: "t/slow", expectedVersion: 0, headHash: [], at: 1, key: testKey, on: slow)
        for i in 0..<5 {
            try fast.transaction { c in
                try EventStore.append(
                    [event(10 + i)],
                    to: "t/fast\(i)",
                    expectedVersion: 0,
                    headHash: [],
                    at: 2,
                    key: testKey,
                    on: c
                )
            }
        }
        // The slow transaction is still open: nothing after it may be handed out yet.
        var seen: [String] = []
        var position = LogPosition.start
        func drain() throws {
            while true {
                let batch = try EventStore.readLog(after: position, limit: 2, on: reader)
                if batch.isEmpty { return }
                seen += batch.map(\.record.streamID)
                position = batch.last!.position
            }
        }
        /// Other suites share the cluster and their open transactions hold the horizon back too: poll, bounded.
        func drain(until count: Int) async throws {
            let deadline = ContinuousClock.now + .seconds(10)
            while seen.count < count && ContinuousClock.now < deadline {
                try drain()
                if seen.count < count { try await Task.sleep(for: .milliseconds(20)) }
            }
        }
        try drain()
        #expect(seen.isEmpty)
        try slow.execute("COMMIT")
        try await drain(until: 6)
        #expect(seen == ["t/slow"] + (0..<5).map { "t/fast\($0)" })
        // Reading again from the last checkpoint yields nothing twice.
        try drain()
        #expect(seen.count == 6)
        // A rolled-back append never appears.
        try slow.execute("BEGIN")
        try EventStore.append(
            [event(99)],
            to: "t/rolledback",
            expectedVersion: 0,
            headHash: [],
            at: 3,
            key: testKey,
            on: slow
        )
        try slow.execute("ROLLBACK")
        try fast.transaction { c in
            try EventStore.append(
                [event(7)],
                to: "t/after",
                expectedVersion: 0,
                headHash: [],
                at: 4,
                key: testKey,
                on: c
            )
        }
        try await drain(until: 7)
        #expect(seen.suffix(1) == ["t/after"])
        #expect(!seen.contains("t/rolledback"))
    }

    /// The log is ordered by transaction id as a number: across a change in the number of digits
    /// (9 → 10, 99 → 100) a text ordering would hand out the later transaction first and repeat it.
    @Test func logOrderIsNumericAcrossTransactionIDDigitBoundaries() async throws {
        let url = try await migratedDatabase("es_digits")
        let conn = try PGConnection(url: url)
        defer { conn.close() }
        // Rows with chosen transaction ids, all below the running transactions' horizon (a new cluster starts near 700).
        for (i, tx) in [100, 9, 99, 10].enumerated() {
            try conn.query(
                """
                INSERT INTO events (stream_id, version, type, data, at_ms, prev_hash, hash, tx_id)
                VALUES (\("t/tx\(tx)"), 1, 'happened', '{}', \(Int64(i)), '', '', \(String(tx))::xid8)
                """
            )
        }
        var seen: [String] = []
        var position = LogPosition.start
        for _ in 0..<10 {
            let batch = try EventStore.readLog(after: position, limit: 1, on: conn)
            guard let last = batch.last else { break }
            seen += batch.map(\.record.streamID)
            position = last.position
        }
        #expect(seen == ["t/tx9", "t/tx10", "t/tx99", "t/tx100"])
    }

    @Test func migrationsApplyOnceAndRecordThemselves() async throws {
        let url = try await TestDatabase.make(label: "es_migrate")
        let conn = try PGConnection(url: url)
        defer { conn.close() }
        let migrator = try Migrator(directory: schemaDirectory)
        let first = try migrator.apply(on: conn)
        #expect(first == migrator.migrations.map(\.name))
        #expect(try migrator.apply(on: conn).isEmpty)
        let recorded = try conn.query("SELECT count(*) FROM schema_migrations").rows[0].decode(0, as: Int.self)
        #expect(recorded == migrator.migrations.count)
    }
}
