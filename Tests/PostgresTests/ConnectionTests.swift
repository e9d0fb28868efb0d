import Postgres
import PostgresTesting
import Testing

@Suite("PGConnection against a real server", .heavy)
struct ConnectionTests {
    @Test func parametersAreNeverConcatenatedIntoSQL() async throws {
        let evil = "'; DROP TABLE x; --"
        let (readBack, matches, remaining) = try await withWorker("inject") { worker in
            try await worker.submit { connection in
                try connection.execute("CREATE TABLE x (id serial PRIMARY KEY, v text NOT NULL)")
                try connection.query("INSERT INTO x (v) VALUES (\(evil))")
                let rows = try connection.query("SELECT v FROM x WHERE v = \(evil)").rows
                let count = try connection.query("SELECT count(*) AS n FROM x").rows.first?.decode("n", as: Int.self)
                return (try rows.first?.decode("v", as: String.self), rows.count, count)
            }
        }
        #expect(readBack == evil)
        #expect(matches == 1)
        #expect(remaining == 1)
    }

    /// Statements are prepared once per connection; a table that changes under a prepared statement is
    /// prepared again (outside a transaction without the caller noticing), and past the cache's limit
    /// statements still run, unprepared.
    @Test func preparedStatementsSurviveSchemaChangesAndTheCacheLimit() async throws {
        let (before, after, inTransaction, retried, many) = try await withWorker("prepared") { worker in
            try await worker.submit { connection in
                try connection.execute("CREATE TABLE p (a int)")
                try connection.query("INSERT INTO p VALUES (\(1))")
                let before = try connection.query("SELECT * FROM p").rows[0].columns
                try connection.execute("ALTER TABLE p ADD COLUMN b int")
                let after = try connection.query("SELECT * FROM p").rows[0].columns
                try connection.execute("ALTER TABLE p ADD COLUMN c int")
                // Inside a transaction the failed statement aborted it: the caller sees the error...
                var inTransaction: String?
                do {
                    try connection.transaction { c in _ = try c.query("SELECT * FROM p") }
                } catch let e as PGError { inTransaction = e.sqlState }
                // ...and its retry runs on a freshly prepared statement.
                let retried = try connection.transaction { c in try c.query("SELECT * FROM p").rows[0].columns }
                let many = try (0..<(PGConnection.preparedStatementLimit + 20)).map { i in
                    try connection.query("SELECT \(i)::int + \(unescaped: String(i)) AS n").rows[0].decode(
                        "n",
                        as: Int.self
                    )
                }
                return (before, after, inTransaction, retried, many)
            }
        }
        #expect(before == ["a"])
        #expect(after == ["a", "b"])
        #expect(inTransaction == "0A000")
        #expect(retried == ["a", "b", "c"])
        #expect(many == (0..<(PGConnection.preparedStatementLimit + 20)).map { 2 * $0 })
    }

    /// A statement the session lets run longer than the connection's first bound (`otpctl rebuild`'s swap of a
    /// million sessions) is not dropped by the client at that bound: `setStatementTimeout` moves both.
    @Test func aLongerStatementTimeoutMovesTheClientsBoundWithIt() async throws {
        let settings = PGSettings(statementTimeout: .milliseconds(300), responseGrace: .milliseconds(700))
        let (short, bounds, shown, slept) = try await withWorker("longer", settings: settings) { worker in
            try await worker.submit { connection in
                // The server's own timeout cancels a statement past it, and the connection stays usable.
                var short: String?
                do { try connection.execute("SELECT pg_sleep(1)") } catch let e as PGError { short = e.sqlState }
                let before = connection.responseTimeout
                try connection.setStatementTimeout(.zero)
                let bounds = [before, connection.responseTimeout]
                let shown = try connection.query("SHOW statement_timeout").rows[0].decode(
                    "statement_timeout",
                    as: String.self
                )
                // 1.5 s: past the old 1 s bound on an answer.
                try connection.execute("SELECT pg_sleep(1.5)")
                try connection.setStatementTimeout(.seconds(2))
                let slept = try connection.query("SELECT \(1)::int AS one").rows[0].decode("one", as: Int.self)
                return (short, bounds + [connection.responseTimeout], shown, slept)
            }
        }
        #expect(short == "57014")
        #expect(bounds == [.seconds(1), nil, .milliseconds(2700)])
        #expect(shown == "0")
        #expect(slept == 1)
    }

