import EventStore
import Foundation
import OTPService
import OTPTesting
import Postgres
import PostgresTesting
import Testing

/// The auditors' side of otpctl: `replay --all` against the log and a projection, `export` as JSON Lines,
/// `verify --tenant`. (Tamper evidence is in `TamperTests`.)
@Suite(.heavy) struct AuditToolTests {
    /// Sessions through a real server, then the server stopped (so no projector touches the projection while the
    /// test sets its rows): returns the database URL and the secret file.
    func sessions(_ label: String, _ ids: [String]) async throws -> (url: String, secret: String) {
        let server = try await TestServer.start(label: label, config: "[limits]\nmin_gap_per_channel = \"0s\"")
        for (i, s) in ids.enumerated() {
            _ = try await redisCLI(server.port, ["ISSUE", s, "email:r\(i)@example.com"])
            try await server.waitUntilSent(s)
        }
        _ = try await redisCLI(server.port, ["CANCEL", ids[0]])
        // The projector has applied every stream's last event before the server stops.
        _ = try await eventually("the projector to catch up") { () -> Bool? in
            let conn = try PGConnection(url: server.databaseURL)
            defer { conn.close() }
            let behind = try conn.query(
                """
                SELECT count(*) FROM (SELECT stream_id, max(version) AS v FROM events GROUP BY stream_id) e
                LEFT JOIN projections.session_view p USING (stream_id) WHERE p.version IS DISTINCT FROM e.v
                """
            ).rows[0].decode(0, as: Int.self)
            return behind == 0 ? true : nil
        }
        await server.stop()
        return (server.databaseURL, try ExecutableTests.secretFile())
    }

    /// `replay --all` folds every stream and checks every chain; with no projection table it says so and passes,
    /// and with a `projections.session_view` it reports a wrong status as a mismatch (exit 1), a row that has not
    /// applied the last version as `behind` and a stream without a row as `missing` (neither a failure).
    @Test func replayAllFoldsEveryStreamAndComparesWithTheProjection() async throws {
        guard let otpctl = ExecutableTests.built("otpctl") else { return }
        let (url, secret) = try await sessions("replayall", ["p1", "p2", "p3", "p4"])
        defer { try? FileManager.default.removeItem(atPath: secret) }
        let replay = [otpctl, "replay", "--all", "--database-url", url, "--secret-file", secret]
        let conn = try PGConnection(url: url)
        defer { conn.close() }
        let events = try conn.query("SELECT count(*) FROM events").rows[0].decode(0, as: Int.self)
        let exists = try conn.query("SELECT to_regclass('projections.session_view') IS NOT NULL").rows[0]
            .decode(0, as: Bool.self)

        let plain = try await run(replay)
        #expect(plain.status == 0, "\(plain.stdout)\(plain.stderr)")
        #expect(plain.stdout.contains("replayed 4 streams, \(events) events"), "\(plain.stdout)")
        #expect(plain.stdout.contains("chains: all ok"))
        // Where the projector has not landed yet there is nothing to compare; where it has, it agrees.
        #expect(
            plain.stdout.contains(exists ? "0 mismatches" : "no projection to compare"),
            "\(plain.stdout)"
        )

