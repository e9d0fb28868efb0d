import Foundation
import OTPTesting
import PostgresTesting
import Synchronization
import Testing

/// Failover between a channel's providers (`providers = [...]`) and the circuit breaker, against real HTTP
/// providers on loopback.
@Suite(.heavy) struct ProviderFailoverTests {
    static func config(primary: FakeProvider, backup: FakeProvider, email: FakeProvider) -> String {
        """
        [channel.sms]
        providers = ["primary", "backup"]
        breaker_failures = 2
        breaker_cooldown = "5s"

        [provider.primary]
        driver = "webhook"
        url = "\(primary.baseURL)/sms"
        retries = 2

        [provider.backup]
        driver = "webhook"
        url = "\(backup.baseURL)/sms"

        [channel.email]
        driver = "webhook"
        url = "\(email.baseURL)/email"

        [[policy]]
        name = "default"
        steps = [ { channel = "sms", timeout = "20s" }, { channel = "email", timeout = "20s" } ]
        """
    }

    /// The events of a session's HISTORY: type and data object, in order.
    static func history(_ port: Int, _ session: String) async throws -> [(type: String, data: [String: Any])] {
        let h = try await redisCLI(port, ["HISTORY", session])
        return stride(from: 0, to: h.count, by: 10).map { i in
            let data = (try? JSONSerialization.jsonObject(with: Data(h[i + 7].utf8))) as? [String: Any]
            return (h[i + 3], data ?? [:])
        }
    }

    /// Waits until the session's last event is `sent`, and returns its history.
    static func sent(_ port: Int, _ session: String) async throws -> [(type: String, data: [String: Any])] {
        try await eventually(timeout: .seconds(20), "\(session) sent") { () -> [(String, [String: Any])]? in
            let h = try await history(port, session)
            return h.last?.type == "sent" ? h : nil
        }
    }

