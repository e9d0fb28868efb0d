import Foundation
import Postgres
import PostgresTesting
import Synchronization
import Testing

/// With the database gone the server answers `-UNAVAILABLE` (never hangs) and recovers by itself.
@Suite struct DatabaseOutageTests {
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
