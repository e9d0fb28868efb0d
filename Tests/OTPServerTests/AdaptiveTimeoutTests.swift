import Foundation
import OTPDomain
import OTPTesting
import Postgres
import PostgresTesting
import Testing

/// Adaptive step timeouts against the projector's real histograms.
@Suite(.serialized, .heavy) struct AdaptiveTimeoutTests {
    /// A route that delivers in about 1 s gets a short wait; a route without enough samples waits `max`.
    @Test func theWaitShortensForAFastRouteAndStaysAtMaxWithTooFewSamples() async throws {
        let server = try await TestServer.start(
            label: "adaptive",
            config: """
                [[policy]]
                name = "default"
                steps = [ { channel = "sms", timeout = "auto", min = "500ms", max = "90s" }, { channel = "email" } ]
                """
        )
        defer { Task { await server.stop() } }
        // The route's history: 60 SMS to +1 delivered in 1 s this hour, as the projector counts them; and 10 to +44.
        let bound = LatencyBuckets.upperBound(of: 1_000)
        let conn = try PGConnection(url: server.databaseURL)
        defer { conn.close() }
        for (country, n) in [("+1", 60), ("+44", 10)] {
            try conn.query(
                """
                INSERT INTO projections.delivery_latency (hour, tenant, channel, country, policy, variant, kind, le_ms, count)
                VALUES (date_trunc('hour', now()), 'default', 'sms', \(country), 'default', 0, 'delivery', \(bound), \(n))
                """
            )
        }
        let expected = bound + bound / 4
        // The book is refreshed every 200 ms in tests: wait until it has read the rows.
        var attempt = 0
        let fast = try await eventually("a wait chosen from the +1 route") { () -> String? in
            attempt += 1
            let id = "fast\(attempt)"
            _ = try await redisCLI(server.port, ["ISSUE", id, "sms:+1555123\(1000 + attempt)"])
            let sent = try await Self.sentData(id, server)
            return sent.contains("\"timeout_ms\":\(expected)") ? sent : nil
        }
        #expect(fast.contains("\"timeout_basis\":\"p95 \(bound) ms of 60 in 1 h\""), "\(fast)")
        _ = try await redisCLI(server.port, ["ISSUE", "uk1", "sms:+447700900123"])
        let slow = try await Self.sentData("uk1", server)
        #expect(
            slow.contains(#""timeout_ms":90000"#) && slow.contains(#""timeout_basis":"too few samples""#),
            "\(slow)"
        )
    }

    /// The first `sent` event's data of a session, once the dispatcher has recorded it.
    static func sentData(_ session: String, _ server: TestServer) async throws -> String {
        let conn = try PGConnection(url: server.databaseURL)
        defer { conn.close() }
        return try await eventually("\(session) sent") { () -> String? in
            let rows = try conn.query("SELECT stream_id, type, data::text AS d FROM events ORDER BY version").rows
            return try rows.first {
                try $0.decode("stream_id", as: String.self) == "default/\(session)"
                    && $0.decode("type", as: String.self) == "sent"
            }?.decode("d", as: String.self)
        }
    }
}
