import EventStore
import Foundation
import OTPDomain
import OTPService
import OTPTesting
import Postgres
import PostgresTesting
import Testing

/// ERASE (PROTOCOL.md v2): the session's data key is destroyed and `erased` appended; the history stays and
/// verifies, nothing more is sent, VERIFY still answers (issue 7; QUALITY.md S5).
@Suite(.heavy) struct ErasureTests {
    @Test func anErasedSessionKeepsItsVerifiableHistoryAndSendsNothingMore() async throws {
        let server = try await TestServer.start(
            label: "erase",
            config: """
                [[policy]]
                name = "default"
                steps = [ { channel = "sms", timeout = "3s" }, { channel = "email" } ]
                """
        )
        defer { Task { await server.stop() } }
        _ = try await redisCLI(server.port, ["ISSUE", "e1", "sms:+15559870001", "email:erase-me@example.com"])
        let code = try await server.code(session: "e1")
        try await server.waitUntilSent("e1")
        let erased = pairs(try await redisCLI(server.port, ["ERASE", "e1"]))
        #expect(erased["status"] == "sent" && erased["attempts_left"] == "5", "\(erased)")  // the STATUS map
        let version = erased["version"]

        // No destination can be recovered, even with the secret: the key that sealed them is gone.
        let keys = try await server.pool.withConnection { conn in
            try conn.query("SELECT count(*)::bigint FROM session_keys WHERE stream_id = 'default/e1'").rows[0]
                .decode(0, as: Int.self)
        }
        #expect(keys == 0)
        let id = StreamID(tenant: "default", session: "e1")
        let loaded = try await server.sessions.load(id)
        #expect(loaded.state.issued?.destinations == [])
        #expect(try await server.sessions.fold(loaded.records, stream: id).issued?.destinations == [])
        let history = try await redisCLI(server.port, ["HISTORY", "e1"])
        #expect(history.contains("erased"))
        #expect(!history.contains { $0.contains("erase-me") || $0.contains("15559870001") })
        #expect(!history.contains { $0.contains("\"code_seed\"") || $0.contains("\"fingerprint\"") })  // sealed
        let replay = pairs(try await redisCLI(server.port, ["REPLAY", "e1"]))
        #expect(replay["chain"] == "ok" && replay["matches"] == "1", "\(replay)")

        // Nothing more is sent: the SMS step's 3 s timeout passes without a fallback e-mail; RESEND neither.
        let messages = server.log.codes(session: "e1").count
        let resent = pairs(try await redisCLI(server.port, ["RESEND", "e1"]))
        #expect(resent["attempts_left"] != nil, "\(resent)")  // the STATUS map
        try await Task.sleep(for: .seconds(4))
        #expect(server.log.codes(session: "e1").count == messages)
        #expect(pairs(try await redisCLI(server.port, ["STATUS", "e1"]))["version"] == version)
        // Erasing again records nothing; VERIFY still answers.
        #expect(pairs(try await redisCLI(server.port, ["ERASE", "e1"]))["version"] == version)
        #expect(pairs(try await redisCLI(server.port, ["VERIFY", "e1", code]))["result"] == "verified")
    }

    @Test func erasingADestinationFindsItsSessionsWhateverTheCaseOfItsEmailAddress() async throws {
        let server = try await TestServer.start(label: "erasecase", config: "[limits]\nmin_gap_per_channel = \"0s\"")
        defer { Task { await server.stop() } }
        _ = try await redisCLI(server.port, ["ISSUE", "k1", "email:Pat.Doe@Example.com"])
        _ = try await redisCLI(server.port, ["ISSUE", "k2", "email:pat.doe@example.com"])
        let erased = try await server.sessions.erase(destination: "PAT.DOE@example.COM", tenant: "default")
        #expect(Set(erased.map(\.session)) == ["k1", "k2"])
        let left = try await server.pool.withConnection { conn in
            try conn.query("SELECT count(*)::bigint FROM destination_sessions").rows[0].decode(0, as: Int.self)
        }
        #expect(left == 0)
        #expect(try await server.sessions.erase(destination: "pat.doe@example.com", tenant: "default").isEmpty)
    }
}
