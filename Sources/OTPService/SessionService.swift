import EventStore
import OTPDomain
import Postgres

/// The result of a command: the session's state after it, what was decided, and the database time.
public struct CommandOutcome: Sendable {
    /// The state after the command's events.
    public var state: SessionState
    /// The events appended and, for VERIFY, the result.
    public var decision: Decision
    /// The database clock when the command ran (Unix epoch milliseconds).
    public var now: Int64
}

/// Runs commands on sessions: load, decide, commit, in one transaction, or, with `group_commit` on, in one
/// shared with other commands (`GroupCommit`).
///
/// A version conflict (another writer appended first) rolls back that command alone and runs it again on a
/// fresh load, a bounded number of times; an outcome is returned only from a committed transaction.
public final class SessionService: Sendable {
    let pool: PGPool
    let store: SessionStore
    let pacing: Pacing
    let codes: any CodeBook
    let policies: PolicyBook
    /// The destinations that send nothing and verify with a configured code.
    let testDestinations: TestDestinations
    /// How fast each route delivers lately, for adaptive step timeouts (from memory).
    let routeLatency: @Sendable (DeliveryChannel, String) -> RouteLatency?
    let minGapMs: Int64
    let pick: @Sendable (Int) -> Int
    /// Where committed events, escalations and receipts are counted.
    public let telemetry: Telemetry
    /// With `group_commit` on: gathers the commands of every caller into shared transactions, as many at once as
    /// the pool has connections. Off (nil) by default: one transaction per command.
    let committer: GroupCommit<(outcome: CommandOutcome, effects: CommitEffects)>?

    static let maxConflictRetries = 8

    /// Creates the service; `telemetry` counts what it commits (a server passes its one `Telemetry`).
    public init(
        pool: PGPool,
        store: SessionStore,
        pacing: Pacing,
        codes: any CodeBook,
        policies: PolicyBook,
        testDestinations: TestDestinations = TestDestinations(),
        routeLatency: @escaping @Sendable (DeliveryChannel, String) -> RouteLatency? = { _, _ in nil },
        minGapMs: Int64,
        pick: @escaping @Sendable (Int) -> Int = { Int.random(in: 0..<$0) },
        telemetry: Telemetry = Telemetry(),
        groupCommit: Bool = false
    ) {
        self.pool = pool
        self.store = store
        self.pacing = pacing
        self.codes = codes
        self.policies = policies
        self.testDestinations = testDestinations
        self.routeLatency = routeLatency
        self.minGapMs = minGapMs
        self.pick = pick
        self.telemetry = telemetry
        self.committer =
            groupCommit
            ? GroupCommit(
                pool: pool,
                transactions: pool.size,
                maxAttempts: Self.maxConflictRetries + 1,
                isLostRace: Self.isLostRace
            ) : nil
    }

    /// Runs a command on a session; `also` runs in the same transaction after the commit, with the new state.
    ///
    /// With `loaded`, the first attempt decides on that state instead of reading the stream again; the append's
    /// expected version still catches any event appended since, and the retry then reads afresh.
    public func execute(
        _ command: SessionCommand,
        on stream: StreamID,
        loaded: LoadedSession? = nil,
        also: (@Sendable (PGConnection, SessionState) throws -> Void)? = nil
    ) async throws -> CommandOutcome {
        // One attempt; only the first may decide on the caller's load.
        let attempt: GroupCommit<(outcome: CommandOutcome, effects: CommitEffects)>.Work = { conn, counts, attempt in
            try self.run(
                command,
                on: stream,
                preloaded: attempt == 0 ? loaded : nil,
                also: also,
                counts: counts,
                on: conn
            )
        }
        let (outcome, effects) =
            if let committer { try await committer.run(key: stream.text, attempt) } else { try await alone(attempt) }
        if let session = effects.session { store.memo.remember(stream.text, session) }
        if effects.queuedMessages > 0 { store.outbox.signal.signal() }
        if effects.timersChanged { store.timers.signal.signal() }
        if !outcome.decision.events.isEmpty { store.appended.signal() }
        // Counted once committed: an attempt rolled back (a conflict, a limit) appended nothing.
        telemetry.committed(outcome.decision.events)
        if case .recordReceipt(let channel, let outcome, _, _) = command {
            telemetry.receipt(channel: channel, outcome: outcome)
        }
        return outcome
    }

