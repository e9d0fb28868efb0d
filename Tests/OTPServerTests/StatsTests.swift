import Foundation
import OTPTesting
import PostgresTesting
import Testing

/// STATS over RESP: figures from the projector's read models, per tenant, for the analyst role only.
@Suite(.heavy) struct StatsTests {
    @Test func redisCLIStatsShowsTheTourInEveryGrouping() async throws {
        let server = try await TestServer.start(label: "stats_tour")
        defer { Task { await server.stop() } }
        _ = try await redisCLI(server.port, ["ISSUE", "t1", "sms:+447700900123", "email:t1@example.com"])
        try await server.waitUntilSent("t1")
        #expect(try await redisCLI(server.port, ["RECEIPT", "t1", "sms", "delivered"]) == ["OK"])
        let code = try await server.code(session: "t1")
        #expect(pairs(try await redisCLI(server.port, ["VERIFY", "t1", code]))["result"] == "verified")
        _ = try await redisCLI(server.port, ["ISSUE", "t2", "email:t2@example.com"])
        try await server.waitUntilSent("t2")

        // The projector applies them within moments; STATS answers from its tables.
        let sms = try await eventually("STATS to count the verification") { () -> [String: String]? in
            let lines = try await redisCLI(server.port, ["STATS"])
            let g = groups(lines)
            return g["sms"]?["verified"] == "1" && g["email"]?["sent"] == "1" ? g["sms"] : nil
        }
        #expect(sms["issued"] == "1")
        #expect(sms["sent"] == "1")
        #expect(sms["delivered"] == "1")
        #expect(sms["delivery_rate"] == "1.0000")
        #expect(sms["conversion_rate"] == "1.0000")
        #expect(Int(sms["p50_verify_ms"] ?? "") ?? -1 > 0)
        let byCountry = groups(try await redisCLI(server.port, ["STATS", "SINCE", "600", "BY", "country"]))
        #expect(byCountry["+44"]?["issued"] == "1")
        #expect(byCountry["none"]?["issued"] == "1")
        let byPolicy = groups(try await redisCLI(server.port, ["stats", "by", "POLICY"]))
        #expect(byPolicy["default"]?["issued"] == "2")
        // Keys in PROTOCOL.md's order.
        let first = try await redisCLI(server.port, ["STATS", "BY", "channel"])
        #expect(
            stride(from: 0, to: 30, by: 2).map { first[$0] } == [
                "group", "issued", "sent", "delivered", "failed", "escalated", "verified", "expired", "delivery_rate",
                "conversion_rate", "p50_delivery_ms", "p95_delivery_ms", "p50_verify_ms", "cost",
                "cost_per_verification",
            ]
        )
        // Nothing is priced here: cost and cost_per_verification are null (an empty line in redis-cli's printout).
        #expect(first[27] == "" && first[29] == "")
        for bad in [
            ["SINCE", "0"], ["SINCE", "x"], ["BY", "carrier"], ["SINCE", "5", "SINCE", "6"], ["LIMIT", "1"],
        ] {
            let reply = try await redisCLI(server.port, ["STATS"] + bad)
            #expect(reply.first?.hasPrefix("BADARG") == true, "STATS \(bad): \(reply)")
        }
    }

    @Test func analystsSeeTheirOwnTenantAndOtherRolesAreRefused() async throws {
        let config = """
            [[tenant]]
            name = "acme"
            token = "acme-service"
            roles = ["service"]

            [[tenant]]
            name = "acme"
            token = "acme-analyst"
            roles = ["analyst"]

            [[tenant]]
            name = "globex"
            token = "globex-all"
            roles = ["service", "analyst"]
            """
        let server = try await TestServer.start(label: "stats_tenants", config: config)
        defer { Task { await server.stop() } }
        let out = try await python(
            server.port,
            """
            import os, time, redis
            port = int(os.environ['PORT'])
            def client(tenant, token, protocol=2):
                return redis.Redis(port=port, username=tenant, password=token, decode_responses=True,
                                   protocol=protocol)
            acme = client('acme', 'acme-service')
            for i in range(3):
                acme.execute_command('ISSUE', 'a%d' % i, 'email:a%d@example.com' % i)
            client('globex', 'globex-all').execute_command('ISSUE', 'g1', 'email:g1@example.com')
            try:
                acme.execute_command('STATS')
            except redis.exceptions.ResponseError as e:
                print('service:', type(e).__name__, str(e))
            analyst = client('acme', 'acme-analyst', protocol=3)
            deadline = time.time() + 10
            while time.time() < deadline:
                stats = analyst.execute_command('STATS')
                if stats and stats[0]['issued'] == 3:
                    break
                time.sleep(0.05)
            print('acme:', [(g['group'], g['issued']) for g in stats])
            globex = client('globex', 'globex-all', protocol=3)
            deadline = time.time() + 10
            while time.time() < deadline:  # the projector may apply globex's ISSUE in a later batch
                g = globex.execute_command('STATS')
                if g:
                    break
                time.sleep(0.05)
            print('globex:', [(x['group'], x['issued']) for x in g])
            """
        )
        #expect(
            out.split(separator: "\n").map(String.init) == [
                "service: NoPermissionError this credential may not run STATS", "acme: [('email', 3)]",
                "globex: [('email', 1)]",
            ]
        )
    }
}

/// redis-cli's printout of STATS (an array of flat maps of 15 pairs) by group.
func groups(_ lines: [String]) -> [String: [String: String]] {
    var out: [String: [String: String]] = [:]
    var i = 0
    while i + 30 <= lines.count {
        let m = pairs(Array(lines[i..<i + 30]))
        if let g = m["group"] { out[g] = m }
        i += 30
    }
    return out
}
