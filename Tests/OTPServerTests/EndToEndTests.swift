import Foundation
import OTPService
import OTPTesting
import Postgres
import PostgresTesting
import Testing

/// The whole product through real clients: redis-cli, redis-py and raw sockets against the real server.
@Suite(.serialized, .heavy) struct EndToEndTests {
    @Test func redisCLIDrivesTheLifecycleWithTheCodeFromTheLog() async throws {
        let server = try await TestServer.start(
            label: "cli",
            config: "app_name = \"AcmeApp\"\napp_domain = \"acme.example\""
        )
        defer { Task { await server.stop() } }
        let issued = pairs(try await redisCLI(server.port, ["ISSUE", "s1", "sms:+15551234567", "email:a@example.com"]))
        #expect(issued["session"] == "s1")
        #expect(issued["status"] == "pending")
        #expect(issued["channel"] == "sms")
        #expect(issued["step"] == "1")
        #expect(issued["steps"] == "sms,email")
        #expect(issued["policy"] == "default")

        let code = try await server.code(session: "s1")
        #expect(code.count == 6)
        #expect(server.log.all.contains("  | @acme.example #\(code)"))
        let sent = try await eventually("status sent") {
            let s = pairs(try await redisCLI(server.port, ["STATUS", "s1"]))
            return s["status"] == "sent" ? s : nil
        }
        #expect(sent["sent_at"] != "")
        #expect(try await redisCLI(server.port, ["RECEIPT", "s1", "sms", "delivered"]) == ["OK"])
        #expect(pairs(try await redisCLI(server.port, ["STATUS", "s1"]))["status"] == "delivered")

        let verified = pairs(try await redisCLI(server.port, ["VERIFY", "s1", code]))
        #expect(verified["result"] == "verified")
        #expect(verified["status"] == "verified")
        let again = pairs(try await redisCLI(server.port, ["VERIFY", "s1", code]))
        #expect(again["result"] == "already_verified")

        let status = pairs(try await redisCLI(server.port, ["STATUS", "s1"]))
        #expect(status["status"] == "verified")
        #expect(status["version"] == "4")
        #expect(status["verified_at"] != "")

        let history = try await redisCLI(server.port, ["HISTORY", "s1"])
        let types = stride(from: 0, to: history.count, by: 10).map { history[$0 + 3] }
        #expect(types == ["issued", "sent", "delivered", "verified"])
        #expect(!history.joined().contains(code))
        #expect(!history.joined().contains("+15551234567"))
        #expect(!history.joined().contains("a@example.com"))

        let replay = pairs(try await redisCLI(server.port, ["REPLAY", "s1"]))
        #expect(replay["chain"] == "ok")
        #expect(replay["matches"] == "1")
        #expect(replay["events"] == "4")
    }