    @Test func nullsRoundTripAsNil() async throws {
        let rows = try await withWorker("nulls") { worker in
            try await worker.submit { connection in
                try connection.execute("CREATE TABLE n (id int PRIMARY KEY, a int, b text)")
                try connection.query("INSERT INTO n VALUES (1, \(nil as Int?), \(nil as String?))")
                try connection.query("INSERT INTO n VALUES (2, \(Optional(7)), \(Optional("x")))")
                return try connection.query("SELECT id, a, b FROM n ORDER BY id").rows
            }
        }
        try #require(rows.count == 2)
        #expect(rows[0]["a"] == nil)
        #expect(try rows[0].decodeIfPresent("a", as: Int.self) == nil)
        #expect(try rows[0].decodeIfPresent("b", as: String.self) == nil)
        let error = #expect(throws: PGError.self) { try rows[0].decode("a", as: Int.self) }
        #expect(error?.code == .decoding)
        #expect(try rows[1].decodeIfPresent("a", as: Int.self) == 7)
        #expect(try rows[1].decode("b", as: String.self) == "x")
    }

    @Test func byteaRoundTripsEveryByteValue() async throws {
        let bytes = (0...255).map { UInt8($0) } + [0, 0, 255]
        let (decoded, length, empty) = try await withWorker("bytea") { worker in
            try await worker.submit { connection in
                let row = try connection.query(
                    "SELECT \(bytes)::bytea AS b, octet_length(\(bytes)::bytea) AS n, \([UInt8]())::bytea AS e"
                ).rows.first
                return (
                    try row?.decode("b", as: [UInt8].self), try row?.decode("n", as: Int.self),
                    try row?.decode("e", as: [UInt8].self)
                )
            }
        }
        #expect(decoded == bytes)
        #expect(length == bytes.count)
        #expect(empty == [])
    }

    @Test func integerExtremesBooleansAndDoublesRoundTrip() async throws {
        let row = try await withWorker("numbers") { worker in
            try await worker.submit { connection in
                try connection.query(
                    """
                    SELECT \(Int64.max)::bigint AS max64, \(Int64.min)::bigint AS min64,
                           \(Int32.max)::int AS max32, \(Int32.min)::int AS min32, \(Int.min)::bigint AS minInt,
                           \(true)::bool AS t, \(false)::bool AS f, \(0.1)::float8 AS tenth,
                           \(Double.infinity)::float8 AS inf, \("naïve ✓")::text AS unicode
                    """
                ).rows.first
            }
        }
        let r = try #require(row)
        #expect(try r.decode("max64", as: Int64.self) == .max)
        #expect(try r.decode("min64", as: Int64.self) == .min)
        #expect(try r.decode("max32", as: Int32.self) == .max)
        #expect(try r.decode("min32", as: Int32.self) == .min)
        #expect(try r.decode("minint", as: Int.self) == .min)
        #expect(try r.decode("t", as: Bool.self) == true)
        #expect(try r.decode("f", as: Bool.self) == false)
        #expect(try r.decode("tenth", as: Double.self) == 0.1)
        #expect(try r.decode("inf", as: Double.self) == .infinity)
        #expect(try r.decode("unicode", as: String.self) == "naïve ✓")
    }

    @Test func uniqueViolationCarriesSQLStateButNotTheValue() async throws {
        let secret = "secret-value-4711"
        let outcome: Result<Int, PGError> = try await withWorker("unique") { worker in
            try await worker.submit { connection in
                try connection.execute("CREATE TABLE u (id text PRIMARY KEY)")
                let first = try connection.query("INSERT INTO u VALUES (\(secret))").affectedRows
                do {
                    try connection.query("INSERT INTO u VALUES (\(secret))")
                    return .success(first)
                } catch let error as PGError {
                    return .failure(error)
                }
            }
        }
        guard case .failure(let error) = outcome else {
            Issue.record("the duplicate insert succeeded")
            return
        }
        #expect(error.code == .server)
        #expect(error.sqlState == "23505")
        #expect(error.isUniqueViolation)
        #expect(!error.description.contains(secret))
        #expect(!String(describing: error).contains(secret))
        #expect(!error.debugDescription.contains(secret))
        #expect(!error.debugDescription.contains("Key ("))
        #expect(error.debugDescription.contains("u_pkey"))
    }

    @Test func transactionRollsBackWhenTheBodyThrows() async throws {
        let (rolledBack, committed, caught) = try await withWorker("txn") { worker in
            try await worker.submit { connection in
                try connection.execute("CREATE TABLE t (v int)")
                var caught: (any Error)?
                do {
                    try connection.transaction { tx in
                        try tx.query("INSERT INTO t VALUES (\(1))")
                        throw Boom()
                    }
                } catch {
                    caught = error
                }
                let afterRollback = try connection.query("SELECT count(*) AS n FROM t").rows.first?.decode(
                    "n",
                    as: Int.self
                )
                let inserted = try connection.transaction { tx in
                    try tx.query("INSERT INTO t VALUES (\(2)), (\(3))").affectedRows
                }
                let afterCommit = try connection.query("SELECT count(*) AS n FROM t").rows.first?.decode(
                    "n",
                    as: Int.self
                )
                return (afterRollback, afterCommit.map { ($0, inserted) }, caught is Boom)
            }
        }
        #expect(rolledBack == 0)
        #expect(committed?.0 == 2)
        #expect(committed?.1 == 2)
        #expect(caught)
    }

