import Foundation
import Postgres
import PostgresTesting
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
}
