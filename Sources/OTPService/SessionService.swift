import Crypto
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

/// A session loaded for reading: its state, its stored events and the database time.
public struct LoadedSession: Sendable {
    /// The folded state.
    public var state: SessionState
    /// The stored events, oldest first.
    public var records: [EventRecord]
    /// The database clock at the read.
    public var now: Int64
    /// The session's data key (nil once erased), for a command that starts from this load.
    var key: [UInt8]?
}

/// A session whose stored events no longer decode: a row edited by hand, or data sealed under another secret.
/// Nothing is recorded on it; REPLAY and `otpctl verify` show where its hash chain breaks.
public struct UnreadableSession: Error, Sendable, CustomStringConvertible {
    /// The stream.
    public var stream: String
    /// The first version that does not decode.
    public var version: Int
    public var description: String { "the stored event at version \(version) cannot be read" }
}

/// Runs commands against sessions: load, decide, append with the expected version, in one transaction.
///
/// A version conflict (another writer appended first) rolls back and decides again, a bounded number of
/// times; a reply is built only from a committed transaction.
public final class SessionService: Sendable {
    /// The database.
    public let pool: PGPool
    let secrets: Secrets
    let codes: SecretCodeBook
    let codec = EventCodec()
    let policies: PolicyBook
    let limits: Limits
    let pacing: Pacing
    /// Signalled after a transaction that queued a message.
    public let outboxSignal = Signal()
    /// Signalled after a transaction that set a deadline.
    public let timerSignal = Signal()

    static let maxConflictRetries = 8

    /// Creates the service.
    public init(pool: PGPool, secrets: Secrets, policies: PolicyBook, limits: Limits) {
        self.pool = pool
        self.secrets = secrets
        self.codes = SecretCodeBook(secrets)
        self.policies = policies
        self.limits = limits
        self.pacing = Pacing(limits: limits, secrets: secrets)
    }

    /// The stream id of a tenant's session.
    public static func stream(tenant: String, session: String) -> String { "\(tenant)/\(session)" }

    /// Issues a session: computes the request's fingerprint and plan, then runs ISSUE.
    public func issue(_ request: IssueRequest, tenant: String) async throws -> CommandOutcome {
        var request = request
        request.fingerprint = secrets.fingerprint([
            request.session,
            request.destinations.map { "\($0.channel.rawValue):\($0.address)" }.sorted().joined(separator: ","),
            request.policy ?? "", String(request.ttlSeconds), String(request.digits), String(request.maxAttempts),
            request.locale, request.app ?? "", request.prefer.map(\.rawValue).joined(separator: ","),
            request.carrier ?? "",
        ])
        let plan = try policies.plan(
            policyName: request.policy,
            destinations: request.destinations,
            prefer: request.prefer,
            carrier: request.carrier,
            pick: { Int.random(in: 0..<$0) }
        )
        return try await execute(.issue(request, plan), tenant: tenant, session: request.session)
    }

    /// Runs a command on a session; `also` runs in the same transaction after the append.
    ///
    /// With `loaded`, the first attempt decides on that state instead of reading the stream again; the append's
    /// expected version still catches any event appended since, and the retry then reads afresh.
    public func execute(
        _ command: SessionCommand,
        tenant: String,
        session: String,
        loaded: LoadedSession? = nil,
        also: (@Sendable (PGConnection, SessionState) throws -> Void)? = nil
    ) async throws -> CommandOutcome {
        let stream = Self.stream(tenant: tenant, session: session)
        var attempt = 0
        while true {
            let preloaded = attempt == 0 ? loaded.map { ($0.records, $0.state, $0.key) } : nil
            do {
                let outcome = try await pool.withConnection { conn in
                    try conn.transaction { conn in
                        try self.run(command, stream: stream, preloaded: preloaded, also: also, on: conn)
                    }
                }
                if outcome.decision.events.contains(where: Self.startsStep) { outboxSignal.signal() }
                if !outcome.decision.events.isEmpty { timerSignal.signal() }
                return outcome
            } catch let e as AppendError where e == .versionConflict && attempt < Self.maxConflictRetries {
                attempt += 1
            } catch let e as PGError where e.isUniqueViolation && attempt < Self.maxConflictRetries {
                attempt += 1  // two ISSUEs raced to create the session key: the loser decides again
            }
        }
    }