    /// BEGIN travels with the transaction's first statement (one pipeline): that statement is inside the
    /// transaction, a first statement that fails leaves the connection idle and usable, and a transaction that
    /// runs nothing returns its value and leaves no transaction open.
    @Test func beginGoesOutWithTheFirstStatement() async throws {
        let (same, failedState, usable, empty, inside) = try await withWorker("lazybegin") { worker in
            try await worker.submit { connection in
                let (first, second) = try connection.transaction { tx in
                    (
                        try tx.query("SELECT txid_current()::text AS x").rows[0].decode("x", as: String.self),
                        try tx.query("SELECT txid_current()::text AS x").rows[0].decode("x", as: String.self)
                    )
                }
                var failedState: String?
                do {
                    try connection.transaction { tx in try tx.query("SELECT 1 / \(0)") }
                } catch let error as PGError {
                    failedState = error.sqlState
                }
                let usable = try connection.query("SELECT \(41) + 1 AS n").rows[0].decode("n", as: Int.self)
                let empty = try connection.transaction { _ in 7 }
                // Not in a transaction block: a statement now runs on its own, and SAVEPOINT is refused.
                var inside = true
                do { try connection.execute("SAVEPOINT s") } catch { inside = false }
                return (first == second, failedState, usable, empty, inside)
            }
        }
        #expect(same)
        #expect(failedState == "22012")
        #expect(usable == 42)
        #expect(empty == 7)
        #expect(!inside)
    }

    /// A batch runs its statements in order in one round trip and hands each check its result; the first one
    /// refused ends it (outside a transaction the batch is one implicit transaction, so nothing of it stays), a
    /// check's own error is thrown after every statement ran, and the connection is usable afterwards.
    @Test func aBatchRunsInOrderAndStopsAtTheFirstRefusal() async throws {
        struct Short: Error {}
        let (seen, afterFailure, failedState, checked, afterCheck, inTransaction) = try await withWorker("batch") {
            worker in
            try await worker.submit { connection in
                try connection.execute("CREATE TABLE b (v int PRIMARY KEY)")
                var seen: [Int] = []
                var ok = PGBatch()
                ok.add("INSERT INTO b VALUES (\(1)), (\(2))") { seen.append(try $0.get().affectedRows) }
                ok.add("INSERT INTO b VALUES (\(3))")
                ok.add("SELECT count(*)::int AS n FROM b") { seen.append(try $0.get().rows[0].decode("n")) }
                try connection.run(ok)

                var failing = PGBatch()
                failing.add("INSERT INTO b VALUES (\(10))")
                failing.add("INSERT INTO b VALUES (\(1))")  // a duplicate key
                failing.add("INSERT INTO b VALUES (\(11))") { _ in seen.append(-1) }  // never runs
                var failedState: String?
                do { try connection.run(failing) } catch let error as PGError { failedState = error.sqlState }
                let afterFailure = try connection.query("SELECT count(*)::int AS n FROM b").rows[0].decode(
                    "n",
                    as: Int.self
                )

                var checking = PGBatch()
                checking.add("DELETE FROM b WHERE v = \(3)") { if try $0.get().affectedRows < 2 { throw Short() } }
                checking.add("INSERT INTO b VALUES (\(4))")
                var checked = false
                do { try connection.run(checking) } catch is Short { checked = true }
                let afterCheck = try connection.query("SELECT array_agg(v ORDER BY v)::text AS a FROM b").rows[0]
                    .decode("a", as: String.self)

                // The first statement of a transaction: BEGIN rides in the same pipeline, and a check that throws
                // rolls the whole transaction back.
                do {
                    try connection.transaction { tx in
                        var batch = PGBatch()
                        batch.add("INSERT INTO b VALUES (\(20))")
                        batch.add("INSERT INTO b VALUES (\(21))") { _ in throw Short() }
                        try tx.run(batch)
                    }
                } catch is Short {}
                let inTransaction = try connection.query("SELECT count(*)::int AS n FROM b WHERE v >= \(20)").rows[0]
                    .decode("n", as: Int.self)
                return (seen, afterFailure, failedState, checked, afterCheck, inTransaction)
            }
        }
        #expect(seen == [2, 3])
        #expect(failedState == "23505")
        #expect(afterFailure == 3)
        #expect(checked)
        #expect(afterCheck == "{1,2,4}")
        #expect(inTransaction == 0)
    }