    @Test func redisPyDrivesTheLifecycleInRESP2AndRESP3() async throws {
        let server = try await TestServer.start(label: "py")
        defer { Task { await server.stop() } }
        let out = try await python(
            server.port,
            """
            import os, redis
            r = redis.Redis(port=int(os.environ['PORT']), decode_responses=True)
            print(r.execute_command('ISSUE', 'py1', 'email:user@example.com', 'TTL', '120', 'DIGITS', '8'))
            """
        )
        #expect(out.contains("'session', 'py1'") || out.contains("'py1'"))
        let code = try await server.code(session: "py1")
        #expect(code.count == 8)
        try await server.waitUntilSent("py1")
        let out2 = try await python(
            server.port,
            """
            import os, redis
            r = redis.Redis(port=int(os.environ['PORT']), decode_responses=True, protocol=3)
            print(r.execute_command('HELLO', '3'))
            v = r.execute_command('VERIFY', 'py1', '00000000')
            print(v['result'], v['attempts_left'])
            v = r.execute_command('VERIFY', 'py1', os.environ['CODE'])
            print(v['result'], v['status'])
            s = r.execute_command('STATUS', 'py1')
            print(s['status'], s['version'], s['delivered_at'])
            h = r.execute_command('HISTORY', 'py1')
            print(','.join(e['type'] for e in h))
            """,
            env: ["CODE": code]
        )
        let lines = out2.split(separator: "\n").map(String.init)
        #expect(lines.count == 5)
        #expect(
            lines[0].contains("'server': 'otpd'") && lines[0].contains("'proto': 3")
                && lines[0].contains("'tenant': 'default'")
        )
        #expect(lines[1] == "mismatch 4")
        #expect(lines[2] == "verified verified")
        #expect(lines[3].hasPrefix("verified "))
        #expect(lines[3].hasSuffix(" None"))
        #expect(lines[4] == "issued,sent,verification_failed,verified")
    }

    @Test func wrongCodesLockTheSessionAndTheRightCodeIsThenRefused() async throws {
        let server = try await TestServer.start(label: "lock")
        defer { Task { await server.stop() } }
        _ = try await redisCLI(server.port, ["ISSUE", "l1", "sms:+15551234567", "MAXATTEMPTS", "3"])
        let code = try await server.code(session: "l1")
        let wrong = code == "000000" ? "111111" : "000000"
        var results: [String] = []
        for _ in 0..<3 {
            results.append(pairs(try await redisCLI(server.port, ["VERIFY", "l1", wrong]))["result"] ?? "")
        }
        #expect(results == ["mismatch", "mismatch", "locked"])
        let right = pairs(try await redisCLI(server.port, ["VERIFY", "l1", code]))
        #expect(right["result"] == "locked")
        #expect(right["attempts_left"] == "0")
        #expect(pairs(try await redisCLI(server.port, ["RESEND", "l1"]))["status"] == "locked")
    }

    @Test func issueIsIdempotentAndConflictsOnOtherArguments() async throws {
        let server = try await TestServer.start(label: "idem")
        defer { Task { await server.stop() } }
        let a = try await redisCLI(server.port, ["ISSUE", "i1", "sms:+15551234567", "TTL", "300"])
        let b = try await redisCLI(server.port, ["ISSUE", "i1", "sms:+15551234567", "ttl", "300"])
        #expect(pairs(a)["expires_at"] == pairs(b)["expires_at"])
        let c = try await redisCLI(server.port, ["ISSUE", "i1", "sms:+15551234568", "TTL", "300"])
        #expect(c.first?.hasPrefix("CONFLICT") == true)
        _ = try await server.code(session: "i1")
        let history = try await redisCLI(server.port, ["HISTORY", "i1"])
        let types = stride(from: 0, to: history.count, by: 10).map { history[$0 + 3] }
        #expect(types.filter { $0 == "issued" }.count == 1)
        #expect(server.log.codes(session: "i1").count == 1)
    }

    @Test func resendMovesToTheNextChannelAndFailedReceiptEscalates() async throws {
        let server = try await TestServer.start(label: "resend")
        defer { Task { await server.stop() } }
        _ = try await redisCLI(
            server.port,
            ["ISSUE", "r1", "sms:+15551234567", "email:a@example.com", "voice:+15551234567"]
        )
        let first = try await server.code(session: "r1")
        let resent = pairs(try await redisCLI(server.port, ["RESEND", "r1"]))
        #expect(resent["channel"] == "email")
        #expect(resent["step"] == "2")
        let codes = try await eventually("a second message") {
            server.log.codes(session: "r1").count == 2 ? server.log.codes(session: "r1") : nil
        }
        #expect(codes == [first, first])  // one code per session, on every channel
        _ = try await eventually("email sent") {
            pairs(try await redisCLI(server.port, ["STATUS", "r1"]))["status"] == "sent" ? true : nil
        }
        #expect(try await redisCLI(server.port, ["RECEIPT", "r1", "email", "failed", "bounced"]) == ["OK"])
        #expect(pairs(try await redisCLI(server.port, ["STATUS", "r1"]))["channel"] == "voice")
        // A late receipt for the first step is recorded but changes no step.
        #expect(try await redisCLI(server.port, ["RECEIPT", "r1", "sms", "delivered"]) == ["OK"])
        let s = pairs(try await redisCLI(server.port, ["STATUS", "r1"]))
        #expect(s["channel"] == "voice")
        let history = try await redisCLI(server.port, ["HISTORY", "r1"])
        #expect(history.contains { $0.contains("\"late\":true") })
    }

    @Test func cancelledSessionSendsAndVerifiesNothing() async throws {
        let server = try await TestServer.start(label: "cancel")
        defer { Task { await server.stop() } }
        _ = try await redisCLI(server.port, ["ISSUE", "c1", "sms:+15551234567", "email:a@example.com"])
        let code = try await server.code(session: "c1")
        #expect(pairs(try await redisCLI(server.port, ["CANCEL", "c1"]))["status"] == "cancelled")
        #expect(pairs(try await redisCLI(server.port, ["VERIFY", "c1", code]))["result"] == "cancelled")
        let resent = pairs(try await redisCLI(server.port, ["RESEND", "c1"]))
        #expect(resent["status"] == "cancelled")
        #expect(resent["attempts_left"] == "5" && resent["version"] != nil)  // the STATUS map, not ISSUE's
    }

    @Test func argumentErrorsAreBadArgs() async throws {
        let server = try await TestServer.start(label: "badarg")
        defer { Task { await server.stop() } }
        let cases: [[String]] = [
            ["ISSUE", "b1", "sms:5551234"], ["ISSUE", "b1", "fax:+15551234567"],
            ["ISSUE", "bad id", "sms:+15551234567"],
            ["ISSUE", "b1", "sms:+15551234567", "TTL", "10"], ["ISSUE", "b1", "sms:+15551234567", "BOGUS", "1"],
            ["ISSUE", "b1", "sms:+15551234567", "TTL"], ["ISSUE", "b1", "sms:+15551234567", "POLICY", "nope"],
            ["RECEIPT", "b1", "fax", "delivered"],
        ]
        for c in cases {
            let out = try await redisCLI(server.port, c)
            #expect(out.first?.hasPrefix("BADARG") == true, "\(c) -> \(out)")
        }
        #expect(try await redisCLI(server.port, ["FLY"]).first?.hasPrefix("ERR unknown command 'FLY'") == true)
        #expect(try await redisCLI(server.port, ["VERIFY", "x"]).first == "ERR wrong number of arguments for 'VERIFY'")
        #expect(try await redisCLI(server.port, ["STATUS", "nope"]).first?.hasPrefix("NOTFOUND") == true)
        #expect(try await redisCLI(server.port, ["PING"]) == ["PONG"])
        #expect(try await redisCLI(server.port, ["PING", "hi"]) == ["hi"])
    }

    @Test func theCodeIsInNoTable() async throws {
        let server = try await TestServer.start(label: "nocode")
        defer { Task { await server.stop() } }
        _ = try await redisCLI(
            server.port,
            ["ISSUE", "n1", "sms:+15551234567", "email:someone@example.com", "DIGITS", "10"]
        )
        let code = try await server.code(session: "n1")
        _ = try await redisCLI(server.port, ["RESEND", "n1"])
        _ = try await eventually("two sends") { server.log.codes(session: "n1").count == 2 ? true : nil }
        _ = try await redisCLI(server.port, ["VERIFY", "n1", code])
        let conn = try PGConnection(url: server.databaseURL)
        defer { conn.close() }
        let tables = try conn.query("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").rows.map {
            try $0.decode(0, as: String.self)
        }
        #expect(tables.contains("events"))
        for t in tables {
            for needle in [code, "+15551234567", "someone@example.com"] {
                let n = try conn.query(
                    PGQuery(
                        unsafeSQL:
                            "SELECT count(*) FROM \(PGQuery.quoteIdentifier(t)) x WHERE x::text LIKE '%' || $1 || '%'",
                        parameters: [needle]
                    )
                ).rows[0].decode(0, as: Int.self)
                #expect(n == 0, "found \(needle == code ? "the code" : "a destination") in table \(t)")
            }
        }
    }
}
