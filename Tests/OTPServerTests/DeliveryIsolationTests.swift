import Foundation
import OTPService
import OTPTesting
import Postgres
import PostgresTesting
import Synchronization
import Testing

/// A flag tasks share.
final class Flag: Sendable {
    private let value = Mutex(false)
    var isSet: Bool { value.withLock { $0 } }
    func set() { value.withLock { $0 = true } }
}

/// A message is sent at most once per step, whatever fails after the provider took it, and one provider
/// cannot hold up another channel's messages (issue 7, defects 3 and 4; QUALITY.md R3, R6, R7).
@Suite(.heavy) struct DeliveryIsolationTests {
    /// Every request a provider received, by session.
    static func hits(_ provider: FakeProvider, session: String) -> Int {
        provider.requests.filter { ($0.json?["session"] as? String) == session }.count
    }

    @Test func aHandOffThatCannotBeRecordedIsNeverSentAgainAndTheStepFailsOver() async throws {
        let sms = try await FakeProvider.start { _ in (status: 200, body: "{}", delay: .zero) }
        var fast = Dispatcher.Settings()
        fast.leaseSeconds = 1
        fast.recordTries = 2
        let server = try await TestServer.start(
            label: "fence",
            config: """
                [channel.sms]
                driver = "webhook"
                url = "\(sms.baseURL)/sms"
                timeout = "500ms"

                [[policy]]
                name = "default"
                steps = [ { channel = "sms", timeout = "10s" }, { channel = "email" } ]
                """,
            dispatcher: fast
        )
        defer {
            Task {
                await server.stop()
                await sms.stop()
            }
        }
        // The database refuses to record an SMS hand-off: the provider has the message, otpd cannot say so.
        try await server.pool.withConnection { conn in
            try conn.query(
                """
                CREATE FUNCTION refuse_sms_sent() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                  IF NEW.type = 'sent' AND NEW.data::jsonb->>'channel' = 'sms' THEN
                    RAISE EXCEPTION 'recording refused by the test';
                  END IF;
                  RETURN NEW;
                END $$
                """
            )
            try conn.query(
                "CREATE TRIGGER refuse_sms_sent BEFORE INSERT ON events FOR EACH ROW EXECUTE FUNCTION refuse_sms_sent()"
            )
        }
        _ = try await redisCLI(server.port, ["ISSUE", "f1", "sms:+15551234567", "email:f1@example.com"])
        let status = try await eventually(timeout: .seconds(20), "the e-mail step sent") { () -> [String: String]? in
            let s = pairs(try await redisCLI(server.port, ["STATUS", "f1"]))
            return s["channel"] == "email" && s["status"] == "sent" ? s : nil
        }
        #expect(status["step"] == "2")
        #expect(Self.hits(sms, session: "f1") == 1)  // one provider hit for the SMS step, not one per lease
        let history = try await redisCLI(server.port, ["HISTORY", "f1"])
        let types = stride(from: 0, to: history.count, by: 10).map { history[$0 + 3] }
        #expect(types == ["issued", "delivery_failed", "escalated", "sent"])
        #expect(history.contains { $0.contains("outcome is unknown") })
        try await Task.sleep(for: .seconds(2))  // two more leases: still one hit
        #expect(Self.hits(sms, session: "f1") == 1)
    }

    @Test func aProviderThatHangsHoldsUpOnlyItsOwnChannel() async throws {
        let release = Flag()
        let sms = try await FakeProvider.start { _ in
            // Hangs until released (or 120 s), like a provider that accepts connections and never answers. Its
            // timeout outlasts the test, so no hung call ends and frees its place in the lane meanwhile.
            for _ in 0..<1200 where !release.isSet { try? await Task.sleep(for: .milliseconds(100)) }
            return (status: 200, body: "{}", delay: .zero)
        }
        let server = try await TestServer.start(
            label: "isolate",
            config: """
                [channel.sms]
                driver = "webhook"
                url = "\(sms.baseURL)/sms"
                timeout = "120s"
                """
        )
        defer {
            Task {
                release.set()
                await server.stop()
                await sms.stop()
            }
        }
        for i in 0..<20 { _ = try await redisCLI(server.port, ["ISSUE", "hang\(i)", "sms:+1555123\(4000 + i)"]) }
        _ = try await eventually("the SMS calls in flight") { sms.requests.count >= 16 ? true : nil }
        let started = ContinuousClock.now
        _ = try await redisCLI(server.port, ["ISSUE", "mail1", "email:mail1@example.com"])
        _ = try await server.code(session: "mail1")  // the log driver printed it: the e-mail went out
        #expect(ContinuousClock.now - started < .seconds(5))
        // The SMS lane is full; its other messages wait their turn.
        #expect(sms.requests.count == 16)
    }
}
