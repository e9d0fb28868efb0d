import EventStore
import Foundation
import Logging
import OTPDomain
import Postgres
import PostgresTesting
import Testing

@testable import OTPService

/// SMS first with a wait short enough to time out at once, then e-mail.
let fastPolicy = Policy(
    name: "fast",
    steps: [
        Step(channel: .sms, timeoutMs: 1, until: .delivered), Step(channel: .email, timeoutMs: 600_000, until: .opened),
    ]
)

let quietLogger: Logger = {
    var l = Logger(label: "projector-test")
    l.logLevel = .critical
    return l
}()

/// Drives sessions through the real command path, as the dispatcher, the scheduler and callers would.
struct Driver {
    let f: Fixture
    let codes = SecretCodeBook(Secrets(secret: Array(repeating: 9, count: 32)))

    @discardableResult
    func issue(
        _ tenant: String,
        _ session: String,
        phone: String = "+15551234567",
        maxAttempts: Int = 5
    )
        async throws -> StreamID
    {
        let id = StreamID(tenant: tenant, session: session)
        let request = IssueRequest(
            session: session,
            destinations: [
                Destination(channel: .sms, address: phone),
                Destination(channel: .email, address: "\(session)@example.com"),
            ],
            policy: "fast",
            maxAttempts: maxAttempts,
            fingerprint: "fp-\(session)"
        )
        _ = try await f.sessions.execute(.issue(request), on: id)
        return id
    }

    func state(_ id: StreamID) async throws -> SessionState { try await f.sessions.load(id).state }

    /// The current step's message handed to its provider.
    func sent(_ id: StreamID) async throws {
        let s = try await state(id)
        let command = SessionCommand.recordHandOff(
            token: s.stepStartedVersion,
            messageId: "m-\(id.session)-\(s.stepStartedVersion)",
            provider: "test",
            providerRef: nil
        )
        _ = try await f.sessions.execute(command, on: id)
    }

    func receipt(_ id: StreamID, _ channel: DeliveryChannel, _ outcome: ReceiptOutcome) async throws {
        _ = try await f.sessions.execute(.recordReceipt(channel: channel, outcome: outcome, detail: nil), on: id)
    }

    /// The current step's wait ends (the policy's SMS wait is 1 ms).
    func timeOut(_ id: StreamID) async throws {
        try await Task.sleep(for: .milliseconds(5))
        guard let token = try await state(id).sentVersion else { throw ProjectorTestError("not sent") }
        _ = try await f.sessions.execute(.timeOutStep(token: token), on: id)
    }

    func fail(_ id: StreamID) async throws {
        let s = try await state(id)
        let command = SessionCommand.recordProviderFailure(
            token: s.stepStartedVersion,
            reason: "refused",
            permanent: true
        )
        _ = try await f.sessions.execute(command, on: id)
    }

    func verify(_ id: StreamID, right: Bool = true) async throws {
        let s = try await state(id)
        guard let issued = s.issued else { throw ProjectorTestError("no session") }
        let code = right ? codes.code(seed: issued.codeSeed, digits: issued.digits, stream: id) : "000000x"
        _ = try await f.sessions.execute(.verify(code: code), on: id)
    }

    /// Runs batches until the checkpoint reaches the log's last event; returns how many events were applied.
    /// (A transaction running anywhere in the cluster holds the readable end back, so "idle" alone is not
    /// "caught up" while other tests run.)
    @discardableResult
    func project(limit: Int = 1_000) async throws -> Int {
        var total = 0
        let deadline = ContinuousClock.now + .seconds(20)
        while ContinuousClock.now < deadline {
            let (outcome, caughtUp) = try await f.pool.withConnection { conn in
                let outcome = try Projector.project(limit: limit, on: conn, logger: quietLogger)
                let behind = try conn.query(
                    """
                    SELECT count(*) AS n FROM events e, checkpoints c
                    WHERE c.subscriber = 'projector' AND (e.tx_id, e.position) > (c.tx_id, c.position)
                    """
                ).rows[0].decode("n", as: Int.self)
                return (outcome, behind == 0)
            }
            if case .applied(let n, _, _) = outcome { total += n }
            if caughtUp { return total }
            if outcome != .applied(events: limit, lagMs: 0, full: true) { try await Task.sleep(for: .milliseconds(20)) }
        }
        throw ProjectorTestError("the projector did not catch up")
    }