    /// Reads a session: its state and events, consistent with its stream.
    public func load(tenant: String, session: String) async throws -> LoadedSession {
        let stream = Self.stream(tenant: tenant, session: session)
        return try await pool.withConnection { conn in
            let (now, records, state, key) = try self.load(stream: stream, on: conn)
            return LoadedSession(state: state, records: records, now: now, key: key)
        }
    }

    /// Reads a session's stored events as they are, without decoding them (HISTORY, REPLAY: a tampered row
    /// must still be shown and reported).
    public func records(tenant: String, session: String) async throws -> (records: [EventRecord], now: Int64) {
        let stream = Self.stream(tenant: tenant, session: session)
        return try await pool.withConnection { conn in
            (try EventStore.read(stream: stream, on: conn), try EventStore.now(on: conn))
        }
    }

    /// Loads and folds a stream on a connection, in one round trip with the database clock and the session's
    /// data key (nil once erased).
    func load(stream: String, on conn: PGConnection) throws -> (now: Int64, [EventRecord], SessionState, [UInt8]?) {
        let rows = try conn.query(
            """
            SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS now, k.sealed_key,
                   e.stream_id, e.version, e.type, e.data::text AS data, e.at_ms, e.prev_hash, e.hash
            FROM (SELECT 1) AS one
            LEFT JOIN session_keys k ON k.stream_id = \(stream)
            LEFT JOIN events e ON e.stream_id = \(stream)
            ORDER BY e.version
            """
        ).rows
        let now = try rows[0].decode("now", as: Int64.self)
        guard try rows[0].decodeIfPresent("stream_id", as: String.self) != nil else {
            return (now, [], SessionState(), nil)
        }
        let records = try rows.map(EventStore.record)
        let key = try rows[0].decodeIfPresent("sealed_key", as: [UInt8].self).map {
            try secrets.openSessionKey($0, stream: stream)
        }
        return (now, records, try fold(records, key: key, stream: stream), key)
    }

    /// Decodes and folds stored records; a record that no longer decodes (edited by hand, or its key lost)
    /// is reported as `UnreadableSession`, not as a database failure.
    private func fold(_ records: [EventRecord], key: [UInt8]?, stream: String) throws -> SessionState {
        var events: [(event: SessionEvent, at: Int64)] = []
        events.reserveCapacity(records.count)
        for record in records {
            do {
                events.append((try codec.decode(record, key: key), record.at))
            } catch {
                throw UnreadableSession(stream: stream, version: record.version)
            }
        }
        return SessionDecider.fold(events)
    }

    /// Rebuilds a state from stored records alone, for REPLAY.
    public func fold(_ records: [EventRecord], tenant: String, session: String) async throws -> SessionState {
        let stream = Self.stream(tenant: tenant, session: session)
        let key = try await pool.withConnection { conn in try self.sessionKey(stream: stream, on: conn) }
        return try fold(records, key: key, stream: stream)
    }

    private func sessionKey(stream: String, on conn: PGConnection) throws -> [UInt8]? {
        let rows = try conn.query("SELECT sealed_key FROM session_keys WHERE stream_id = \(stream)").rows
        guard let row = rows.first else { return nil }  // erased: destinations are gone, history stays
        return try secrets.openSessionKey(try row.decode("sealed_key", as: [UInt8].self), stream: stream)
    }

