import Foundation
import OTPTesting
import PostgresTesting
import Testing

/// Spend budgets: `[prices]`, `prefix_spend_per_hour` and `spend_per_day`, and STATS' cost columns, against
/// webhook providers on loopback.
@Suite(.heavy) struct SpendBudgetTests {
    static func config(sms: FakeProvider, email: FakeProvider, limits: String) -> String {
        """
        [channel.sms]
        driver = "webhook"
        url = "\(sms.baseURL)/sms"

        [channel.email]
        driver = "webhook"
        url = "\(email.baseURL)/email"

        [prices]
        sms = { default = 0.05, "+44" = 0.04 }
        email = { default = 0.0001 }

        [limits]
        \(limits)

        [[policy]]
        name = "default"
        steps = [ { channel = "sms", timeout = "20s" }, { channel = "email", timeout = "20s" } ]
        """
    }

    /// The data of a session's events of one type, in order.
    static func data(_ port: Int, _ session: String, _ type: String) async throws -> [[String: Any]] {
        let h = try await redisCLI(port, ["HISTORY", session])
        return stride(from: 0, to: h.count, by: 10).filter { h[$0 + 3] == type }.compactMap {
            (try? JSONSerialization.jsonObject(with: Data(h[$0 + 7].utf8))) as? [String: Any]
        }
    }

    /// The six-digit code in the last message a provider received.
    static func code(_ provider: FakeProvider) throws -> String {
        let text = try #require(provider.requests.last?.json?["text"] as? String)
        let match = try #require(text.firstMatch(of: /\b\d{6}\b/))
        return String(match.0)
    }

    @Test func aPrefixOverItsHourlySpendLosesSMSForEmailAndIsRefusedWithoutIt() async throws {
        let sms = try await FakeProvider.start { _ in (status: 200, body: "{}", delay: .zero) }
        // The e-mail gateway reports its own price, which replaces the configured one.
        let email = try await FakeProvider.start { _ in (status: 200, body: #"{"price":"0.0002"}"#, delay: .zero) }
        let server = try await TestServer.start(
            label: "spend_prefix",
            config: Self.config(sms: sms, email: email, limits: "prefix_spend_per_hour = 0.1")
        )
        defer {
            Task {
                await server.stop()
                await sms.stop()
                await email.stop()
            }
        }
        // Two SMS to +1 at 0.05 reach the cap of 0.1.
        _ = try await redisCLI(server.port, ["ISSUE", "b1", "sms:+15551230001", "email:b1@example.com"])
        try await server.waitUntilSent("b1")
        let sent1 = try await Self.data(server.port, "b1", "sent")
        #expect(sent1.first?["price"] as? String == "0.05")
        #expect(sent1.first?["price_source"] as? String == "prices")
        #expect(pairs(try await redisCLI(server.port, ["VERIFY", "b1", try Self.code(sms)]))["result"] == "verified")
        _ = try await redisCLI(server.port, ["ISSUE", "b2", "sms:+15551230002"])
        try await server.waitUntilSent("b2")
        #expect(sms.requests.count == 2)

        // Over it, +1 loses its SMS step where the session has e-mail, and says why in `issued`.
        _ = try await redisCLI(server.port, ["ISSUE", "b3", "sms:+15551230003", "email:b3@example.com"])
        try await server.waitUntilSent("b3")
        let issued3 = try #require(try await Self.data(server.port, "b3", "issued").first)
        #expect(issued3["skipped"] as? [String] == ["sms"])
        #expect(issued3["skip_reason"] as? String == "budget")
        #expect(pairs(try await redisCLI(server.port, ["STATUS", "b3"]))["channel"] == "email")
        #expect(sms.requests.count == 2)
        #expect(email.requests.count == 1)
        let sent3 = try await Self.data(server.port, "b3", "sent")
        #expect(sent3.first?["price"] as? String == "0.0002")
        #expect(sent3.first?["price_source"] as? String == "provider")

        // Without e-mail it is refused, and records nothing.
        let refused = try await redisCLI(server.port, ["ISSUE", "b4", "sms:+15551230004"])
        #expect(refused.first?.hasPrefix("RATELIMITED retry_after=") == true, "\(refused)")
        #expect(try await redisCLI(server.port, ["STATUS", "b4"]).first?.hasPrefix("NOTFOUND") == true)

        // Another prefix has its own hour: +44 still gets SMS, at its own price.
        _ = try await redisCLI(server.port, ["ISSUE", "b5", "sms:+447700900123"])
        try await server.waitUntilSent("b5")
        #expect(try await Self.data(server.port, "b5", "sent").first?["price"] as? String == "0.04")
        #expect(sms.requests.count == 3)

        // STATS: the priced messages' cost and its ratio to verifications, per channel.
        let stats = try await eventually("STATS to count the cost") { () -> [String: [String: String]]? in
            let g = groups(try await redisCLI(server.port, ["STATS"]))
            return g["sms"]?["cost"] == "0.1400" && g["email"]?["cost"] == "0.0002" ? g : nil
        }
        #expect(stats["sms"]?["verified"] == "1")
        #expect(stats["sms"]?["cost_per_verification"] == "0.1400")
        #expect(stats["email"]?["cost_per_verification"] == "", "no verification on e-mail: null")
    }

    @Test func aTenantOverItsDailySpendIsRefused() async throws {
        let sms = try await FakeProvider.start { _ in (status: 200, body: "{}", delay: .zero) }
        let email = try await FakeProvider.start { _ in (status: 200, body: "{}", delay: .zero) }
        let server = try await TestServer.start(
            label: "spend_tenant",
            config: Self.config(sms: sms, email: email, limits: "spend_per_day = 0.05")
        )
        defer {
            Task {
                await server.stop()
                await sms.stop()
                await email.stop()
            }
        }
        _ = try await redisCLI(server.port, ["ISSUE", "d1", "sms:+15551230021"])
        try await server.waitUntilSent("d1")
        let refused = try await redisCLI(server.port, ["ISSUE", "d2", "email:d2@example.com"])
        #expect(refused.first?.hasPrefix("RATELIMITED retry_after=") == true, "\(refused)")
        #expect(email.requests.isEmpty)
    }
}