    func stats(_ tenant: String, by: StatsGrouping = .channel) async throws -> [String: StatsGroup] {
        let groups = try await f.pool.withConnection { conn in
            try Analytics.stats(tenant: tenant, since: 3_600, by: by, on: conn)
        }
        return Dictionary(uniqueKeysWithValues: groups.map { ($0.group, $0) })
    }

    func count(_ sql: String) async throws -> Int64 {
        try await f.pool.withConnection { conn in
            try conn.query(PGQuery(unsafeSQL: sql)).rows.first?.decode(0, as: Int64.self) ?? 0
        }
    }
}

struct ProjectorTestError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

/// The counts of a STATS group, in PROTOCOL.md's order.
func counts(_ g: StatsGroup?) -> [Int64] {
    guard let g else { return [] }
    return [g.issued, g.sent, g.delivered, g.failed, g.escalated, g.verified, g.expired]
}

/// Five sessions with known outcomes:
/// - a1: SMS delivered, verified.
/// - a2: SMS timed out, e-mail sent, the SMS's receipt comes late, e-mail opened, verified on e-mail.
/// - a3: the SMS provider refuses, e-mail sent, three wrong codes lock it.
/// - a4: SMS timed out, its late receipt comes before the e-mail went out: the escalation is withdrawn, verified
///   on SMS.
/// - b1: another tenant's, SMS sent.
func knownScenario(_ d: Driver) async throws {
    let a1 = try await d.issue("acme", "a1", phone: "+15550000011")
    try await d.sent(a1)
    try await d.receipt(a1, .sms, .delivered)
    try await d.verify(a1)

    let a2 = try await d.issue("acme", "a2", phone: "+447700900123")
    try await d.sent(a2)
    try await d.timeOut(a2)
    try await d.sent(a2)
    try await d.receipt(a2, .sms, .delivered)
    try await d.receipt(a2, .email, .opened)
    try await d.receipt(a2, .email, .opened)  // a repeated receipt records nothing
    try await d.verify(a2)

    let a3 = try await d.issue("acme", "a3", phone: "+15550000013", maxAttempts: 1)
    try await d.fail(a3)
    try await d.sent(a3)
    try await d.verify(a3, right: false)

    let a4 = try await d.issue("acme", "a4", phone: "+15550000014")
    try await d.sent(a4)
    try await d.timeOut(a4)
    try await d.receipt(a4, .sms, .delivered)
    try await d.verify(a4)

    let b1 = try await d.issue("beta", "b1", phone: "+15550000015")
    try await d.sent(b1)
}

