import EventStore
import Foundation
import Logging
import OTPDomain
import OTPServer
import OTPService
import OTPTesting
import Postgres
import PostgresTesting
import Testing

/// Pacing and abuse limits, each answered `-RATELIMITED retry_after=<s>`.
@Suite(.heavy) struct PacingTests {
    func start(_ label: String, _ limits: String) async throws -> TestServer {
        try await TestServer.start(label: label, config: "[limits]\n" + limits)
    }

    @Test func sessionsPerDestinationPerDay() async throws {
        let server = try await start("pace_sessions", "sessions_per_destination_day = 2\nmin_gap_per_channel = \"0s\"")
        defer { Task { await server.stop() } }
        #expect(pairs(try await redisCLI(server.port, ["ISSUE", "p1", "email:a@example.com"]))["session"] == "p1")
        #expect(pairs(try await redisCLI(server.port, ["ISSUE", "p2", "email:a@example.com"]))["session"] == "p2")
        let third = try await redisCLI(server.port, ["ISSUE", "p3", "email:a@example.com"])
        #expect(third.first?.hasPrefix("RATELIMITED retry_after=") == true, "\(third)")
        // Nothing was recorded for the refused session, and another address is not limited.
        #expect(try await redisCLI(server.port, ["STATUS", "p3"]).first?.hasPrefix("NOTFOUND") == true)
        #expect(pairs(try await redisCLI(server.port, ["ISSUE", "p4", "email:b@example.com"]))["session"] == "p4")
    }

