import Foundation
import OTPTesting
import Postgres
import PostgresTesting
import Testing

/// `otpctl stats` and `otpctl rebuild` against a running server's database.
@Suite(.heavy) struct AnalystToolTests {
    @Test func otpctlStatsPrintsTheTableAndRebuildRestoresWipedProjections() async throws {
        guard let otpctl = ExecutableTests.built("otpctl") else { return }
        let server = try await TestServer.start(label: "otpctl_stats")
        defer { Task { await server.stop() } }
        for i in 0..<3 {
            _ = try await redisCLI(server.port, ["ISSUE", "o\(i)", "email:o\(i)@example.com"])
            try await server.waitUntilSent("o\(i)")
        }
        _ = try await eventually("the projector to apply the sends") { () -> Bool? in
            let g = groups(try await redisCLI(server.port, ["STATS"]))
            return g["email"]?["sent"] == "3" ? true : nil
        }
        let db = ["--database-url", server.databaseURL]
        let table = try await run([otpctl, "stats"] + db + ["SINCE", "600", "BY", "channel"])
        #expect(table.status == 0, "\(table.stderr)")
        let lines = table.stdout.split(separator: "\n").map { $0.split(separator: " ").map(String.init) }
        #expect(lines.first?.prefix(4) == ["group", "issued", "sent", "delivered"])
        #expect(lines.dropFirst().first?.prefix(3) == ["email", "3", "3"])
        let bad = try await run([otpctl, "stats"] + db + ["BY", "carrier"])
        #expect(bad.status != 0)
        #expect(bad.stderr.contains("BY must be channel, country, policy or provider"))

        // Projections wiped by hand come back from the log; STATS then answers as before.
        let conn = try PGConnection(url: server.databaseURL)
        try conn.execute("DELETE FROM projections.message_view")
        conn.close()
        #expect(groups(try await redisCLI(server.port, ["STATS"])).isEmpty)
        let rebuilt = try await run([otpctl, "rebuild"] + db)
        #expect(rebuilt.status == 0, "\(rebuilt.stderr)")
        #expect(rebuilt.stdout.hasPrefix("rebuilt: "))
        #expect(rebuilt.stdout.contains(" 3 sessions "))
        #expect(groups(try await redisCLI(server.port, ["STATS"]))["email"]?["sent"] == "3")
    }
}
