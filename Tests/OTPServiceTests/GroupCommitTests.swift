import EventStore
import Foundation
import OTPDomain
import Postgres
import PostgresTesting
import Synchronization
import Testing

@testable import OTPService

/// Group commit: many callers' commands in shared transactions, each command rolled back alone, and an outcome
/// given only once its transaction committed.
@Suite(.heavy) struct GroupCommitTests {
    /// A table the tests' own work writes, and the transaction that wrote each row.
    static func table(_ url: String) throws {
        let conn = try PGConnection(url: url)
        defer { conn.close() }
        try conn.execute(
            """
            CREATE TABLE gc_rows (
                name text NOT NULL,
                tx   xid8 NOT NULL DEFAULT pg_current_xact_id(),
                CONSTRAINT gc_unique UNIQUE (name) DEFERRABLE INITIALLY DEFERRED
            )
            """
        )
    }

    static func rows(_ pool: PGPool) async throws -> [String: String] {
        try await pool.withConnection { conn in
            var out: [String: String] = [:]
            for row in try conn.query("SELECT name, tx::text AS tx FROM gc_rows").rows {
                out[try row.decode("name")] = try row.decode("tx")
            }
            return out
        }
    }

    static func insert(_ name: String, on conn: PGConnection) throws {
        try conn.query("INSERT INTO gc_rows (name) VALUES (\(name))")
    }

    /// One transaction at a time, and a first job that holds it long enough for the others to queue behind it.
    static func queued(
        _ committer: GroupCommit<Int>,
        _ jobs: [(String, GroupCommit<Int>.Work)]
    ) async -> [String: Result<Int, any Error>] {
        await withTaskGroup(of: (String, Result<Int, any Error>).self) { group in
            group.addTask {
                do {
                    return (
                        "blocker",
                        .success(
                            try await committer.run(key: "blocker") { conn, _, _ in
                                try conn.query("SELECT pg_sleep(0.5)")
                                try insert("blocker", on: conn)
                                return 0
                            }
                        )
                    )
                } catch { return ("blocker", .failure(error)) }
            }
            try? await Task.sleep(for: .milliseconds(100))
            for (name, work) in jobs {
                group.addTask {
                    do { return (name, .success(try await committer.run(key: name, work))) } catch {
                        return (name, .failure(error))
                    }
                }
            }
            var out: [String: Result<Int, any Error>] = [:]
            for await (name, result) in group { out[name] = result }
            return out
        }
    }

    static func committer(_ pool: PGPool) -> GroupCommit<Int> {
        GroupCommit<Int>(pool: pool, transactions: 1, maxAttempts: 3) { ($0 as? AppendError) == .versionConflict }
    }

    @Test func aRefusedCommandOrALostRaceRollsBackAloneAndTheRestShareOneTransaction() async throws {
        let url = try await TestDatabase.make(label: "gc_batch")
        try Self.table(url)
        let pool = PGPool(url: url, size: 1)
        let committer = Self.committer(pool)
        let attempts = Counter()
        let results = await Self.queued(
            committer,
            [
                (
                    "a",
                    { conn, _, _ in
                        try Self.insert("a", on: conn)
                        return 1
                    }
                ),
                (
                    "race",
                    { conn, _, attempt in
                        attempts.add()
                        try Self.insert("race", on: conn)
                        if attempt == 0 { throw AppendError.versionConflict }  // another writer appended first
                        return attempt
                    }
                ),
                (
                    "refused",
                    { conn, _, _ in
                        try Self.insert("refused", on: conn)
                        throw Rejection.notFound
                    }
                ),
                (
                    "broken",
                    { conn, _, _ in
                        try conn.query("SELECT 1/0")
                        return 0
                    }
                ),
                (
                    "b",
                    { conn, _, _ in
                        try Self.insert("b", on: conn)
                        return 2
                    }
                ),
            ]
        )
        #expect(try results["a"]?.get() == 1)
        #expect(try results["b"]?.get() == 2)
        #expect(try results["race"]?.get() == 1, "the lost race is decided again, on attempt 1")
        #expect(attempts.value == 2)
        #expect(throws: Rejection.notFound) { try results["refused"]?.get() }
        #expect(throws: PGError.self) { try results["broken"]?.get() }
        let rows = try await Self.rows(pool)
        #expect(Set(rows.keys) == ["blocker", "a", "b", "race"], "the refused command's row went with it")
        #expect(rows["a"] == rows["b"], "commands queued behind a transaction share the next one")
        #expect(rows["a"] != rows["blocker"])
        await pool.close()
    }