    /// One transaction per command (the default): a lost race rolls back and runs the command again on a
    /// fresh load, a bounded number of times.
    private func alone<Value: Sendable>(
        _ work: @escaping @Sendable (PGConnection, PendingCounts, Int) throws -> Value
    ) async throws -> Value {
        var attempt = 0
        while true {
            let n = attempt
            do {
                return try await pool.withConnection { conn in
                    try PendingCounts.transaction(on: conn) { counts in try work(conn, counts, n) }
                }
            } catch  where Self.isLostRace(error) && attempt < Self.maxConflictRetries {
                attempt += 1
            }
        }
    }

    /// Another writer appended first, or two ISSUEs raced to create the session key, or two transactions
    /// waited on each other's rows: the loser decides again on a fresh read.
    static func isLostRace(_ error: any Error) -> Bool {
        if let e = error as? AppendError { return e == .versionConflict }
        if let e = error as? PGError { return e.isUniqueViolation || e.sqlState == "40P01" }
        return false
    }

    /// One attempt: load, look up the facts the decision needs, decide, commit, check and count the limits.
    private func run(
        _ command: SessionCommand,
        on stream: StreamID,
        preloaded: LoadedSession?,
        also: (@Sendable (PGConnection, SessionState) throws -> Void)?,
        counts: PendingCounts,
        on conn: PGConnection
    ) throws -> (outcome: CommandOutcome, effects: CommitEffects) {
        var session = try preloaded ?? store.load(stream, on: conn)
        if preloaded != nil { session.now = try EventStore.now(on: conn) }
        let now = session.now
        let context = DecisionContext(
            now: now,
            stream: stream,
            codes: codes,
            policies: policies,
            pick: pick,
            minGapMs: minGapMs,
            facts: try pacing.facts(
                for: command,
                state: session.state,
                tenant: stream.tenant,
                now: now,
                counts: counts,
                on: conn
            ),
            testDestinations: testDestinations,
            routeLatency: routeLatency
        )
        let decision = try SessionDecider.decide(command, state: session.state, context: context)
        let (next, effects) = try store.commit(decision.events, to: stream, after: session, now: now, on: conn)
        try pacing.apply(
            command,
            events: decision.events,
            after: next,
            stream: stream,
            now: now,
            counts: counts,
            on: conn
        )
        try also?(conn, next)
        return (CommandOutcome(state: next, decision: decision, now: now), effects)
    }

    /// Erases every session of one destination at a tenant, found through the keyed hash pacing keeps (never by
    /// decrypting), then deletes what the pacing tables keep of it. Returns the sessions erased (already erased
    /// ones included: erasing again records nothing).
    public func erase(destination address: String, tenant: String) async throws -> [StreamID] {
        var erased: [StreamID] = []
        while true {
            // Forgetting the destination and finding a session started meanwhile happen under its lock.
            let done = Set(erased)
            let left = try await pool.withConnection { conn in
                try conn.transaction { conn in try self.pacing.forget(address, tenant: tenant, except: done, on: conn) }
            }
            if left.isEmpty { return erased }
            for stream in left {
                _ = try await execute(.erase, on: stream)
                erased.append(stream)
            }
        }
    }

    /// Reads a session: its state and events, consistent with its stream.
    public func load(_ stream: StreamID) async throws -> LoadedSession {
        try await pool.withConnection { conn in try self.store.load(stream, on: conn) }
    }

    /// Reads a session's stored events as they are, without decoding them, with its head and the database clock.
    public func records(_ stream: StreamID) async throws -> StoredStream {
        try await pool.withConnection { conn in try self.store.records(stream, on: conn) }
    }

    /// The first version where a stored stream's keyed chain or head does not verify; nil when intact.
    public func firstBrokenVersion(_ stored: StoredStream) -> Int? { store.firstBrokenVersion(stored) }

    /// Rebuilds a state from stored records alone, for REPLAY.
    public func fold(_ records: [EventRecord], stream: StreamID) async throws -> SessionState {
        try await pool.withConnection { conn in try self.store.fold(records, stream: stream, on: conn) }
    }
}
