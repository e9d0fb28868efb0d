import Foundation
import OTPTesting
import Postgres
import PostgresTesting
import Testing

let fastPolicy = """
    [[policy]]
    name = "default"
    steps = [
      { channel = "sms",   timeout = "300ms", until = "delivered" },
      { channel = "email", timeout = "300ms", until = "opened" },
      { channel = "voice", timeout = "300ms", until = "verified" },
      { channel = "push",  timeout = "300ms" },
    ]
    """

/// Fallback that drives itself: durable timers, step timeouts, expiry, several instances, restarts.
@Suite(.heavy) struct FallbackTests {
    /// A session whose stored events were edited so they no longer decode cannot move on: its due timer is
    /// parked for an hour instead of being retried every lease (2 s) for ever.
    @Test func aTimerOfAnUnreadableSessionIsParked() async throws {
        let server = try await TestServer.start(
            label: "parked",
            config: """
                [[policy]]
                name = "default"
                steps = [ { channel = "sms", timeout = "1s" }, { channel = "email" } ]
                """
        )
        defer { Task { await server.stop() } }
        _ = try await redisCLI(server.port, ["ISSUE", "k1", "sms:+15551234567", "email:a@example.com"])
        try await server.waitUntilSent("k1")
        let conn = try PGConnection(url: server.databaseURL)
        defer { conn.close() }
        try conn.query(#"UPDATE events SET data = '{"bogus":true}' WHERE stream_id = 'default/k1' AND version = 2"#)
        let parkedFor = try await eventually(timeout: .seconds(30), "the step timer parked") { () -> Int64? in
            let ms = try conn.query(
                """
                SELECT leased_until_ms - (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS ms
                FROM timers WHERE stream_id = 'default/k1' AND name = 'step'
                """
            ).rows.first?.decodeIfPresent("ms", as: Int64.self)
            return ms.flatMap { $0 > 30 * 60_000 ? $0 : nil }
        }
        #expect(parkedFor <= 3_600_000 + 2_000)
        #expect(try eventTypes(server.databaseURL)["default/k1"] == ["issued", "sent"])
    }

    @Test func silentChannelsFallThroughToExhaustedInOrder() async throws {
        let server = try await TestServer.start(label: "fallback", config: fastPolicy)
        defer { Task { await server.stop() } }
        _ = try await redisCLI(
            server.port,
            [
                "ISSUE", "f1", "sms:+15551234567", "email:a@example.com",
                "voice:+15551234567", "push:device-token-123",
            ]
        )
        let status = try await eventually(timeout: .seconds(20), "exhausted") {
            let s = pairs(try await redisCLI(server.port, ["STATUS", "f1"]))
            return s["status"] == "exhausted" ? s : nil
        }
        #expect(status["channel"] == "push")
        let history = try await redisCLI(server.port, ["HISTORY", "f1"])
        let types = stride(from: 0, to: history.count, by: 10).map { history[$0 + 3] }
        #expect(
            types == [
                "issued", "sent", "timed_out", "escalated", "sent", "timed_out", "escalated", "sent", "timed_out",
                "escalated", "sent", "timed_out", "exhausted",
            ]
        )
        // One code on every channel; the code still verifies after the last step.
        let codes = server.log.codes(session: "f1")
        #expect(codes.count == 4)
        #expect(Set(codes).count == 1)
        #expect(pairs(try await redisCLI(server.port, ["VERIFY", "f1", codes[0]]))["result"] == "verified")
    }

    @Test func aDeliveredReceiptStopsTheFallback() async throws {
        let policy = """
            [[policy]]
            name = "default"
            steps = [ { channel = "sms", timeout = "5s", until = "delivered" }, { channel = "email" } ]
            """
        let server = try await TestServer.start(label: "stopfall", config: policy)
        defer { Task { await server.stop() } }
        _ = try await redisCLI(server.port, ["ISSUE", "f2", "sms:+15551234567", "email:a@example.com"])
        try await server.waitUntilSent("f2")
        #expect(try await stepTimers(server.databaseURL, "default/f2") == ["expiry", "step"])
        #expect(try await redisCLI(server.port, ["RECEIPT", "f2", "sms", "delivered"]) == ["OK"])
        // The receipt removed the step's deadline in its own transaction: no escalation can follow.
        #expect(try await stepTimers(server.databaseURL, "default/f2") == ["expiry"])
        let s = pairs(try await redisCLI(server.port, ["STATUS", "f2"]))
        #expect(s["status"] == "delivered")
        #expect(s["channel"] == "sms")
    }