    @Test func noCommandHearsItIsRecordedWhenItsTransactionDoesNotCommit() async throws {
        let url = try await TestDatabase.make(label: "gc_commit")
        try Self.table(url)
        let pool = PGPool(url: url, size: 1)
        let committer = Self.committer(pool)
        // Both insert "dup": the deferred unique constraint refuses the COMMIT that carries them.
        let results = await Self.queued(
            committer,
            [
                (
                    "one",
                    { conn, _, _ in
                        try Self.insert("dup", on: conn)
                        return 1
                    }
                ),
                (
                    "two",
                    { conn, _, _ in
                        try Self.insert("dup", on: conn)
                        return 2
                    }
                ),
                (
                    "other",
                    { conn, _, _ in
                        try Self.insert("other", on: conn)
                        return 3
                    }
                ),
            ]
        )
        for name in ["one", "two", "other"] {
            #expect(throws: PGError.self, "\(name) was in the transaction that did not commit") {
                try results[name]?.get()
            }
        }
        #expect(try results["blocker"]?.get() == 0)
        #expect(Set(try await Self.rows(pool).keys) == ["blocker"])
        // The committer goes on with the next batch.
        #expect(
            try await committer.run(key: "later") { conn, _, _ in
                try Self.insert("later", on: conn)
                return 4
            } == 4
        )
        await pool.close()
    }

    @Test func countersCountedInOneTransactionAreWrittenOnceAndOnlyForKeptCommands() async throws {
        let url = try await TestDatabase.make(label: "gc_counts")
        try Self.table(url)
        let conn = try PGConnection(url: url)
        try Migrator(directory: schemaDirectory).apply(on: conn)
        conn.close()
        let pool = PGPool(url: url, size: 1)
        let committer = Self.committer(pool)
        let now: Int64 = 1_800_000_000_000
        let count: GroupCommit<Int>.Work = { conn, counts, _ in
            let before = counts.count(scope: "tenant:t", from: now)
            counts.add(scope: "tenant:t", bucketMs: now)
            return before
        }
        let results = await Self.queued(
            committer,
            [
                ("one", count), ("two", count),
                (
                    "dropped",
                    { conn, counts, _ in
                        counts.add(scope: "tenant:t", bucketMs: now)
                        throw Rejection.notFound
                    }
                ),
                ("three", count),
            ]
        )
        // Each command sees the counts of the commands kept before it in its transaction.
        #expect(Set([0, 1, 2]) == Set(["one", "two", "three"].compactMap { try? results[$0]?.get() }))
        let stored = try await pool.withConnection { conn in
            try conn.query(
                "SELECT count(*)::bigint AS rows, sum(n)::bigint AS n FROM pacing_counts WHERE scope = 'tenant:t'"
            )
            .rows[0]
        }
        #expect(try stored.decode("n", as: Int.self) == 3, "three kept, one rolled back")
        #expect(try stored.decode("rows", as: Int.self) == 1, "one row written for the transaction")
        await pool.close()
    }

    @Test func concurrentISSUEsShareTransactionsAndAreEachRecordedOnce() async throws {
        let f = try await Fixture.make("gc_issue", groupCommit: true)
        let n = 40
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<n {
                group.addTask {
                    let request = IssueRequest(
                        session: "g\(i)",
                        destinations: [Destination(channel: .sms, address: "+1555\(String(format: "%07d", i))")],
                        fingerprint: "fp"
                    )
                    _ = try await f.sessions.execute(.issue(request), on: StreamID(tenant: "acme", session: "g\(i)"))
                }
            }
            try await group.waitForAll()
        }
        let row = try await f.pool.withConnection { conn in
            try conn.query(
                """
                SELECT count(*)::bigint AS issued, count(DISTINCT tx_id)::bigint AS transactions,
                       (SELECT sum(n)::bigint FROM pacing_counts WHERE scope = 'tenant:acme') AS counted
                FROM events WHERE type = 'issued'
                """
            ).rows[0]
        }
        #expect(try row.decode("issued", as: Int.self) == n)
        #expect(try row.decode("counted", as: Int.self) == n, "every ISSUE's send counted against the tenant")
        let transactions = try row.decode("transactions", as: Int.self)
        #expect(transactions <= n / 2, "\(n) ISSUEs from \(n) callers committed in \(transactions) transactions")
        await f.pool.close()
    }
}

/// A count shared with `@Sendable` work.
final class Counter: Sendable {
    private let n = Mutex(0)
    func add() { n.withLock { $0 += 1 } }
    var value: Int { n.withLock { $0 } }
}