@Suite(.heavy) struct ProjectorTests {
    @Test func readModelsCountAScenarioWithKnownOutcomes() async throws {
        let f = try await Fixture.make("proj_scenario", policies: [fastPolicy])
        let d = Driver(f: f)
        try await knownScenario(d)
        #expect(try await d.project() > 20)

        let byChannel = try await d.stats("acme")
        // issued, sent, delivered, failed, escalated, verified, expired
        #expect(counts(byChannel["sms"]) == [4, 3, 3, 1, 2, 2, 0])
        #expect(counts(byChannel["email"]) == [0, 2, 1, 0, 0, 1, 0])
        #expect(byChannel["sms"]?.deliveryRate == "1.0000")
        #expect(byChannel["sms"]?.conversionRate == "0.5000")
        #expect(byChannel["email"]?.deliveryRate == "0.5000")
        #expect(byChannel["email"]?.conversionRate == "0.0000")
        #expect(try await d.stats("beta")["sms"].map(counts) == [1, 1, 0, 0, 0, 0, 0])
        #expect(try await d.stats("nobody").isEmpty)

        let byCountry = try await d.stats("acme", by: .country)
        #expect(Set(byCountry.keys) == ["+1", "+44"])
        #expect(byCountry["+44"].map(counts) == [1, 2, 2, 0, 1, 1, 0])
        let byPolicy = try await d.stats("acme", by: .policy)
        #expect(byPolicy["fast"]?.issued == 4)

        // One row per session, with the route and where it converted.
        let rows = try await f.pool.withConnection { conn in
            try conn.query(
                """
                SELECT session, status, array_to_string(channels, '>') AS path,
                       coalesce(converted_channel, '-') AS converted
                FROM projections.session_view ORDER BY stream_id
                """
            ).rows.map {
                [
                    try $0.decode("session", as: String.self), try $0.decode("status"), try $0.decode("path"),
                    try $0.decode("converted"),
                ]
            }
        }
        #expect(
            rows == [
                ["a1", "verified", "sms", "sms"], ["a2", "verified", "sms>email", "email"],
                ["a3", "locked", "sms>email", "-"], ["a4", "verified", "sms", "sms"], ["b1", "sent", "sms", "-"],
            ]
        )
        // The hourly aggregates hold the same counts as the per-message rows STATS reads.
        #expect(try await d.count("SELECT sum(sent) FROM projections.delivery_stats WHERE tenant = 'acme'") == 5)
        #expect(try await d.count("SELECT sum(escalated) FROM projections.delivery_stats WHERE tenant = 'acme'") == 2)
        #expect(
            try await d.count(
                "SELECT sum(count) FROM projections.delivery_latency WHERE tenant = 'acme' AND kind = 'delivery'"
            ) == 4
        )
        #expect(
            try await d.count(
                "SELECT sessions FROM projections.fallback_paths WHERE tenant = 'acme' AND path = 'sms' AND status = 'verified'"
            ) == 2
        )
        // A path's count moves with the session: b1 is counted once, as `sent`, not once per status it passed.
        #expect(try await d.count("SELECT sum(sessions) FROM projections.fallback_paths") == 5)
        await f.pool.close()
    }

    @Test func aBatchThatDoesNotCommitIsAppliedOnceWhenRunAgain() async throws {
        let f = try await Fixture.make("proj_crash", policies: [fastPolicy])
        let d = Driver(f: f)
        try await knownScenario(d)
        // The writes happen, then the process "dies" before the commit: nothing of the batch stays. (Tried until
        // the batch has events: a transaction of another test in the cluster can hold the log's end back.)
        let crashed = try await eventuallyTrue("a batch with events") {
            do {
                let outcome = try await f.pool.withConnection { conn in
                    try Projector.project(limit: 10, on: conn, logger: quietLogger) { _ in
                        throw ProjectorTestError("crash before commit")
                    }
                }
                #expect(outcome == .idle)
                return false
            } catch is ProjectorTestError {
                return true
            }
        }
        #expect(crashed)
        #expect(try await d.count("SELECT count(*) FROM projections.session_view") == 0)
        #expect(try await d.count("SELECT position FROM checkpoints WHERE subscriber = 'projector'") == 0)
        // Applied again in small batches, from the same checkpoint: the same figures as in one go.
        try await d.project(limit: 3)
        let byChannel = try await d.stats("acme")
        #expect(counts(byChannel["sms"]) == [4, 3, 3, 1, 2, 2, 0])
        #expect(counts(byChannel["email"]) == [0, 2, 1, 0, 0, 1, 0])
        #expect(try await d.project() == 0)
        await f.pool.close()
    }

    @Test func anEventThatCommitsLateIsAppliedOnceInItsPlace() async throws {
        let f = try await Fixture.make("proj_order", policies: [fastPolicy])
        let d = Driver(f: f)
        try await d.issue("acme", "early", phone: "+15550000000")
        try await d.project()
        // An ISSUE whose transaction stays open (until the test releases it) while a later one commits and the
        // projector runs.
        let entered = DispatchSemaphore(value: 0)
        let release = DispatchSemaphore(value: 0)
        let held = Task {
            let request = IssueRequest(
                session: "held",
                destinations: [Destination(channel: .sms, address: "+15550000001")],
                policy: "fast",
                fingerprint: "held"
            )
            _ = try await f.sessions.execute(.issue(request), on: StreamID(tenant: "acme", session: "held")) { _, _ in
                entered.signal()
                _ = release.wait(timeout: .now() + 20)
            }
        }
        _ = try await eventuallyTrue("the held transaction to have appended") {
            entered.wait(timeout: .now()) == .success
        }
        let projector = try PGConnection(url: f.url)
        defer { projector.close() }
        // The later session commits on the pool's other connection while the first is held (another tenant and
        // country: the held transaction holds its pacing counters' rows).
        try await d.issue("other", "later", phone: "+447700900002")
        // Committed, but behind a running transaction: not read yet.
        let whileHeld = try Projector.project(limit: 100, on: projector, logger: quietLogger)
        #expect(whileHeld == .idle)
        release.signal()
        try await held.value
        try await d.project()
        let sessions = try await f.pool.withConnection { conn in
            try conn.query("SELECT session FROM projections.session_view ORDER BY session").rows.map {
                try $0.decode(0, as: String.self)
            }
        }
        #expect(sessions == ["early", "held", "later"])
        #expect(try await d.stats("acme")["sms"]?.issued == 2)
        #expect(try await d.stats("other")["sms"]?.issued == 1)
        await f.pool.close()
    }

    @Test func twoProjectorsTogetherApplyEachEventOnce() async throws {
        let f = try await Fixture.make("proj_two", policies: [fastPolicy])
        let d = Driver(f: f)
        var settings = Projector.Settings()
        settings.batchSize = 7
        settings.idleWait = .milliseconds(5)
        settings.leaderWait = .milliseconds(5)
        let pools = [PGPool(url: f.url, size: 1), PGPool(url: f.url, size: 1)]
        let projectors = pools.map { Projector(pool: $0, settings: settings, logger: quietLogger) }
        let running = projectors.map { p in Task { try await p.run() } }
        for i in 0..<40 {
            let id = try await d.issue("acme", "s\(i)", phone: "+1555100\(1000 + i)")
            try await d.sent(id)
            if i % 2 == 0 { try await d.receipt(id, .sms, .delivered) }
        }
        _ = try await eventuallyTrue("both projectors catch up") {
            let sent = try await d.count("SELECT count(*) FROM projections.session_view WHERE version >= 2")
            let delivered = try await d.count(
                "SELECT count(*) FROM projections.message_view WHERE delivered_ms IS NOT NULL"
            )
            return sent == 40 && delivered == 20
        }
        for t in running { t.cancel() }
        for t in running { _ = try? await t.value }
        #expect(counts(try await d.stats("acme")["sms"]) == [40, 40, 20, 0, 0, 0, 0])
        #expect(try await d.count("SELECT sum(sent) FROM projections.delivery_stats") == 40)
        for p in pools { await p.close() }
        await f.pool.close()
    }

    @Test func appendsDuringTheGapAfterABatchShareTheNextOne() async throws {
        let f = try await Fixture.make("proj_gap", policies: [fastPolicy])
        let d = Driver(f: f)
        var settings = Projector.Settings()
        settings.idleWait = .milliseconds(10)
        settings.batchGap = .seconds(1)
        let pool = PGPool(url: f.url, size: 1)
        let projector = Projector(
            pool: pool,
            settings: settings,
            wake: f.store.appended.listener(),
            logger: quietLogger
        )
        let running = Task { try await projector.run() }
        func applied() async throws -> [String: Int64] {
            try await f.pool.withConnection { conn in
                var out: [String: Int64] = [:]
                for row in try conn.query("SELECT session, applied_ms FROM projections.session_view").rows {
                    out[try row.decode("session")] = try row.decode("applied_ms", as: Int64.self)
                }
                return out
            }
        }
        _ = try await d.issue("acme", "g0", phone: "+15554100000")
        _ = try await eventuallyTrue("the first session projected") { try await applied()["g0"] != nil }
        // Five appends, each waking the projector, right after its batch: they wait out the gap together.
        for i in 1...5 { _ = try await d.issue("acme", "g\(i)", phone: "+1555410000\(i)") }
        _ = try await eventuallyTrue("all six projected") { try await applied().count == 6 }
        running.cancel()
        _ = try? await running.value
        let times = try await applied()
        let first = try #require(times["g0"])
        let rest = Set((1...5).compactMap { times["g\($0)"] })
        #expect(rest.count == 1, "the five were applied in \(rest.count) batches")
        #expect((rest.first ?? 0) - first >= 900, "applied \((rest.first ?? 0) - first) ms after the first batch")
        await pool.close()
        await f.pool.close()
    }

    @Test func whenTheProjectingInstanceDiesAnotherTakesOver() async throws {
        let f = try await Fixture.make("proj_takeover", policies: [fastPolicy])
        let d = Driver(f: f)
        try await d.issue("acme", "t1", phone: "+15554000001")
        // An instance in the middle of a batch: it holds the projector's lock in an open transaction.
        let dying = try PGConnection(url: f.url)
        try dying.execute("BEGIN")
        try dying.query("SELECT pg_try_advisory_xact_lock(\(Projector.lockKey))")
        let other = try PGConnection(url: f.url)
        defer { other.close() }
        #expect(try Projector.project(limit: 100, on: other, logger: quietLogger) == .notLeader)
        // It dies: its connection goes, and the lock with it; the next try of the other instance projects.
        dying.close()
        _ = try await eventuallyTrue("the other instance to take over") {
            if case .applied = try Projector.project(limit: 100, on: other, logger: quietLogger) { return true }
            return false
        }
        #expect(try await d.stats("acme")["sms"]?.issued == 1)
        await f.pool.close()
    }

    @Test func rebuildGivesTheLiveFiguresWhileStatsKeepsAnswering() async throws {
        let f = try await Fixture.make("proj_rebuild", policies: [fastPolicy])
        let d = Driver(f: f)
        try await knownScenario(d)
        for i in 0..<30 {
            let id = try await d.issue("acme", "r\(i)", phone: "+1555200\(1000 + i)")
            try await d.sent(id)
        }
        try await d.project()
        func snapshot() async throws -> [String: [String]] { try await projectionRows(f.pool) }
        let live = try await snapshot()
        // Wipe a table by hand: the rebuild restores it from the log.
        try await f.pool.withConnection { try $0.execute("DELETE FROM projections.delivery_stats") }

        let reader = Task {
            var answers = 0
            while !Task.isCancelled {
                do {
                    let s = try await d.stats("acme")
                    if s["sms"] != nil || s.isEmpty { answers += 1 }
                    try await Task.sleep(for: .milliseconds(2))
                } catch is CancellationError {
                    break
                }
            }
            return answers
        }
        let conn = try PGConnection(url: f.url)
        var phases: [String] = []
        let report = try Rebuild.run(on: conn, batchSize: 16, logger: quietLogger) { phases.append($0.phase) }
        conn.close()
        try await Task.sleep(for: .milliseconds(50))
        reader.cancel()
        let answers = try await reader.value
        #expect(answers > 0)
        #expect(report.sessions == 35)
        #expect(report.unreadable == 0)
        #expect(Set(phases).isSuperset(of: ["reading", "writing", "swapping", "done"]))
        #expect(try await snapshot() == live)
        // The live projector goes on from where the rebuild read: nothing twice.
        #expect(try await d.project() == 0)
        let more = try await d.issue("acme", "after", phone: "+15553000000")
        try await d.sent(more)
        #expect(try await d.project() == 2)
        #expect(try await d.stats("acme")["sms"]?.issued == 35)
        #expect(try await d.count("SELECT count(*) FROM pg_namespace WHERE nspname = 'projections_rebuild'") == 0)
        await f.pool.close()
    }

    /// A rebuild of a log large enough to be decoded on every core, with an unreadable row in it and events
    /// appended between its bulk write and its swap (new sessions, and events of sessions already written),
    /// gives exactly what the live projector gives from the log's start.
    @Test func aRebuildWithAppendsBeforeItsSwapEqualsAProjectionFromTheStart() async throws {
        let f = try await Fixture.make("proj_rebuild_big", policies: [fastPolicy])
        let d = Driver(f: f)
        for i in 0..<20 {
            let id = try await d.issue("acme", "s\(i)", phone: "+1555210\(1000 + i)")
            try await d.sent(id)
            if i % 2 == 0 { try await d.receipt(id, .sms, .delivered) }
        }
        // 30 copies of each session: over a thousand events, read in one batch.
        try await f.pool.withConnection { conn in
            for c in 0..<30 { try copyEvents(into: "c\(c)", where: "stream_id ~ '^acme/s[0-9]+$'", on: conn) }
            try conn.execute("UPDATE events SET data = '{}' WHERE stream_id = 'acme/s3c7' AND version = 1")
        }
        #expect(try await d.count("SELECT count(*) FROM events") > 1_000)

        let conn = try PGConnection(url: f.url)
        let other = try PGConnection(url: f.url)
        try waitUntilTheLogIsReadable(on: other)
        var appended = false
        let report = try Rebuild.run(on: conn, logger: quietLogger) { p in
            guard p.phase == "swapping", !appended else { return }
            appended = true
            // New sessions, and a second `sent` on sessions whose rows the bulk write already made.
            do {
                try copyEvents(into: "late", where: "stream_id IN ('acme/s1', 'acme/s2')", on: other)
                try copyEvents(
                    into: "",
                    where: "stream_id IN ('acme/s4c1', 'acme/s5') AND version = 2",
                    versionShift: 10,
                    on: other
                )
                try waitUntilTheLogIsReadable(on: other)
            } catch {
                Issue.record("appending before the swap: \(error)")
            }
        }
        conn.close()
        other.close()
        #expect(appended)
        #expect(report.unreadable == 1)
        // 20 sessions and 30 copies of each, one of them unreadable, and the two late ones.
        #expect(report.sessions == 20 * 31 - 1 + 2)

        func snapshot() async throws -> [String: [String]] { try await projectionRows(f.pool) }
        let rebuilt = try await snapshot()
        #expect(rebuilt["session_view"]?.count == report.sessions)
        // The live projector, from the log's start on empty tables.
        try await f.pool.withConnection { conn in
            for t in ReadModels.tables { try conn.execute("DELETE FROM projections.\(t)") }
            try conn.execute("UPDATE checkpoints SET tx_id = '0', position = 0 WHERE subscriber = 'projector'")
        }
        try await d.project()
        #expect(try await snapshot() == rebuilt)
        await f.pool.close()
    }
}

