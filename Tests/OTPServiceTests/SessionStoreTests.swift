import EventStore
import Foundation
import OTPDomain
import Postgres
import PostgresTesting
import Testing

@testable import OTPService

let schemaDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("schema").path

/// A migrated database and the command path on it, as the application builds it.
struct Fixture {
    let url: String
    let pool: PGPool
    let store: SessionStore
    let sessions: SessionService

    static func make(
        _ label: String,
        limits: Limits = Limits(),
        policies: [Policy] = [],
        groupCommit: Bool = false
    ) async throws -> Fixture {
        let url = try await TestDatabase.make(label: label)
        let conn = try PGConnection(url: url)
        defer { conn.close() }
        try Migrator(directory: schemaDirectory).apply(on: conn)
        let secrets = Secrets(secret: Array(repeating: 9, count: 32))
        let pool = PGPool(url: url, size: 2)
        let store = SessionStore(secrets: secrets)
        let sessions = SessionService(
            pool: pool,
            store: store,
            pacing: Pacing(limits: limits, secrets: secrets),
            codes: SecretCodeBook(secrets),
            policies: PolicyBook(policies: policies),
            minGapMs: limits.minGapPerChannelMs,
            groupCommit: groupCommit
        )
        return Fixture(url: url, pool: pool, store: store, sessions: sessions)
    }

    /// Row counts of the tables a commit writes, for one stream.
    func rows(_ stream: StreamID) async throws -> [String: Int] {
        try await pool.withConnection { conn in
            var out: [String: Int] = [:]
            for table in ["session_keys", "events", "outbox", "timers"] {
                out[table] = try conn.query(
                    PGQuery(
                        unsafeSQL: "SELECT count(*)::bigint FROM \(table) WHERE stream_id = $1",
                        parameters: [stream.text]
                    )
                ).rows[0].decode(0, as: Int.self)
            }
            return out
        }
    }
}

let stream = StreamID(tenant: "acme", session: "s1")
let issue = SessionCommand.issue(
    IssueRequest(
        session: "s1",
        destinations: [
            Destination(channel: .sms, address: "+15551234567"), Destination(channel: .email, address: "a@example.com"),
        ],
        fingerprint: "fp"
    )
)

@Suite(.heavy) struct SessionStoreTests {
    @Test func oneCommitWritesTheKeyTheEventsTheMessageAndTheDeadlines() async throws {
        let f = try await Fixture.make("store_commit")
        let outcome = try await f.sessions.execute(issue, on: stream)
        #expect(outcome.state.version == 1)
        #expect(try await f.rows(stream) == ["session_keys": 1, "events": 1, "outbox": 1, "timers": 1])
        let queued = try await f.pool.withConnection { conn in
            try f.store.outbox.claim(.sms, limit: 10, leaseSeconds: 30, on: conn)
        }
        #expect(queued.map(\.token) == [1])
        #expect(queued.map(\.channel) == [.sms])
        #expect(queued.map(\.stream) == [stream])
        await f.pool.close()
    }