    @Test func minimumGapPerChannelAndSendsPerTenMinutes() async throws {
        let server = try await start("pace_gap", "sends_per_destination_10m = 2\nmin_gap_per_channel = \"30s\"")
        defer { Task { await server.stop() } }
        _ = try await redisCLI(server.port, ["ISSUE", "g1", "sms:+15551234567", "voice:+15551234567"])
        // The same phone on the same channel again within 30 s.
        let again = try await redisCLI(server.port, ["ISSUE", "g2", "sms:+15551234567"])
        #expect(
            again.first.map {
                $0.hasPrefix("RATELIMITED retry_after=") && Int($0.dropFirst(24)).map { (1...30).contains($0) } == true
            } == true,
            "\(again)"
        )
        // RESEND moves to voice: another channel, same phone: the second send in ten minutes is allowed...
        #expect(pairs(try await redisCLI(server.port, ["RESEND", "g1"]))["channel"] == "voice")
        // ...and a third is not.
        let third = try await redisCLI(server.port, ["ISSUE", "g3", "voice:+15551234567", "sms:+15551234567"])
        #expect(third.first?.hasPrefix("RATELIMITED") == true, "\(third)")
    }

    @Test func tenantDailyBudget() async throws {
        let server = try await start("pace_tenant", "tenant_sends_per_day = 2")
        defer { Task { await server.stop() } }
        _ = try await redisCLI(server.port, ["ISSUE", "t1", "email:a@example.com"])
        _ = try await redisCLI(server.port, ["ISSUE", "t2", "email:b@example.com"])
        #expect(
            try await redisCLI(server.port, ["ISSUE", "t3", "email:c@example.com"]).first?.hasPrefix("RATELIMITED")
                == true
        )
    }

    @Test func aCountryOverItsCeilingLosesSMSAndVoice() async throws {
        let server = try await start("pace_prefix", "prefix_sends_per_minute = 1")
        defer { Task { await server.stop() } }
        #expect(pairs(try await redisCLI(server.port, ["ISSUE", "c1", "sms:+447700900001"]))["steps"] == "sms")
        let fallback = pairs(
            try await redisCLI(server.port, ["ISSUE", "c2", "sms:+447700900002", "email:a@example.com"])
        )
        #expect(fallback["steps"] == "email")
        #expect(
            try await redisCLI(server.port, ["ISSUE", "c3", "sms:+447700900003"]).first?.hasPrefix("RATELIMITED")
                == true
        )
        // Another country is not affected.
        #expect(pairs(try await redisCLI(server.port, ["ISSUE", "c4", "sms:+33612345678"]))["steps"] == "sms")
        // Repeating the ISSUE of a session that exists answers it as it is: the ceiling limits new sessions only.
        let repeated = pairs(try await redisCLI(server.port, ["ISSUE", "c1", "sms:+447700900001"]))
        #expect(repeated["session"] == "c1" && repeated["steps"] == "sms", "\(repeated)")
    }

    @Test func consecutiveFailuresAcrossSessionsBlockTheDestination() async throws {
        let server = try await start(
            "pace_fail",
            "consecutive_failures_per_destination = 3\nmin_gap_per_channel = \"0s\""
        )
        defer { Task { await server.stop() } }
        _ = try await redisCLI(server.port, ["ISSUE", "b1", "email:a@example.com", "MAXATTEMPTS", "2"])
        let code = try await server.code(session: "b1")
        let wrong = code == "000000" ? "111111" : "000000"
        _ = try await redisCLI(server.port, ["VERIFY", "b1", wrong])
        _ = try await redisCLI(server.port, ["VERIFY", "b1", wrong])  // locked
        _ = try await redisCLI(server.port, ["ISSUE", "b2", "email:a@example.com"])
        _ = try await redisCLI(server.port, ["VERIFY", "b2", wrong])  // the third in a row, across sessions
        let refused = try await redisCLI(server.port, ["ISSUE", "b3", "email:a@example.com"])
        #expect(refused.first?.hasPrefix("RATELIMITED") == true, "\(refused)")
        // An operator lifts the block (what `otpctl unblock` runs); the destination may start sessions again.
        let cleared = try await server.pool.withConnection { conn in
            try PacingAdmin.clearFailures(
                address: "a@example.com",
                tenant: "default",
                secrets: Secrets(secret: testSecret),
                on: conn
            )
        }
        #expect(cleared == 3)
        #expect(pairs(try await redisCLI(server.port, ["ISSUE", "b4", "email:a@example.com"]))["session"] == "b4")
        let again = try await server.pool.withConnection { conn in
            try PacingAdmin.clearFailures(
                address: "a@example.com",
                tenant: "default",
                secrets: Secrets(secret: testSecret),
                on: conn
            )
        }
        #expect(again == nil)
        // A success resets the count.
        let other = try await TestServer.start(
            label: "pace_fail2",
            config: "[limits]\nconsecutive_failures_per_destination = 2\nmin_gap_per_channel = \"0s\""
        )
        defer { Task { await other.stop() } }
        _ = try await redisCLI(other.port, ["ISSUE", "r1", "email:z@example.com"])
        let c = try await other.code(session: "r1")
        let w = c == "000000" ? "111111" : "000000"
        _ = try await redisCLI(other.port, ["VERIFY", "r1", w])
        _ = try await redisCLI(other.port, ["VERIFY", "r1", c])
        _ = try await redisCLI(other.port, ["ISSUE", "r2", "email:z@example.com"])
        _ = try await redisCLI(other.port, ["VERIFY", "r2", w])
        #expect(pairs(try await redisCLI(other.port, ["ISSUE", "r3", "email:z@example.com"]))["session"] == "r3")
    }

    /// ISSUE straight through the command path, as a tenant's service would after AUTH.
    func issue(_ server: TestServer, tenant: String, session: String, _ destination: String) async -> String {
        let request = IssueRequest(
            session: session,
            destinations: [Destination(channel: .email, address: destination)],
            fingerprint: session
        )
        do {
            _ = try await server.sessions.execute(.issue(request), on: StreamID(tenant: tenant, session: session))
            return "ok"
        } catch let r as Rejection {
            if case .rateLimited = r { return "ratelimited" }
            return "\(r)"
        } catch {
            return "\(error)"
        }
    }

    @Test func concurrentIssuesToOneDestinationPassItsLimitOnlyAsOftenAsItAllows() async throws {
        // Enough connections that the 40 race on the destination's lock, not for the pool (a loaded machine made
        // the last ones wait past the pool's 5 s on 4 connections).
        let server = try await TestServer.start(
            label: "pace_race",
            config: "[limits]\nsessions_per_destination_day = 3\nmin_gap_per_channel = \"0s\"",
            poolSize: 12
        )
        defer { Task { await server.stop() } }
        let answers = await withTaskGroup(of: String.self) { group in
            for i in 0..<40 {
                group.addTask { await self.issue(server, tenant: "default", session: "r\(i)", "a@x.example") }
            }
            return await group.reduce(into: [String: Int]()) { $0[$1, default: 0] += 1 }
        }
        #expect(answers == ["ok": 3, "ratelimited": 37])
    }

    /// A command that waits too long for its destination's turn (another transaction holds the destination)
    /// is told to retry in a second; it is not told that the database is down.
    @Test func aCommandThatCannotGetItsDestinationsTurnIsAskedToRetry() async throws {
        let server = try await start("pace_contended", "min_gap_per_channel = \"0s\"")
        defer { Task { await server.stop() } }
        #expect(await issue(server, tenant: "default", session: "c1", "busy@x.example") == "ok")
        let holder = try PGConnection(url: server.databaseURL)
        defer { holder.close() }
        try holder.query("SELECT pg_advisory_lock(hashtextextended(destination_key, 0)) FROM session_starts")
        let reply = try await redisCLI(server.port, ["ISSUE", "c2", "email:busy@x.example"])
        #expect(reply.first == "RATELIMITED retry_after=1", "\(reply)")
        try holder.query("SELECT pg_advisory_unlock_all()")
        #expect(await issue(server, tenant: "default", session: "c3", "busy@x.example") == "ok")
    }

    @Test func oneTenantsTrafficNeitherCountsNorBlocksAtAnother() async throws {
        let server = try await start("pace_tenants", "sessions_per_destination_day = 1")
        defer { Task { await server.stop() } }
        #expect(await issue(server, tenant: "acme", session: "a1", "p@x.example") == "ok")
        #expect(await issue(server, tenant: "acme", session: "a2", "p@x.example") == "ratelimited")
        #expect(await issue(server, tenant: "globex", session: "g1", "p@x.example") == "ok")
        let keys = try await server.pool.withConnection { conn in
            try conn.query("SELECT count(DISTINCT destination_key)::bigint FROM session_starts").rows[0]
                .decode(0, as: Int.self)
        }
        #expect(keys == 2)  // one person, two tenants: two keys that cannot be linked without the secret
    }

    /// The janitor deletes what no window reaches (older than a day; tenant buckets an hour more) and keeps
    /// the rest, in batches.
    @Test func theJanitorRemovesOnlyExpiredPacingRows() async throws {
        let server = try await start("pace_janitor", "")
        defer { Task { await server.stop() } }
        _ = try await redisCLI(server.port, ["ISSUE", "j1", "sms:+15551230000", "email:j@example.com"])
        let day: Int64 = 86_400_000
        try await server.pool.withConnection { conn in
            let now = try EventStore.now(on: conn)
            for i in 0..<5 {
                let old = now - day - Int64(i + 1) * 60_000
                try conn.query("INSERT INTO sends (destination_key, channel, at_ms) VALUES ('old', 'sms', \(old))")
                try conn.query("INSERT INTO session_starts (destination_key, at_ms) VALUES ('old', \(old))")
                try conn.query(
                    """
                    INSERT INTO pacing_counts (scope, bucket_ms, shard, n) VALUES ('tenant:old', \(old - 2 * 3_600_000), \(i), 1)
                    """
                )
            }
            // Inside the tenant window's reach (a day and one bucket): kept.
            try conn.query(
                "INSERT INTO pacing_counts (scope, bucket_ms, shard, n) VALUES ('tenant:edge', \(now - day - 1_800_000), 0, 1)"
            )
        }
        let removed = try await Janitor(
            pool: server.pool,
            pacing: server.app.pacing,
            logger: Logger(label: "test"),
            batch: 2
        ).sweep()
        #expect(removed == 15)
        let left = try await server.pool.withConnection { conn in
            try ["sends", "session_starts", "pacing_counts"].map { table in
                try conn.query("SELECT count(*) FROM \(unescaped: table)").rows[0].decode(0, as: Int.self)
            }
        }
        // What the ISSUE recorded stays: one send and two session starts; its counters (country and tenant)
        // and the edge bucket.
        #expect(left == [1, 2, 3])
    }
}