/// Polls until `condition` holds (10 s at most).
func eventuallyTrue(_ what: String, _ condition: () async throws -> Bool) async throws -> Bool {
    let deadline = ContinuousClock.now + .seconds(10)
    while ContinuousClock.now < deadline {
        if try await condition() { return true }
        try await Task.sleep(for: .milliseconds(20))
    }
    throw ProjectorTestError("timed out waiting for \(what)")
}

/// Copies the events `condition` selects to the streams named with `suffix` added, versions moved by
/// `versionShift` (a log grown by hand, hash chains aside: the rebuild does not check them).
private func copyEvents(
    into suffix: String,
    where condition: String,
    versionShift: Int = 0,
    on conn: PGConnection
) throws {
    try conn.execute(
        """
        INSERT INTO events (stream_id, version, type, data, at_ms, prev_hash, hash)
        SELECT stream_id || '\(suffix)', version + \(versionShift), type, data, at_ms, prev_hash, hash
        FROM events WHERE \(condition) ORDER BY position
        """
    )
}

/// Waits (blocking, 20 s at most) until every event in the log is below the readable end, the oldest
/// transaction still running in the cluster (`readLog`'s bound), which other tests' transactions hold back.
private func waitUntilTheLogIsReadable(on conn: PGConnection) throws {
    let deadline = ContinuousClock.now + .seconds(20)
    while ContinuousClock.now < deadline {
        let readable = try conn.query(
            """
            SELECT coalesce(max(tx_id) < pg_snapshot_xmin(pg_current_snapshot()), true) AS ok FROM events
            """
        ).rows[0].decode("ok", as: Bool.self)
        if readable { return }
        Thread.sleep(forTimeInterval: 0.02)
    }
    throw ProjectorTestError("the log's end stayed unreadable")
}

/// Every read model's rows as JSON text, sorted, without `applied_ms` (when a row was written, which a rebuild
/// changes by design).
private func projectionRows(_ pool: PGPool) async throws -> [String: [String]] {
    try await pool.withConnection { conn in
        var out: [String: [String]] = [:]
        for t in ReadModels.tables {
            out[t] = try conn.query(
                PGQuery(unsafeSQL: "SELECT (to_jsonb(t) - 'applied_ms')::text FROM projections.\(t) t")
            ).rows.map { try $0.decode(0, as: String.self) }.sorted()
        }
        return out
    }
}