    @Test func aProviderAnswering500HandsTheStepToTheNextAndKeepsFailingIntoAnOpenCircuitThatAProbeCloses()
        async throws
    {
        let healthy = Mutex(false)
        let primary = try await FakeProvider.start { _ in
            healthy.withLock { $0 }
                ? (status: 200, body: #"{"provider_ref":"p-ok"}"#, delay: .zero)
                : (status: 500, body: "internal error", delay: .zero)
        }
        let backup = try await FakeProvider.start { _ in (status: 200, body: #"{"provider_ref":"b-1"}"#, delay: .zero) }
        let email = try await FakeProvider.start { _ in (status: 200, body: "{}", delay: .zero) }
        let server = try await TestServer.start(
            label: "failover",
            config: Self.config(primary: primary, backup: backup, email: email),
            http: true
        )
        defer {
            Task {
                await server.stop()
                await primary.stop()
                await backup.stop()
                await email.stop()
            }
        }

        // 1. The primary answers 500 twice (its two tries): the backup takes the same step at once, with the
        //    same text (the same code) and a message id of its own; nothing goes to e-mail.
        _ = try await redisCLI(server.port, ["ISSUE", "f1", "sms:+15551230001", "email:a@example.com"])
        let h1 = try await Self.sent(server.port, "f1")
        #expect(h1.map(\.type) == ["issued", "delivery_failed", "sent"])
        #expect(h1[1].data["provider"] as? String == "primary")
        #expect(h1[1].data["next_provider"] as? String == "backup")
        #expect(h1[1].data["reason"] as? String != nil)
        #expect(h1[2].data["provider"] as? String == "backup")
        #expect(h1[2].data["provider_ref"] as? String == "b-1")
        #expect(h1[2].data["step"] as? Int == 1)
        let failedId = try #require(h1[1].data["message_id"] as? String)
        let sentId = try #require(h1[2].data["message_id"] as? String)
        #expect(failedId != sentId)
        #expect(primary.requests.count == 2)
        #expect(Set(primary.requests.compactMap { $0.json?["message_id"] as? String }) == [failedId])
        #expect(backup.requests.count == 1)
        #expect(backup.requests[0].json?["message_id"] as? String == sentId)
        #expect(backup.requests[0].json?["text"] as? String == primary.requests[0].json?["text"] as? String)
        #expect(email.requests.isEmpty)
        let s1 = pairs(try await redisCLI(server.port, ["STATUS", "f1"]))
        #expect(s1["channel"] == "sms")
        #expect(s1["status"] == "sent")

        // 2. A second failed hand-off in a row opens the primary's circuit.
        _ = try await redisCLI(server.port, ["ISSUE", "f2", "sms:+15551230002"])
        #expect(try await Self.sent(server.port, "f2").map(\.type) == ["issued", "delivery_failed", "sent"])
        #expect(primary.requests.count == 4)
        let open = try await scrape(server)
        #expect(open.value("otpd_provider_state", ["provider": "primary"]) == 1)
        #expect(open.value("otpd_provider_state", ["provider": "backup"]) == 0)

        // 3. While it is open every session skips it: straight to the backup, the primary not called.
        _ = try await redisCLI(server.port, ["ISSUE", "f3", "sms:+15551230003"])
        let h3 = try await Self.sent(server.port, "f3")
        #expect(h3.map(\.type) == ["issued", "sent"])
        #expect(h3[1].data["provider"] as? String == "backup")
        #expect(primary.requests.count == 4)

        // 4. After the cooldown one message probes it; the probe fails, so the circuit opens for another
        //    cooldown and that message goes on to the backup.
        try await Task.sleep(for: .milliseconds(5_200))
        _ = try await redisCLI(server.port, ["ISSUE", "f4", "sms:+15551230004"])
        #expect(try await Self.sent(server.port, "f4").map(\.type) == ["issued", "delivery_failed", "sent"])
        #expect(primary.requests.count == 6)
        _ = try await redisCLI(server.port, ["ISSUE", "f5", "sms:+15551230005"])
        #expect(try await Self.sent(server.port, "f5").map(\.type) == ["issued", "sent"])
        #expect(primary.requests.count == 6)

        // 5. Healthy again: after the next cooldown the probe succeeds and closes the circuit.
        healthy.withLock { $0 = true }
        try await Task.sleep(for: .milliseconds(5_200))
        _ = try await redisCLI(server.port, ["ISSUE", "f6", "sms:+15551230006"])
        let h6 = try await Self.sent(server.port, "f6")
        #expect(h6.map(\.type) == ["issued", "sent"])
        #expect(h6[1].data["provider"] as? String == "primary")
        #expect(try await scrape(server).value("otpd_provider_state", ["provider": "primary"]) == 0)
        _ = try await redisCLI(server.port, ["ISSUE", "f7", "sms:+15551230007"])
        #expect(try await Self.sent(server.port, "f7")[1].data["provider"] as? String == "primary")
        #expect(email.requests.isEmpty)

        // STATS BY provider: each message under the provider that sent it; none failed, none escalated.
        let byProvider = try await eventually("STATS to count f7") { () -> [String: [String: String]]? in
            let g = groups(try await redisCLI(server.port, ["STATS", "BY", "provider"]))
            return g["primary"]?["sent"] == "2" ? g : nil
        }
        #expect(byProvider["backup"]?["sent"] == "5")
        #expect(byProvider.values.allSatisfy { $0["failed"] == "0" && $0["escalated"] == "0" })
    }

    @Test func aProviderWhoseTriesTimedOutAfterTheRequestWentOutIsNotHandedOn() async throws {
        // The primary takes the request and answers after the call's timeout: it may have sent the SMS, so a
        // second provider could deliver the code twice. Its tries reuse one idempotency key; then e-mail.
        let primary = try await FakeProvider.start { _ in (status: 200, body: "{}", delay: .seconds(2)) }
        let backup = try await FakeProvider.start { _ in (status: 200, body: "{}", delay: .zero) }
        let email = try await FakeProvider.start { _ in (status: 200, body: "{}", delay: .zero) }
        let config = Self.config(primary: primary, backup: backup, email: email)
            .replacingOccurrences(of: "retries = 2", with: "retries = 2\ntimeout = \"300ms\"")
        let server = try await TestServer.start(label: "failover_timeout", config: config)
        defer {
            Task {
                await server.stop()
                await primary.stop()
                await backup.stop()
                await email.stop()
            }
        }
        _ = try await redisCLI(server.port, ["ISSUE", "t1", "sms:+15551230031", "email:t@example.com"])
        let h = try await Self.sent(server.port, "t1")
        #expect(h.map(\.type) == ["issued", "delivery_failed", "escalated", "sent"])
        #expect(h[1].data["provider"] as? String == "primary")
        #expect(h[1].data["next_provider"] == nil)
        #expect((h[1].data["reason"] as? String)?.contains("not handed on") == true)
        #expect(h[3].data["channel"] as? String == "email")
        #expect(backup.requests.isEmpty)
        #expect(primary.requests.count == 2)
        #expect(Set(primary.requests.compactMap { $0.header("Idempotency-Key") }).count == 1)
    }

    @Test func whenEveryProviderFailsTheSessionEscalatesToTheNextChannel() async throws {
        let primary = try await FakeProvider.start { _ in (status: 400, body: "invalid number", delay: .zero) }
        let backup = try await FakeProvider.start { _ in (status: 503, body: "busy", delay: .zero) }
        let email = try await FakeProvider.start { _ in (status: 200, body: "{}", delay: .zero) }
        let server = try await TestServer.start(
            label: "failover_all",
            config: Self.config(primary: primary, backup: backup, email: email)
        )
        defer {
            Task {
                await server.stop()
                await primary.stop()
                await backup.stop()
                await email.stop()
            }
        }
        _ = try await redisCLI(server.port, ["ISSUE", "g1", "sms:+15551230011", "email:g@example.com"])
        let h = try await Self.sent(server.port, "g1")
        #expect(h.map(\.type) == ["issued", "delivery_failed", "delivery_failed", "escalated", "sent"])
        // A refusal is not retried; the backup's 503s are, three tries (its default) in all.
        #expect(primary.requests.count == 1)
        #expect(backup.requests.count == 3)
        #expect(h[1].data["provider"] as? String == "primary")
        #expect(h[1].data["permanent"] as? Bool == true)
        #expect(h[1].data["next_provider"] as? String == "backup")
        #expect(h[2].data["provider"] as? String == "backup")
        #expect(h[2].data["next_provider"] == nil)
        #expect(h[4].data["channel"] as? String == "email")
        #expect(email.requests.count == 1)
    }

    @Test func aSingleProviderChannelNamedLikeAListedProviderKeepsNoCircuit() async throws {
        // The SMS list's provider is named "webhook", as the e-mail channel's single provider is (after its
        // driver): the SMS circuit opening must not skip e-mail.
        let failing = try await FakeProvider.start { _ in (status: 503, body: "busy", delay: .zero) }
        let email = try await FakeProvider.start { _ in (status: 200, body: "{}", delay: .zero) }
        let server = try await TestServer.start(
            label: "failover_names",
            config: """
                [channel.sms]
                providers = ["webhook"]
                breaker_failures = 1
                breaker_cooldown = "60s"

                [provider.webhook]
                driver = "webhook"
                url = "\(failing.baseURL)/sms"
                retries = 1

                [channel.email]
                driver = "webhook"
                url = "\(email.baseURL)/email"

                [[policy]]
                name = "default"
                steps = [ { channel = "sms", timeout = "20s" }, { channel = "email", timeout = "20s" } ]
                """
        )
        defer {
            Task {
                await server.stop()
                await failing.stop()
                await email.stop()
            }
        }
        for (i, session) in ["n1", "n2"].enumerated() {
            _ = try await redisCLI(
                server.port,
                ["ISSUE", session, "sms:+1555123004\(i)", "email:\(session)@example.com"]
            )
            let h = try await Self.sent(server.port, session)
            #expect(h.last?.data["channel"] as? String == "email", "\(session) reached e-mail")
        }
        // The first opened the SMS circuit; the second skipped SMS and still got its e-mail.
        #expect(failing.requests.count == 1)
        #expect(email.requests.count == 2)
    }
}