    @Test func aCommitOnAStaleLoadConflictsAndWritesNothing() async throws {
        let f = try await Fixture.make("store_conflict")
        _ = try await f.sessions.execute(issue, on: stream)
        let stale = try await f.sessions.load(stream)
        _ = try await f.sessions.execute(.resend, on: stream)  // version 2: an escalation, a second message
        let before = try await f.rows(stream)
        let events = [SessionEvent.cancelled]
        await #expect(throws: AppendError.versionConflict) {
            try await f.pool.withConnection { conn in
                try conn.transaction { conn in
                    _ = try f.store.commit(events, to: stream, after: stale, now: stale.now, on: conn)
                }
            }
        }
        #expect(try await f.rows(stream) == before)
        // Through the service, the same command decides again on a fresh load and is recorded once.
        let cancelled = try await f.sessions.execute(.cancel, on: stream, loaded: stale)
        #expect(cancelled.state.status == .cancelled)
        #expect(cancelled.state.version == 3)
        await f.pool.close()
    }

    @Test func eachLaneClaimsItsOwnLimitOldestFirst() async throws {
        let f = try await Fixture.make("store_lanes")
        let outbox = f.store.outbox
        let streams = (1...6).map { StreamID(tenant: "default", session: "lane\($0)") }
        let (sms, email, rest) = try await f.pool.withConnection { conn in
            for (i, s) in streams.enumerated() {
                var batch = PGBatch()
                outbox.enqueue(s, token: 1, step: 1, channel: i < 5 ? .sms : .email, into: &batch)
                try conn.run(batch)
                // Oldest first: each row a second older than the next.
                try conn.query(
                    "UPDATE outbox SET available_at = now() - make_interval(secs => \(10 - i)) WHERE stream_id = \(s.text)"
                )
            }
            // 3 is read as 4 and cut back to 3; a lane without rows claims nothing.
            let first = try outbox.claim([.sms: 3, .email: 1, .voice: 2], leaseSeconds: 30, on: conn)
            let rest = try outbox.claim([.sms: 16], leaseSeconds: 30, on: conn)
            return (first.filter { $0.channel == .sms }, first.filter { $0.channel == .email }, rest)
        }
        #expect(Set(sms.map(\.stream)) == Set(streams[0..<3]))  // the three oldest
        #expect(email.map(\.stream) == [streams[5]])
        #expect(Set(rest.map(\.stream)) == Set(streams[3..<5]))
        await f.pool.close()
    }

    @Test func aClaimedMessageIsNobodyElsesUntilItIsCompletedOrReleased() async throws {
        let f = try await Fixture.make("store_outbox")
        _ = try await f.sessions.execute(issue, on: stream)
        let outbox = f.store.outbox
        let (first, second, email) = try await f.pool.withConnection { conn in
            (
                try outbox.claim(.sms, limit: 10, leaseSeconds: 30, on: conn),
                try outbox.claim(.sms, limit: 10, leaseSeconds: 30, on: conn),
                try outbox.claim(.email, limit: 10, leaseSeconds: 30, on: conn)
            )
        }
        #expect(first.count == 1)
        #expect(second.isEmpty)
        #expect(email.isEmpty)  // each channel claims its own rows
        let again = try await f.pool.withConnection { conn in
            try outbox.retry(first[0], afterMs: 0, on: conn)
            return try outbox.claim(.sms, limit: 10, leaseSeconds: 30, on: conn)
        }
        #expect(again.map(\.attempts) == [2])
        #expect(again[0].lease != first[0].lease)
        let parked = try await f.pool.withConnection { conn in
            try outbox.park(again[0], seconds: 3_600, on: conn)
            try outbox.retry(again[0], afterMs: 0, on: conn)  // a release clears a park too
            try outbox.complete(again[0], on: conn)
            return try outbox.claim(.sms, limit: 10, leaseSeconds: 30, on: conn)
        }
        #expect(parked.isEmpty)
        #expect(try await f.rows(stream)["outbox"] == 0)
        await f.pool.close()
    }

    @Test func aClaimWhoseLeaseWasTakenOverCanNoLongerTouchTheRow() async throws {
        let f = try await Fixture.make("store_fence")
        _ = try await f.sessions.execute(issue, on: stream)
        let outbox = f.store.outbox
        // The first holder's lease runs out (0 s) while it is still working; a second instance claims the row.
        let (stale, fresh) = try await f.pool.withConnection { conn in
            let stale = try outbox.claim(.sms, limit: 1, leaseSeconds: 0, on: conn)[0]
            return (stale, try outbox.claim(.sms, limit: 1, leaseSeconds: 30, on: conn)[0])
        }
        let (began, staleBegan) = try await f.pool.withConnection { conn in
            (
                try outbox.beginSend(fresh, leaseSeconds: 30, on: conn),
                try outbox.beginSend(stale, leaseSeconds: 30, on: conn)
            )
        }
        #expect(began)
        #expect(!staleBegan)  // the old holder must not call the provider
        try await f.pool.withConnection { conn in
            try outbox.complete(stale, on: conn)
            try outbox.retry(stale, afterMs: 0, on: conn)
        }
        #expect(try await f.rows(stream)["outbox"] == 1)  // neither deleted nor released by the old holder
        // The holder that called the provider dies without recording: whoever claims next learns it.
        let next = try await f.pool.withConnection { conn in
            try conn.query("UPDATE outbox SET leased_until = now() - interval '1 second'")
            return try outbox.claim(.sms, limit: 1, leaseSeconds: 30, on: conn)
        }
        #expect(next.map(\.wasInFlight) == [true])
        await f.pool.close()
    }

    @Test func aMessageTheSessionNoLongerWantsIsWithdrawnBeforeItsSendBegins() async throws {
        let f = try await Fixture.make("store_withdraw")
        _ = try await f.sessions.execute(issue, on: stream)
        let outbox = f.store.outbox
        let claim = try await f.pool.withConnection { conn in
            try outbox.claim(.sms, limit: 1, leaseSeconds: 30, on: conn)[0]
        }
        // CANCEL commits after the dispatcher claimed (and loaded) but before it began the send.
        _ = try await f.sessions.execute(.cancel, on: stream)
        let began = try await f.pool.withConnection { conn in try outbox.beginSend(claim, leaseSeconds: 30, on: conn) }
        #expect(!began)  // so the code is not sent to a cancelled (or verified, or erased) session
        #expect(try await f.rows(stream)["outbox"] == 0)
        await f.pool.close()
    }

    @Test func aStreamCutBackUnderItsHeadCannotBeDecidedOnOrAppendedTo() async throws {
        let f = try await Fixture.make("store_cutback")
        _ = try await f.sessions.execute(issue, on: stream)
        _ = try await f.sessions.execute(.verify(code: "0"), on: stream)
        _ = try await f.sessions.execute(.verify(code: "0"), on: stream)  // versions 2 and 3: attempts 3 left
        try await f.pool.withConnection { conn in
            try conn.query("DELETE FROM events WHERE stream_id = 'acme/s1' AND version >= 2")
        }
        // Deciding on what is left would give the attempts back: the session is unreadable instead.
        await #expect(throws: UnreadableSession(stream: stream, version: 2)) {
            try await f.sessions.execute(.verify(code: "0"), on: stream)
        }
        // And an append from the cut-back version cannot move the head back over the gap.
        let cut = try await f.pool.withConnection { conn in try EventStore.read(stream: stream.text, on: conn) }
        await #expect(throws: AppendError.versionConflict) {
            try await f.pool.withConnection { conn in
                try EventStore.append(
                    [NewEvent(type: "cancelled", data: "{}")],
                    to: stream.text,
                    expectedVersion: 1,
                    headHash: cut[0].hash,
                    at: 0,
                    key: Secrets(secret: Array(repeating: 9, count: 32)).chainKey,
                    on: conn
                )
            }
        }
        await f.pool.close()
    }

    @Test func aFiredDeadlineIsRemovedUnlessTheFiringReplacedIt() async throws {
        let f = try await Fixture.make("store_timers")
        _ = try await f.sessions.execute(issue, on: stream)
        let timers = f.store.timers
        let expiry = try await f.pool.withConnection { conn in
            let far = try EventStore.now(on: conn) + 3_600_000
            return try timers.claimDue(now: far, leaseMs: 2_000, limit: 10, on: conn)
        }
        #expect(expiry.map(\.timer.name) == ["expiry"])
        #expect(expiry.map(\.stream) == [stream])
        let replaced = Timers.Claim(stream: stream, timer: TimerSpec(name: "expiry", dueAt: 1, token: 99))
        try await f.pool.withConnection { conn in try timers.complete(replaced, on: conn) }
        #expect(try await f.rows(stream)["timers"] == 1)
        try await f.pool.withConnection { conn in try timers.complete(expiry[0], on: conn) }
        #expect(try await f.rows(stream)["timers"] == 0)
        await f.pool.close()
    }
}

