import EventStore
import Foundation
import OTPService
import OTPTesting
import Postgres
import PostgresTesting
import Testing

/// S7, tamper evidence: every way of changing the log by SQL is reported by the RESP `REPLAY` command
/// (`chain broken`, `broken_at`) and by `otpctl verify` (`broken: tenant/session at version N`, exit 1) at the
/// exact stream and version: (a) a row's data edited, (b) a row in the middle deleted, (c) a stream's last
/// rows deleted, (d) two versions swapped (their data and type, or their version numbers), and (e) a row edited
/// and the chain re-hashed with SQL's own sha256.
@Suite(.heavy) struct TamperTests {
    /// (a) an event row's data edited by SQL, and (c) a session's deleted last events (wrong codes erased to win
    /// attempts back), reported by REPLAY and by `otpctl verify` at their stream and version.
    @Test func tamperingIsReportedAtTheExactStreamAndVersion() async throws {
        guard let otpctl = ExecutableTests.built("otpctl") else { return }
        let server = try await TestServer.start(label: "tamper")
        defer { Task { await server.stop() } }
        let secret = try ExecutableTests.secretFile()
        defer { try? FileManager.default.removeItem(atPath: secret) }
        func otpctlVerify() async throws -> ProcessResult {
            try await run([otpctl, "verify", "--database-url", server.databaseURL, "--secret-file", secret])
        }
        _ = try await redisCLI(server.port, ["ISSUE", "v1", "email:a@example.com"])
        _ = try await redisCLI(server.port, ["ISSUE", "v2", "email:b@example.com"])
        try await server.waitUntilSent("v1")
        let clean = try await otpctlVerify()
        #expect(clean.status == 0)
        #expect(clean.stdout.contains("checked 2 streams"))
        #expect(clean.stdout.contains("all chains ok"))

        let conn = try PGConnection(url: server.databaseURL)
        try conn.query(#"UPDATE events SET data = '{"step":1}' WHERE stream_id = 'default/v1' AND version = 2"#)
        conn.close()
        let tampered = try await otpctlVerify()
        #expect(tampered.status == 1)
        #expect(tampered.stdout.contains("broken: default/v1 at version 2"))
        #expect(!tampered.stdout.contains("default/v2"))
        let replay = pairs(try await redisCLI(server.port, ["REPLAY", "v1"]))
        #expect(replay["chain"] == "broken")
        #expect(replay["broken_at"] == "2")
        // A command on the edited session says what is wrong, not that the database is down.
        let status = try await redisCLI(server.port, ["STATUS", "v1"])
        #expect(status.first?.hasPrefix("ERR the stored event at version 2 cannot be read") == true, "\(status)")
        let verify = try await redisCLI(server.port, ["VERIFY", "v1", "123456"])
        #expect(verify.first?.hasPrefix("ERR the stored event at version 2") == true, "\(verify)")
        let history = try await run([otpctl, "history", "--database-url", server.databaseURL, "v2"])
        #expect(history.stdout.split(separator: "\n").first?.hasPrefix(#"{"version":1,"type":"issued""#) == true)

        // Two wrong codes on v2, then their rows deleted by SQL: the attempts would come back unnoticed.
        try await server.waitUntilSent("v2")
        _ = try await redisCLI(server.port, ["VERIFY", "v2", "0"])
        _ = try await redisCLI(server.port, ["VERIFY", "v2", "0"])
        let conn2 = try PGConnection(url: server.databaseURL)
        try conn2.query("DELETE FROM events WHERE stream_id = 'default/v2' AND type = 'verification_failed'")
        conn2.close()
        let truncated = pairs(try await redisCLI(server.port, ["REPLAY", "v2"]))
        #expect(truncated["chain"] == "broken")
        #expect(truncated["broken_at"] == "3")
        #expect(try await otpctlVerify().stdout.contains("broken: default/v2 at version 3"))
    }

    /// (b) a deleted middle row, (d) versions swapped (data and type of 2 and 3; version numbers of 3 and 4) and
    /// (e) an edit re-hashed with SQL's sha256, each on its own session beside an untouched one: REPLAY and
    /// `otpctl verify` (every stream, and one session) name each at its first bad version and nothing else.
    @Test func deletedMiddleRowsSwappedVersionsAndSQLReHashesAreReportedAtTheirVersion() async throws {
        guard let otpctl = ExecutableTests.built("otpctl") else { return }
        let server = try await TestServer.start(label: "tamper2", config: "[limits]\nmin_gap_per_channel = \"0s\"")
        defer { Task { await server.stop() } }
        let secret = try ExecutableTests.secretFile()
        defer { try? FileManager.default.removeItem(atPath: secret) }
        let db = ["--database-url", server.databaseURL, "--secret-file", secret]
        // Four events each: issued, sent, verification_failed, verification_failed.
        let sessions = ["clean", "middle", "swapped", "renumbered", "rehashed"]
        for (i, s) in sessions.enumerated() {
            _ = try await redisCLI(server.port, ["ISSUE", s, "email:t\(i)@example.com"])
            try await server.waitUntilSent(s)
            _ = try await redisCLI(server.port, ["VERIFY", s, "0"])
            _ = try await redisCLI(server.port, ["VERIFY", s, "1"])
        }
        #expect(try eventTypes(server.databaseURL)["default/clean"]?.count == 4)
        let before = try await run([otpctl, "verify"] + db)
        #expect(before.status == 0, "\(before.stdout)\(before.stderr)")

        let conn = try PGConnection(url: server.databaseURL)
        // (b) a row in the middle deleted.
        try conn.query("DELETE FROM events WHERE stream_id = 'default/middle' AND version = 2")
        // (d) the data and type of versions 2 and 3 exchanged.
        try conn.query(
            """
            UPDATE events e SET type = o.type, data = o.data FROM events o
            WHERE e.stream_id = 'default/swapped' AND o.stream_id = e.stream_id
              AND ((e.version = 2 AND o.version = 3) OR (e.version = 3 AND o.version = 2))
            """
        )
        // (d) the version numbers of 3 and 4 exchanged, hashes and all (through a free number: the key is unique).
        for (from, to) in [(3, 100), (4, 3), (100, 4)] {
            try conn.query(
                "UPDATE events SET version = \(to) WHERE stream_id = 'default/renumbered' AND version = \(from)"
            )
        }
        // (e) version 3 edited, and it and every later row re-hashed as an unkeyed SHA-256 chain would be.
        try conn.query(
            #"UPDATE events SET data = '{"attempts_left":9}' WHERE stream_id = 'default/rehashed' AND version = 3"#
        )
        for v in 3...4 {
            try conn.query(
                """
                UPDATE events e SET prev_hash = p.hash,
                    hash = sha256(p.hash || convert_to(e.stream_id || E'\\n' || e.version || E'\\n' || e.type || E'\\n'
                        || e.at_ms || E'\\n', 'UTF8') || convert_to(e.data::text, 'UTF8'))
                FROM events p WHERE e.stream_id = 'default/rehashed' AND e.version = \(v)
                  AND p.stream_id = e.stream_id AND p.version = \(v - 1)
                """
            )
        }
        conn.close()
        let expected = ["middle": 2, "swapped": 2, "renumbered": 3, "rehashed": 3]

        let all = try await run([otpctl, "verify", "--all"] + db)
        #expect(all.status == 1)
        let brokenLines = all.stdout.split(separator: "\n").filter { $0.hasPrefix("broken: ") }.map(String.init)
        #expect(
            Set(brokenLines) == Set(expected.map { "broken: default/\($0.key) at version \($0.value)" }),
            "\(all.stdout)"
        )
        #expect(all.stdout.contains("checked 5 streams") && all.stdout.contains("4 broken"), "\(all.stdout)")
        for (session, version) in expected {
            let one = try await run([otpctl, "verify"] + db + ["--tenant", "default", session])
            #expect(one.status == 1, "\(session)")
            #expect(one.stdout.contains("broken: default/\(session) at version \(version)"), "\(one.stdout)")
            let replay = pairs(try await redisCLI(server.port, ["REPLAY", session]))
            #expect(replay["chain"] == "broken", "\(session): \(replay)")
            #expect(replay["broken_at"] == String(version), "\(session): \(replay)")
        }
        let clean = try await run([otpctl, "verify"] + db + ["clean"])
        #expect(clean.status == 0)
        // (Its step may have timed out meanwhile, adding events: the count is not the point, the chain is.)
        #expect(clean.stdout.contains("checked default/clean, "), "\(clean.stdout)")
        #expect(clean.stdout.contains(" events: chain ok"), "\(clean.stdout)")
        #expect(pairs(try await redisCLI(server.port, ["REPLAY", "clean"]))["chain"] == "ok")
    }
}
