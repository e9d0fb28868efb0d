import Postgres
import PostgresTesting
import Testing

/// A connection lost while COMMIT is in flight leaves the outcome unknown, and says so.
@Suite("The outcome of a lost COMMIT", .heavy)
struct CommitOutcomeTests {
    /// A deferred constraint trigger runs at COMMIT and terminates its own backend: the connection dies exactly
    /// while COMMIT is in flight.
    private static let dyingAtCommit = """
        CREATE TABLE doomed (v int);
        CREATE FUNCTION die_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_terminate_backend(pg_backend_pid());
            RETURN NULL;
        END $$;
        CREATE CONSTRAINT TRIGGER die AFTER INSERT ON doomed DEFERRABLE INITIALLY DEFERRED
            FOR EACH ROW EXECUTE FUNCTION die_at_commit();
        """

    @Test func aConnectionLostDuringCommitReportsAnUnknownOutcome() async throws {
        let url = try await TestDatabase.make(label: "commitlost")
        let worker = PGWorker(url: url)
        let error: PGError? = try await worker.submit { connection in
            try connection.execute(Self.dyingAtCommit)
            do {
                try connection.transaction { tx in try tx.query("INSERT INTO doomed VALUES (\(1))") }
                return nil
            } catch let error as PGError {
                return error
            }
        }
        #expect(error?.code == .commitOutcomeUnknown)
        #expect(error?.isConnectionLost == true)
        #expect(error?.description.contains("may or may not have committed") == true)

        // The worker reconnects by itself; the row is either there or not, which is why the outcome is unknown.
        let count: Int? = await poll(for: .seconds(15)) {
            try? await worker.submit { connection in
                try connection.query("SELECT count(*)::int AS n FROM doomed").rows.first?.decode("n", as: Int.self)
            }
        }
        #expect(count == 0 || count == 1)
        await worker.close()
    }

    /// Lost before COMMIT was sent, nothing was committed: a plain `.connection` error, as before.
    @Test func aConnectionLostBeforeCommitIsAConnectionError() async throws {
        let url = try await TestDatabase.make(label: "lostbefore")
        let worker = PGWorker(url: url)
        let error: PGError? = try await worker.submit { connection in
            try connection.execute("CREATE TABLE t (v int)")
            do {
                try connection.transaction { tx in
                    try tx.query("INSERT INTO t VALUES (\(1))")
                    try tx.query("SELECT pg_terminate_backend(pg_backend_pid())")
                }
                return nil
            } catch let error as PGError {
                return error
            }
        }
        #expect(error?.code == .connection)
        let count: Int? = await poll(for: .seconds(15)) {
            try? await worker.submit { connection in
                try connection.query("SELECT count(*)::int AS n FROM t").rows.first?.decode("n", as: Int.self)
            }
        }
        #expect(count == 0)
        await worker.close()
    }
}