    private func run(
        _ command: SessionCommand,
        stream: String,
        preloaded: ([EventRecord], SessionState, [UInt8]?)?,
        also: (@Sendable (PGConnection, SessionState) throws -> Void)?,
        on conn: PGConnection
    ) throws -> CommandOutcome {
        let now: Int64
        let (records, state, loadedKey): ([EventRecord], SessionState, [UInt8]?)
        if let preloaded {
            now = try EventStore.now(on: conn)
            (records, state, loadedKey) = preloaded
        } else {
            (now, records, state, loadedKey) = try load(stream: stream, on: conn)
        }
        var key = loadedKey
        var command = command
        if case .issue(let request, var plan) = command, state.issued == nil {
            // Against SMS pumping: a new session in a country over its ceiling gets no SMS or voice step where
            // it has another channel (a repeated ISSUE of an existing session is answered as it was).
            let skip = try pacing.pumpingChannels(request.destinations, now: now, on: conn)
            if !skip.isEmpty {
                plan.steps.removeAll { skip.contains($0.channel) }
                guard !plan.steps.isEmpty else { throw Rejection.rateLimited(retryAfterSeconds: 60) }
                command = .issue(request, plan)
            }
        }
        let context = DecisionContext(now: now, stream: stream, codes: codes, minGapMs: limits.minGapPerChannelMs)
        let decision = try SessionDecider.decide(command, state: state, context: context)
        var next = state
        if !decision.events.isEmpty {
            if case .issued = decision.events[0] {
                let fresh = try secrets.newSessionKey(stream: stream)
                try conn.query("INSERT INTO session_keys (stream_id, sealed_key) VALUES (\(stream), \(fresh.sealed))")
                key = fresh.key
            }
            // Each event that starts a step queues its message, keyed by the event's version (the token).
            var queued: [(token: Int, step: Int, channel: Channel)] = []
            for (i, event) in decision.events.enumerated() {
                next = SessionDecider.evolve(next, event, at: now)
                if Self.startsStep(event), let step = next.currentStep {
                    queued.append((state.version + i + 1, next.step, step.channel))
                }
            }
            if let tenant = Self.split(stream)?.tenant {
                try pacing.apply(command, events: decision.events, after: next, tenant: tenant, now: now, on: conn)
            }
            let stored = try decision.events.map { try codec.encode($0, stream: stream, key: key) }
            try EventStore.append(
                stored,
                to: stream,
                expectedVersion: state.version,
                headHash: records.last?.hash ?? HashChain.genesis,
                at: now,
                on: conn
            )
            for q in queued {
                try conn.query(
                    """
                    INSERT INTO outbox (stream_id, token, step, channel)
                    VALUES (\(stream), \(q.token), \(q.step), \(q.channel.rawValue))
                    """
                )
            }
        }
        try syncTimers(stream: stream, from: state.timers, to: next.timers, on: conn)
        try also?(conn, next)
        return CommandOutcome(state: next, decision: decision, now: now)
    }

    /// Writes the deadlines that changed between two states.
    private func syncTimers(stream: String, from old: [TimerSpec], to new: [TimerSpec], on conn: PGConnection) throws {
        guard old != new else { return }
        for t in new where !old.contains(t) {
            try conn.query(
                """
                INSERT INTO timers (stream_id, name, due_ms, token) VALUES (\(stream), \(t.name), \(t.dueAt), \(t.token))
                ON CONFLICT (stream_id, name)
                DO UPDATE SET due_ms = EXCLUDED.due_ms, token = EXCLUDED.token, leased_until_ms = NULL
                """
            )
        }
        for t in old where !new.contains(where: { $0.name == t.name }) {
            try conn.query("DELETE FROM timers WHERE stream_id = \(stream) AND name = \(t.name)")
        }
    }

    /// Splits a stream id into tenant and session.
    static func split(_ stream: String) -> (tenant: String, session: String)? {
        guard let slash = stream.firstIndex(of: "/") else { return nil }
        return (String(stream[..<slash]), String(stream[stream.index(after: slash)...]))
    }

    /// Whether an event queues a message (the first step, or a move to a step).
    static func startsStep(_ event: SessionEvent) -> Bool {
        switch event {
        case .issued, .escalated: true
        default: false
        }
    }
}
