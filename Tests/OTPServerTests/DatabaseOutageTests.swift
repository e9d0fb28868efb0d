import Foundation
import OTPTesting
import Postgres
import PostgresTesting
import Synchronization
import Testing

/// With the database gone the server answers `-UNAVAILABLE` (never hangs) and recovers by itself.
@Suite(.heavy) struct DatabaseOutageTests {
    @Test func commandsAnswerUnavailableWhileTheDatabaseIsDownThenRecover() async throws {
        let dir = "/var/tmp/otpd-outage-\(UUID().uuidString.prefix(8))"
        let pg = EmbeddedPostgres(dataDirectory: dir + "/data", settings: ["fsync": "off"])
        TestClusterCleanup.register(pg, removing: dir)
        let url = try await BlockingThread.run { try pg.start() }
        let server = try await TestServer.start(label: "outage", databaseURL: url)
        defer { Task { await server.stop() } }
        #expect(pairs(try await redisCLI(server.port, ["ISSUE", "o1", "email:a@example.com"]))["session"] == "o1")

        try await BlockingThread.run { pg.stop() }
        let started = ContinuousClock.now
        let down = try await redisCLI(server.port, ["ISSUE", "o2", "email:b@example.com"])
        #expect(down.first?.hasPrefix("UNAVAILABLE") == true, "\(down)")
        #expect(ContinuousClock.now - started < .seconds(10))  // answered, not hung
        #expect(try await redisCLI(server.port, ["STATUS", "o1"]).first?.hasPrefix("UNAVAILABLE") == true)
        #expect(try await redisCLI(server.port, ["PING"]) == ["PONG"])  // the server itself stays up

        _ = try await BlockingThread.run { try pg.start() }
        let back = try await eventually(timeout: .seconds(30), "recovery") { () -> [String: String]? in
            let r = pairs(try await redisCLI(server.port, ["ISSUE", "o2", "email:b@example.com"]))
            return r["session"] == "o2" ? r : nil
        }
        #expect(back["status"] != nil)
        // What was recorded before the outage is still there. Each pooled connection comes back on its own
        // backoff (up to 5 s): until then a command on it answers UNAVAILABLE, which a client retries.
        let before = try await eventually(timeout: .seconds(30), "o1 readable again") { () -> [String: String]? in
            let r = pairs(try await redisCLI(server.port, ["STATUS", "o1"]))
            return r["session"] == nil ? nil : r
        }
        #expect(before["session"] == "o1")
        try await BlockingThread.run { pg.stop() }
    }

    /// A COMMIT whose connection dies (a deferred trigger terminates the backend at COMMIT) is answered
    /// UNAVAILABLE saying the command may have been recorded, not that nothing was.
    @Test func aCommitLostWithItsConnectionAnswersThatTheOutcomeIsUnknown() async throws {
        let server = try await TestServer.start(label: "commitlost")
        defer { Task { await server.stop() } }
        let trigger = """
            CREATE FUNCTION die_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN PERFORM pg_terminate_backend(pg_backend_pid()); RETURN NULL; END $$;
            CREATE CONSTRAINT TRIGGER die AFTER INSERT ON events DEFERRABLE INITIALLY DEFERRED
                FOR EACH ROW EXECUTE FUNCTION die_at_commit();
            """
        try await server.pool.withConnection { connection in try connection.execute(trigger) }

        let lost = try await redisCLI(server.port, ["ISSUE", "c1", "email:c@example.com"])
        let reply = lost.first ?? ""
        #expect(reply.hasPrefix("UNAVAILABLE the connection to the database was lost while committing"), "\(lost)")
        #expect(reply.contains("may have been recorded"), "\(lost)")
        #expect(!reply.contains("nothing was recorded"), "\(lost)")

        // Without the trigger the same ISSUE goes through (repeating it is safe either way).
        _ = try await eventually(timeout: .seconds(30), "trigger dropped") { () -> Bool? in
            let dropped: Void? = try? await server.pool.withConnection { connection in
                try connection.execute("DROP TRIGGER die ON events")
            }
            return dropped.map { true }
        }
        let again = try await eventually(timeout: .seconds(30), "ISSUE recorded") { () -> [String: String]? in
            let r = pairs(try await redisCLI(server.port, ["ISSUE", "c1", "email:c@example.com"]))
            return r["session"] == "c1" ? r : nil
        }
        #expect(again["status"] != nil)
    }

    /// QUALITY R8: a database that stops answering without closing (its processes stopped with SIGSTOP, so TCP
    /// stays up) gets `-UNAVAILABLE` within the statement timeout (5 s) plus the grace (3 s), never a hang, and
    /// a graceful shutdown (what SIGTERM starts) still finishes.
    @Test func aDatabaseThatStopsAnsweringGetsUnavailableAndShutdownStillFinishes() async throws {
        let dir = "/var/tmp/otpd-blackhole-\(UUID().uuidString.prefix(8))"
        let pg = EmbeddedPostgres(dataDirectory: dir + "/data", settings: ["fsync": "off"])
        TestClusterCleanup.register(pg, removing: dir)
        let url = try await BlockingThread.run { try pg.start() }
        let server = try await TestServer.start(label: "blackhole", databaseURL: url)
        #expect(pairs(try await redisCLI(server.port, ["ISSUE", "b1", "email:b@example.com"]))["session"] == "b1")

        let freeze = try ServerFreeze(pg)
        defer { freeze.thaw() }
        let started = ContinuousClock.now
        let reply = Mutex<[String]?>(nil)
        let issue = Task {
            let lines = try await redisCLI(server.port, ["ISSUE", "b2", "email:b@example.com"])
            reply.withLock { $0 = lines }
        }
        let down = try? await eventually(timeout: .seconds(15), "an answer") { reply.withLock { $0 } }
        let elapsed = ContinuousClock.now - started
        if down == nil {
            Issue.record("ISSUE was still waiting \(elapsed) after the database stopped answering")
            freeze.thaw()
        }
        _ = try await issue.value
        #expect(down?.first?.hasPrefix("UNAVAILABLE") == true, "\(String(describing: down))")
        #expect(elapsed < .seconds(12), "answered after \(elapsed)")

        let stopping = ContinuousClock.now
        await server.stop()
        #expect(ContinuousClock.now - stopping < .seconds(20), "stopped after \(ContinuousClock.now - stopping)")
        freeze.thaw()
        try await BlockingThread.run { pg.stop() }
    }
}
