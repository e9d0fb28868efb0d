import Foundation
import OTPTesting
import PostgresTesting
import Synchronization
import Testing

/// Fallback against real HTTP providers on loopback (the webhook driver and a fake provider).
@Suite(.heavy) struct ProviderFallbackTests {
    final class Counter: Sendable {
        let value = Mutex(0)
        func next() -> Int {
            value.withLock {
                $0 += 1
                return $0
            }
        }
    }

    @Test func aRefusalEscalatesAtOnceAndTransientErrorsAreRetriedWithOneIdempotencyKey() async throws {
        let sms = try await FakeProvider.start { _ in (status: 400, body: #"{"error":"invalid number"}"#, delay: .zero)
        }
        let calls = Counter()
        let email = try await FakeProvider.start { _ in
            calls.next() <= 2
                ? (status: 503, body: "busy", delay: .zero)
                : (status: 200, body: #"{"provider_ref":"ref-1"}"#, delay: .zero)
        }
        let server = try await TestServer.start(
            label: "provider",
            config: """
                [channel.sms]
                driver = "webhook"
                url = "\(sms.baseURL)/sms"

                [channel.email]
                driver = "webhook"
                url = "\(email.baseURL)/email"
                secret = "s3cret"

                [[policy]]
                name = "default"
                steps = [ { channel = "sms", timeout = "10s" }, { channel = "email", timeout = "10s" } ]
                """
        )
        defer {
            Task {
                await server.stop()
                await sms.stop()
                await email.stop()
            }
        }

        _ = try await redisCLI(server.port, ["ISSUE", "w1", "sms:+15551234567", "email:user@example.com"])
        let status = try await eventually(timeout: .seconds(20), "the e-mail step sent") { () -> [String: String]? in
            let s = pairs(try await redisCLI(server.port, ["STATUS", "w1"]))
            return s["channel"] == "email" && s["status"] == "sent" ? s : nil
        }
        #expect(status["step"] == "2")
        let history = try await redisCLI(server.port, ["HISTORY", "w1"])
        let types = stride(from: 0, to: history.count, by: 10).map { history[$0 + 3] }
        #expect(types == ["issued", "delivery_failed", "escalated", "sent"])
        #expect(history.contains { $0.contains(#""reason":"failure""#) })
        #expect(history.contains { $0.contains(#""provider_ref":"ref-1""#) })

        // The 4xx was not retried; the 5xx were, always with the same idempotency key.
        #expect(sms.requests.count == 1)
        #expect(email.requests.count == 3)
        let keys = Set(email.requests.compactMap { $0.header("Idempotency-Key") })
        #expect(keys.count == 1)
        #expect(email.requests.allSatisfy { $0.header("X-OTPD-Signature")?.hasPrefix("sha256=") == true })
        #expect(sms.requests[0].json?["to"] as? String == "+15551234567")
        #expect(email.requests[0].json?["subject"] as? String != nil)
    }
}

extension ProviderFallbackTests {
    /// The e-mail provider is slow, so the SMS receipt arrives while the escalation's message is in flight: the
    /// escalation is withdrawn (the session returns to SMS, delivered) and the e-mail already under way is still
    /// recorded as sent. (Withdrawal before the hand-off began, where nothing is sent, is a domain test.)
    @Test func aLateReceiptWithdrawsTheEscalation() async throws {
        let email = try await FakeProvider.start { _ in (status: 200, body: "{}", delay: .seconds(2)) }
        let server = try await TestServer.start(
            label: "withdraw",
            config: """
                [channel.email]
                driver = "webhook"
                url = "\(email.baseURL)/email"

                [[policy]]
                name = "default"
                steps = [ { channel = "sms", timeout = "300ms" }, { channel = "email", timeout = "10s" } ]
                """
        )
        defer {
            Task {
                await server.stop()
                await email.stop()
            }
        }
        _ = try await redisCLI(server.port, ["ISSUE", "late1", "sms:+15551234567", "email:user@example.com"])
        _ = try await eventually(timeout: .seconds(10), "the escalation to e-mail") {
            email.requests.isEmpty ? nil : true
        }
        #expect(try await redisCLI(server.port, ["RECEIPT", "late1", "sms", "delivered"]) == ["OK"])
        let s = pairs(try await redisCLI(server.port, ["STATUS", "late1"]))
        #expect(s["channel"] == "sms")
        #expect(s["status"] == "delivered")
        let types = try await eventually(timeout: .seconds(10), "the e-mail hand-off recorded") { () -> [String]? in
            let t = try eventTypes(server.databaseURL)["default/late1"] ?? []
            return t.last == "sent" && t.contains("escalation_withdrawn") ? t : nil
        }
        #expect(types == ["issued", "sent", "timed_out", "escalated", "delivered", "escalation_withdrawn", "sent"])
        #expect(pairs(try await redisCLI(server.port, ["STATUS", "late1"]))["channel"] == "sms")
    }
}

/// Each provider driver's transient failures are retried `retries` times, then the step fails over.
@Suite(.heavy) struct DriverRetryTests {
    @Test func twilioAnswering503IsTriedRetriesTimesThenTheSessionFallsBackToVoice() async throws {
        let twilio = try await FakeProvider.start { r in
            r.path.hasSuffix("/Calls.json")
                ? (201, #"{"sid":"CA00000000000000000000000000000009"}"#, .zero)
                : (503, #"{"code":20500,"message":"Internal Server Error","status":503}"#, .zero)
        }
        let sid = "AC" + String(repeating: "1", count: 32)
        let channel = { (name: String) in
            """
            [channel.\(name)]
            driver = "twilio"
            account_sid = "\(sid)"
            auth_token = "t"
            from = "+15017122661"
            base_url = "\(twilio.baseURL)"
            retries = 2

            """
        }
        let server = try await TestServer.start(
            label: "twilio_retry",
            config: channel("sms") + channel("voice") + """
                [[policy]]
                name = "default"
                steps = [ { channel = "sms", timeout = "30s" }, { channel = "voice", timeout = "30s" } ]
                """
        )
        defer {
            Task {
                await server.stop()
                await twilio.stop()
            }
        }
        _ = try await redisCLI(server.port, ["ISSUE", "tr1", "sms:+15551234567", "voice:+15551234567"])
        let types = try await eventually(timeout: .seconds(20), "the call placed") { () -> [String]? in
            let t = try await events(server, "tr1").map(\.type)
            return t.last == "sent" && t.contains("escalated") ? t : nil
        }
        #expect(types == ["issued", "delivery_failed", "escalated", "sent"])
        let failed = try #require(try await events(server, "tr1").first { $0.type == "delivery_failed" })
        #expect(failed.data["reason"] as? String == "Twilio error 20500, HTTP 503")
        #expect(failed.data["permanent"] as? Bool == false)
        let paths = twilio.requests.map { $0.path.hasSuffix("Messages.json") ? "sms" : "call" }
        #expect(paths == ["sms", "sms", "call"])  // two tries of the SMS, then the call at once
    }
}

/// A transient failure is retried while tries are left and the step's time lasts, whichever ends first.
@Suite(.heavy) struct StepTimeBoundsRetriesTests {
    @Test func aProviderThatKeepsFailingIsGivenUpWhenTheStepsTimeIsUpNotAfterEveryTry() async throws {
        let gateway = try await FakeProvider.start { _ in (503, "busy", .milliseconds(150)) }
        let server = try await TestServer.start(
            label: "step_time",
            config: """
                [channel.sms]
                driver = "webhook"
                url = "\(gateway.baseURL)/sms"
                retries = 10

                [[policy]]
                name = "default"
                steps = [ { channel = "sms", timeout = "1500ms" }, { channel = "email", timeout = "60s" } ]
                """
        )
        defer {
            Task {
                await server.stop()
                await gateway.stop()
            }
        }
        _ = try await redisCLI(server.port, ["ISSUE", "st1", "sms:+15551234567", "email:a@example.com"])
        let types = try await eventually(timeout: .seconds(20), "the fallback to e-mail") { () -> [String]? in
            let t = try await events(server, "st1").map(\.type)
            return t.contains("escalated") ? t : nil
        }
        #expect(Array(types.prefix(3)) == ["issued", "delivery_failed", "escalated"])
        // 10 tries with backoff (0.2 + 0.4 + ... s) and 150 ms answers would take minutes; 1.5 s allows a few.
        let tries = gateway.requests.count
        // (On a loaded machine the step's time may end after the first try: the bound that matters is the upper.)
        #expect(tries >= 1 && tries < 10, "\(tries) tries")
    }
}
