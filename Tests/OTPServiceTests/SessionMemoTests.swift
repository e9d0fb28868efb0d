import EventStore
import OTPDomain
import Postgres
import PostgresTesting
import Testing

@testable import OTPService

/// The memo alone: bounded, oldest first, never set back by a command that finished late.
@Suite struct SessionMemoTests {
    func entry(_ stream: String, versions: Int) -> SessionMemo.Entry {
        let records = (0..<versions).map { v in
            EventRecord(
                streamID: stream,
                version: v + 1,
                type: "cancelled",
                data: "{}",
                at: 0,
                prevHash: HashChain.genesis,
                hash: HashChain.genesis
            )
        }
        return .init(records: records, key: nil, state: SessionState())
    }

    @Test func itHoldsAtMostItsCapacityAndForgetsTheOldestFirst() {
        let memo = SessionMemo(capacity: 3)
        for k in 1...5 { memo.remember("s\(k)", entry("s\(k)", versions: 1)) }
        #expect(memo.count == 3)
        #expect(memo.entry("s1", matching: entry("s1", versions: 1).records) == nil)
        #expect(memo.entry("s2", matching: entry("s2", versions: 1).records) == nil)
        for k in 3...5 { #expect(memo.entry("s\(k)", matching: entry("s\(k)", versions: 1).records) != nil) }
        // Long use stays bounded: the forgotten prefix of the order is dropped as it grows.
        for k in 6...1000 { memo.remember("s\(k)", entry("s\(k)", versions: 1)) }
        #expect(memo.count == 3)
        #expect(memo.entry("s1000", matching: entry("s1000", versions: 1).records) != nil)
    }

    @Test func itAnswersOnlyForTheRowsItWasMadeFromAndIsNotSetBack() {
        let memo = SessionMemo(capacity: 10)
        memo.remember("s", entry("s", versions: 2))
        #expect(memo.entry("s", matching: entry("s", versions: 1).records) == nil)
        var edited = entry("s", versions: 2).records
        edited[1].data = #"{"x":1}"#
        #expect(memo.entry("s", matching: edited) == nil)
        // A command that committed earlier but finished later does not replace the further state.
        memo.remember("s", entry("s", versions: 1))
        #expect(memo.entry("s", matching: entry("s", versions: 2).records) != nil)
        #expect(SessionMemo(capacity: 0).count == 0)
    }
}

/// The memo on the command path: used for the rows this instance wrote, and never in place of rows it did not.
@Suite(.heavy) struct SessionMemoStoreTests {
    /// Another instance's command path on the same database (its own memo).
    func otherInstance(_ f: Fixture) -> (SessionService, PGPool) {
        let secrets = Secrets(secret: Array(repeating: 9, count: 32))
        let pool = PGPool(url: f.url, size: 1)
        let service = SessionService(
            pool: pool,
            store: SessionStore(secrets: secrets),
            pacing: Pacing(limits: Limits(), secrets: secrets),
            codes: SecretCodeBook(secrets),
            policies: PolicyBook(policies: []),
            minGapMs: Limits().minGapPerChannelMs
        )
        return (service, pool)
    }

    @Test func aCommittedDecisionIsRememberedAsTheNextLoadReadsIt() async throws {
        let f = try await Fixture.make("memo_commit")
        _ = try await f.sessions.execute(issue, on: stream)
        _ = try await f.sessions.execute(.verify(code: "0"), on: stream)
        let stored = try await f.pool.withConnection { conn in try EventStore.read(stream: stream.text, on: conn) }
        #expect(stored.count == 2)
        let remembered = try #require(f.store.memo.entry(stream.text, matching: stored))
        // What it remembers is what folding the stored rows gives.
        let (other, pool) = otherInstance(f)
        let fresh = try await other.load(stream)
        #expect(remembered.state == fresh.state)
        #expect(remembered.key == fresh.key)
        #expect(try await f.sessions.load(stream).state == fresh.state)
        await pool.close()
        await f.pool.close()
    }

    @Test func anEventAnotherInstanceAppendedIsReadNotTheMemo() async throws {
        let f = try await Fixture.make("memo_other")
        let full = try await f.sessions.execute(issue, on: stream).state.attemptsLeft
        let (other, pool) = otherInstance(f)
        _ = try await other.execute(.verify(code: "0"), on: stream)
        let loaded = try await f.sessions.load(stream)
        #expect(loaded.state.version == 2)
        #expect(loaded.state.attemptsLeft == full - 1)
        // And the next decision here starts from there: a second wrong code leaves one attempt fewer again.
        let outcome = try await f.sessions.execute(.verify(code: "0"), on: stream)
        #expect(outcome.state.version == 3)
        #expect(outcome.state.attemptsLeft == full - 2)
        await pool.close()
        await f.pool.close()
    }

    @Test func aRowEditedByHandIsUnreadableThoughTheMemoHoldsTheSession() async throws {
        let f = try await Fixture.make("memo_edit")
        _ = try await f.sessions.execute(issue, on: stream)
        _ = try await f.sessions.execute(.verify(code: "0"), on: stream)
        try await f.pool.withConnection { conn in
            try conn.query(#"UPDATE events SET data = '{"step":1}' WHERE stream_id = 'acme/s1' AND version = 2"#)
        }
        await #expect(throws: UnreadableSession(stream: stream, version: 2)) {
            try await f.sessions.execute(.verify(code: "0"), on: stream)
        }
        await f.pool.close()
    }

    @Test func anErasedSessionIsRememberedWithoutItsKey() async throws {
        let f = try await Fixture.make("memo_erase")
        _ = try await f.sessions.execute(issue, on: stream)
        let before = try await f.pool.withConnection { conn in try EventStore.read(stream: stream.text, on: conn) }
        #expect(f.store.memo.entry(stream.text, matching: before)?.key != nil)
        _ = try await f.sessions.execute(.erase, on: stream)
        let after = try await f.pool.withConnection { conn in try EventStore.read(stream: stream.text, on: conn) }
        let remembered = try #require(f.store.memo.entry(stream.text, matching: after))
        #expect(remembered.key == nil)
        #expect(remembered.state.issued?.destinations == [])
        await f.pool.close()
    }
}