        // The projector's own rows, caught up: they agree with the events.
        let agreeing = try await run(replay)
        #expect(agreeing.status == 0, "\(agreeing.stdout)")
        #expect(
            agreeing.stdout.contains("projection: 4 compared, 0 mismatches, 0 behind, 0 missing"),
            "\(agreeing.stdout)"
        )

        try conn.execute(
            """
            UPDATE projections.session_view SET status = 'verified' WHERE stream_id = 'default/p2';
            UPDATE projections.session_view SET status = 'pending', version = version - 1 WHERE stream_id = 'default/p3';
            DELETE FROM projections.session_view WHERE stream_id = 'default/p4';
            """
        )
        let differing = try await run(replay)
        #expect(differing.status == 1)
        #expect(
            differing.stdout.contains(
                "mismatch: default/p2 at version 2: projection says verified at version 2, events say sent"
            ),
            "\(differing.stdout)"
        )
        #expect(!differing.stdout.contains("default/p3") && !differing.stdout.contains("default/p1"))
        #expect(
            differing.stdout.contains("projection: 2 compared, 1 mismatches, 1 behind, 1 missing"),
            "\(differing.stdout)"
        )
        // Another tenant's streams only: none here.
        let other = try await run(replay + ["--tenant", "acme"])
        #expect(other.status == 0)
        #expect(other.stdout.contains("replayed 0 streams, 0 events"), "\(other.stdout)")
    }

    /// `export --since` prints every event of the window as JSON Lines (tenant, session, version, type, at, data
    /// as stored, hash): `--tenant` and `--since` filter, no destination in clear, no code; a bad duration is
    /// refused naming the argument.
    @Test func exportPrintsTheWindowsEventsAsJSONLinesWithoutSecrets() async throws {
        guard let otpctl = ExecutableTests.built("otpctl") else { return }
        let server = try await TestServer.start(label: "export")
        defer { Task { await server.stop() } }
        _ = try await redisCLI(server.port, ["ISSUE", "e1", "email:someone@example.com"])
        _ = try await redisCLI(server.port, ["ISSUE", "e2", "sms:+15557650001"])
        try await server.waitUntilSent("e1")
        try await server.waitUntilSent("e2")
        let codes = [try await server.code(session: "e1"), try await server.code(session: "e2")]
        // Another tenant's stream, two events of it two days old, written as the server writes them.
        let conn = try PGConnection(url: server.databaseURL)
        defer { conn.close() }
        let now = try EventStore.now(on: conn)
        let key = Secrets(secret: testSecret).chainKey
        let old = try EventStore.append(
            [NewEvent(type: "cancelled", data: "{}"), NewEvent(type: "erased", data: "{}")],
            to: "acme/x1",
            expectedVersion: 0,
            headHash: [],
            at: now - 2 * 86_400_000,
            key: key,
            on: conn
        )
        try EventStore.append(
            [NewEvent(type: "expired", data: "{}")],
            to: "acme/x1",
            expectedVersion: 2,
            headHash: old[1].hash,
            at: now,
            key: key,
            on: conn
        )
        let db = ["--database-url", server.databaseURL]
        func lines(_ args: [String]) async throws -> [[String: Any]] {
            let r = try await run([otpctl, "export"] + db + args)
            #expect(r.status == 0, "\(r.stderr)")
            for secret in ["someone@example.com", "+15557650001", "15557650001"] {
                #expect(!r.stdout.contains(secret), "a destination in clear")
            }
            for code in codes {
                #expect(r.stdout.range(of: "(?<![0-9])\(code)(?![0-9])", options: .regularExpression) == nil)
            }
            return try r.stdout.split(separator: "\n").map { line in
                let object = try JSONSerialization.jsonObject(with: Data(line.utf8))
                return try #require(object as? [String: Any], "\(line)")
            }
        }
        let stored = try conn.query("SELECT count(*) FROM events WHERE at_ms >= \(now - 3_600_000)").rows[0]
            .decode(0, as: Int.self)
        let recent = try await lines(["--since", "1h"])
        #expect(recent.count == stored)
        for line in recent {
            #expect(Set(line.keys) == ["tenant", "session", "version", "type", "at", "data", "hash"])
            #expect(line["data"] is [String: Any])
            #expect((line["hash"] as? String)?.count == 64)
        }
        let issued = try #require(
            recent.first { $0["session"] as? String == "e1" && $0["type"] as? String == "issued" }
        )
        #expect(issued["tenant"] as? String == "default" && issued["version"] as? Int == 1)
        #expect(((issued["data"] as? [String: Any])?["destinations"] as? [Any])?.count == 1)  // sealed, not absent
        #expect(recent.filter { $0["tenant"] as? String == "acme" }.map { $0["version"] as? Int } == [3])

        let acme = try await lines(["--since", "3d", "--tenant", "acme"])
        #expect(acme.map { $0["version"] as? Int } == [1, 2, 3])
        #expect(acme.allSatisfy { $0["tenant"] as? String == "acme" && $0["session"] as? String == "x1" })
        #expect(try await lines(["--since", "90m", "--tenant", "nobody"]).isEmpty)
        #expect(try await lines(["--since", "7200s", "--tenant", "default"]).count == stored - 1)

        for bad in ["24", "soon", "-1h", "1w"] {
            let r = try await run([otpctl, "export"] + db + ["--since", bad])
            #expect(r.status != 0)
            #expect(r.stderr.contains("--since"), "\(bad): \(r.stderr)")
        }
    }

    /// `verify --all --tenant T` checks only that tenant's streams.
    @Test func verifyAllWithATenantChecksOnlyItsStreams() async throws {
        guard let otpctl = ExecutableTests.built("otpctl") else { return }
        let url = try await TestDatabase.make(label: "verifytenant")
        let secret = try ExecutableTests.secretFile()
        defer { try? FileManager.default.removeItem(atPath: secret) }
        let conn = try PGConnection(url: url)
        defer { conn.close() }
        _ = try Migrator(directory: repositoryRoot + "/schema").apply(on: conn)
        let key = Secrets(secret: testSecret).chainKey
        for stream in ["acme/a", "acme/b", "zeta/a"] {
            try EventStore.append(
                [NewEvent(type: "cancelled", data: "{}")],
                to: stream,
                expectedVersion: 0,
                headHash: [],
                at: 1,
                key: key,
                on: conn
            )
        }
        try conn.query(#"UPDATE events SET data = '{"x":1}' WHERE stream_id = 'zeta/a'"#)
        let db = ["--database-url", url, "--secret-file", secret]
        let acme = try await run([otpctl, "verify", "--all", "--tenant", "acme"] + db)
        #expect(acme.status == 0, "\(acme.stdout)")
        #expect(acme.stdout.contains("checked 2 streams, 2 events"), "\(acme.stdout)")
        let every = try await run([otpctl, "verify"] + db)
        #expect(every.status == 1)
        #expect(every.stdout.contains("broken: zeta/a at version 1"), "\(every.stdout)")
        let both = try await run([otpctl, "verify", "--all", "s1"] + db)
        #expect(both.status != 0)
    }
}