@Suite(.heavy) struct CodeBookTests {
    let book = SecretCodeBook(Secrets(secret: Array(repeating: 3, count: 32)))

    @Test func onlyTheSessionsOwnCodeMatchesItsDigest() {
        let code = book.code(seed: book.newSeed(), digits: 6, stream: stream)
        let digest = book.digest(code: code, stream: stream)
        #expect(code.count == 6 && code.allSatisfy(\.isNumber))
        #expect(book.matches(code: code, digest: digest, stream: stream))
        let wrong = code == "000000" ? "000001" : "000000"
        #expect(!book.matches(code: wrong, digest: digest, stream: stream))
        #expect(!book.matches(code: code, digest: digest, stream: StreamID(tenant: "other", session: "s1")))
        #expect(!book.matches(code: code, digest: "not hex", stream: stream))
        #expect(!digest.contains(code))
    }
}

@Suite(.heavy) struct StoredEventBounds {
    @Test func anIssuedRowEditedBeyondWhatISSUEAcceptsIsUnreadableNotATrap() throws {
        let codec = EventCodec()
        let key = Array(repeating: UInt8(5), count: 32)
        guard case .issue(let request) = issue else { return }
        let plan = Plan(policy: "default", variant: nil, steps: [Step(channel: .email)])
        let event = SessionEvent.issued(
            .init(
                session: request.session,
                plan: plan,
                ttlMs: 600_000,
                digits: 6,
                maxAttempts: 5,
                locale: "en",
                app: nil,
                carrier: nil,
                destinations: request.destinations,
                codeSeed: "seed",
                codeDigest: "digest",
                fingerprint: "fp"
            )
        )
        let stored = try codec.encode(event, stream: stream.text, key: key)
        func record(_ data: String) -> EventRecord {
            EventRecord(streamID: stream.text, version: 1, type: stored.type, data: data, at: 0, prevHash: [], hash: [])
        }
        #expect(throws: Never.self) { try codec.decode(record(stored.data), key: key) }
        for (from, to) in [("\"digits\":6", "\"digits\":25"), ("\"ttl_ms\":600000", "\"ttl_ms\":-1")] {
            #expect(stored.data.contains(from))
            #expect(throws: (any Error).self) {
                try codec.decode(record(stored.data.replacingOccurrences(of: from, with: to)), key: key)
            }
        }
    }
}