    func stepTimers(_ url: String, _ stream: String) async throws -> [String] {
        let conn = try PGConnection(url: url)
        defer { conn.close() }
        return try conn.query("SELECT name FROM timers WHERE stream_id = \(stream) ORDER BY name").rows
            .map { try $0.decode(0, as: String.self) }
    }

    @Test func theExpiryTimerRecordsExpired() async throws {
        let server = try await TestServer.start(label: "expiry")
        defer { Task { await server.stop() } }
        _ = try await redisCLI(server.port, ["ISSUE", "e1", "push:device-token-123", "TTL", "30"])
        let code = try await server.code(session: "e1")
        let types = try await eventually(timeout: .seconds(45), "expired event") { () -> [String]? in
            let t = try eventTypes(server.databaseURL)["default/e1"] ?? []
            return t.last == "expired" ? t : nil
        }
        #expect(types == ["issued", "sent", "expired"])
        let v = pairs(try await redisCLI(server.port, ["VERIFY", "e1", code]))
        #expect(v["result"] == "expired")
        #expect(v["status"] == "expired")
    }

    @Test func twoInstancesEscalateEachSessionExactlyOnce() async throws {
        let a = try await TestServer.start(label: "multi", config: fastPolicy)
        let b = try await TestServer.start(label: "multi", config: fastPolicy, databaseURL: a.databaseURL)
        defer {
            Task {
                await a.stop()
                await b.stop()
            }
        }
        let n = 200
        let script = """
            import os, redis
            ports = [int(p) for p in os.environ['PORTS'].split(',')]
            clients = [redis.Redis(port=p, protocol=2) for p in ports]
            pipes = [c.pipeline(transaction=False) for c in clients]
            for i in range(\(n)):
                pipes[i % 2].execute_command('ISSUE', 'm%d' % i, 'sms:+1555%07d' % i, 'email:u%d@example.com' % i)
            for p in pipes:
                p.execute()
            print('ok')
            """
        #expect(try await python(a.port, script, env: ["PORTS": "\(a.port),\(b.port)"]).contains("ok"))
        let streams = try await eventually(timeout: .seconds(60), "every session on its last step") {
            () -> [String: [String]]? in
            let all = try eventTypes(a.databaseURL)
            let done = all.values.filter { $0.last == "exhausted" }.count
            return all.count == n && done == n ? all : nil
        }
        // SMS times out and escalates to e-mail, whose own timeout ends the session: one event per deadline.
        for (stream, types) in streams {
            #expect(
                types == ["issued", "sent", "timed_out", "escalated", "sent", "timed_out", "exhausted"],
                "\(stream)"
            )
        }
        // Each step was handed to a driver exactly once, across both instances.
        let sends =
            a.log.all.filter { $0.hasPrefix("[log driver]") }.count
            + b.log.all.filter { $0.hasPrefix("[log driver]") }.count
        #expect(sends == 2 * n)
    }

    @Test func pendingTimersSurviveARestart() async throws {
        let slow = """
            [[policy]]
            name = "default"
            steps = [ { channel = "sms", timeout = "6s" }, { channel = "email" } ]
            """
        // 6 s: the first instance must stop before the step's deadline, also on a loaded machine.
        let first = try await TestServer.start(label: "restart", config: slow)
        _ = try await redisCLI(first.port, ["ISSUE", "k1", "sms:+15551234567", "email:a@example.com"])
        try await first.waitUntilSent("k1")
        await first.stop()
        let conn = try PGConnection(url: first.databaseURL)
        let pending = try conn.query("SELECT name FROM timers WHERE stream_id = 'default/k1' ORDER BY name").rows
            .map { try $0.decode(0, as: String.self) }
        conn.close()
        #expect(pending == ["expiry", "step"])

        let second = try await TestServer.start(label: "restart", config: slow, databaseURL: first.databaseURL)
        defer { Task { await second.stop() } }
        let types = try await eventually(timeout: .seconds(30), "the escalation after restart") { () -> [String]? in
            let t = try eventTypes(second.databaseURL)["default/k1"] ?? []
            return t.filter { $0 == "sent" }.count == 2 ? t : nil
        }
        #expect(types == ["issued", "sent", "timed_out", "escalated", "sent"])
        #expect(second.log.codes(session: "k1").count == 1)  // the new instance sent the e-mail
    }
}