    @Test func transactionWithASwallowedErrorIsRolledBackNotCommitted() async throws {
        let (sqlState, count, nestedCount) = try await withWorker("txnabort") { worker in
            try await worker.submit { connection in
                try connection.execute("CREATE TABLE t (v int)")
                var sqlState: String?
                do {
                    try connection.transaction { tx in
                        try tx.query("INSERT INTO t VALUES (\(1))")
                        _ = try? tx.query("SELECT 1 / \(0)")
                    }
                } catch let error as PGError {
                    sqlState = error.sqlState
                }
                let count = try connection.query("SELECT count(*) AS n FROM t").rows.first?.decode("n", as: Int.self)
                // A nested transaction is a savepoint: its failure does not abort the outer one.
                try connection.transaction { tx in
                    try tx.query("INSERT INTO t VALUES (\(10))")
                    _ = try? tx.transaction { inner in
                        try inner.query("INSERT INTO t VALUES (\(11))")
                        throw Boom()
                    }
                }
                let nested = try connection.query("SELECT count(*) AS n FROM t").rows.first?.decode("n", as: Int.self)
                return (sqlState, count, nested)
            }
        }
        #expect(sqlState == "25P02")
        #expect(count == 0)
        #expect(nestedCount == 1)
    }

    @Test func statementTimeoutCancelsSlowQueriesQuickly() async throws {
        let settings = PGSettings(statementTimeout: .milliseconds(200))
        let (error, elapsed, usable) = try await withWorker("timeout", settings: settings) { worker in
            let start = ContinuousClock.now
            var caught: PGError?
            do {
                _ = try await worker.submit { connection in try connection.query("SELECT pg_sleep(10)") }
            } catch let error as PGError {
                caught = error
            }
            let elapsed = start.duration(to: .now)
            let usable = try await worker.submit { connection in
                try connection.query("SELECT \(1)::int AS one").rows.first?.decode("one", as: Int.self)
            }
            return (caught, elapsed, usable)
        }
        #expect(error?.isQueryCanceled == true)
        #expect(error?.code == .server)
        #expect(elapsed < .seconds(3))
        #expect(usable == 1)
    }

    @Test func sessionSettingsAreApplied() async throws {
        let settings = PGSettings(
            statementTimeout: .milliseconds(1500),
            lockTimeout: .milliseconds(700),
            idleInTransactionTimeout: .seconds(9),
            applicationName: "otpd-test"
        )
        let row = try await withWorker("settings", settings: settings) { worker in
            try await worker.submit { connection in
                try connection.query(
                    """
                    SELECT current_setting('statement_timeout') AS st, current_setting('lock_timeout') AS lt,
                           current_setting('idle_in_transaction_session_timeout') AS it,
                           current_setting('application_name') AS app
                    """
                ).rows.first
            }
        }
        #expect(row?["st"] == "1500ms")
        #expect(row?["lt"] == "700ms")
        #expect(row?["it"] == "9s")
        #expect(row?["app"] == "otpd-test")
    }

    @Test func listenNotifyRoundTrip() async throws {
        let url = try await TestDatabase.make(label: "notify")
        let listener = PGWorker(url: url)
        let notifier = PGWorker(url: url)
        let outcome: Result<(PGNotification?, PGNotification?), any Error>
        do {
            let quiet = try await listener.submit { connection in
                try connection.query("LISTEN \(identifier: "otpd_events")")
                return try connection.waitForNotification(timeout: .milliseconds(100))
            }
            try await notifier.submit { connection in
                _ = try connection.query("SELECT pg_notify(\("otpd_events"), \("hello 'world'"))")
            }
            let received = try await listener.submit { connection in
                try connection.waitForNotification(timeout: .seconds(5))
            }
            outcome = .success((quiet, received))
        } catch {
            outcome = .failure(error)
        }
        await listener.close()
        await notifier.close()
        let (quiet, notification) = try outcome.get()
        #expect(quiet == nil)
        #expect(notification?.channel == "otpd_events")
        #expect(notification?.payload == "hello 'world'")
    }

    @Test func directConnectionReportsConnectionErrorsWithoutHanging() throws {
        // Port 1 on loopback is closed: the connect fails immediately with `.connection`.
        let error = #expect(throws: PGError.self) {
            _ = try PGConnection(url: "postgresql://otpd@127.0.0.1:1/otpd")
        }
        #expect(error?.code == .connection)
        #expect(error?.sqlState == nil)
    }
}
