import EventStore
import OTPDomain
import Postgres

/// A session as read in one transaction: its state, its stored events, its data key and the database time.
public struct LoadedSession: Sendable {
    /// The folded state.
    public var state: SessionState
    /// The stored events, oldest first.
    public var records: [EventRecord]
    /// The database clock at the read (Unix epoch milliseconds).
    public var now: Int64
    /// The session's data key (nil before ISSUE and once erased), for a command that starts from this load.
    var key: [UInt8]?
}

/// A session's stored events as they are, with its recorded head and the database clock.
public struct StoredStream: Sendable {
    /// The stored events, oldest first, not decoded.
    public var records: [EventRecord]
    /// The head the last append recorded, or nil when none was (or it was deleted).
    public var head: StreamHead?
    /// The database clock at the read (Unix epoch milliseconds).
    public var now: Int64
}

/// A session whose stored events no longer decode: a row edited by hand, or data sealed under another secret.
/// Nothing is recorded on it; REPLAY and `otpctl verify` show where its hash chain breaks.
public struct UnreadableSession: Error, Sendable, Equatable, CustomStringConvertible {
    /// The stream.
    public var stream: StreamID
    /// The first version that does not decode.
    public var version: Int
    public var description: String { "the stored event at version \(version) cannot be read" }
}

/// What a commit wrote besides the events, so the caller can wake the local dispatcher and scheduler.
struct CommitEffects {
    /// Messages queued in the outbox.
    var queuedMessages = 0
    /// Whether the session's deadlines changed.
    var timersChanged = false
    /// The session as it stands after the commit, for `SessionStore.memo` once the transaction committed.
    var session: SessionMemo.Entry?
}

/// Sessions in PostgreSQL: the owner of `session_keys`, and the one place that reads a session and writes a
/// decision (its key, its events through `EventStore`, its outbox rows, its deadlines).
///
/// Like `EventStore`, every function runs synchronously on a connection the caller holds, so the caller
/// composes a load, a decision and its commit into one transaction.
public struct SessionStore: Sendable {
    let secrets: Secrets
    let codec = EventCodec()
    /// Decoding and folding stored events, and checking their chain: shared with REPLAY and `otpctl replay`.
    let replay: SessionReplay
    /// The outbox, written when a decision starts a step.
    public let outbox: Outbox
    /// The deadlines, written when a decision changes them.
    public let timers: Timers
    /// The messages handed to providers (a session's rows go when it is erased).
    public let messages: Messages
    /// Signalled after every commit that appended events: wakes this instance's projector and live feed at once.
    public let appended = SignalFan()
    /// The sessions this instance read or wrote lately, so a load folds again only what changed elsewhere.
    let memo: SessionMemo

    /// Creates the store.
    public init(
        secrets: Secrets,
        outbox: Outbox = Outbox(),
        timers: Timers = Timers(),
        messages: Messages = Messages(),
        memoCapacity: Int = 4_096
    ) {
        self.secrets = secrets
        self.memo = SessionMemo(capacity: memoCapacity)
        self.replay = SessionReplay(secrets: secrets)
        self.outbox = outbox
        self.timers = timers
        self.messages = messages
    }

    /// Reads and folds a session with the database clock and its data key; rows the memo folded before are not
    /// decoded again.
    func load(_ stream: StreamID, on conn: PGConnection) throws -> LoadedSession {
        let (records, head, now) = try EventStore.readWithHead(stream: stream.text, on: conn)
        // A stream that no longer reaches its recorded head lost its last events (deleted by hand): nothing may
        // be decided on what is left, or the deletion would give back what those events took (attempts).
        if records.last?.version != head?.version {
            throw UnreadableSession(stream: stream, version: min(records.count, head?.version ?? records.count) + 1)
        }
        if let known = memo.entry(stream.text, matching: records) {
            return LoadedSession(state: known.state, records: records, now: now, key: known.key)
        }
        // A stream without events has no key yet: a new ISSUE reads nothing more (its key is made at the commit).
        var key: [UInt8]? = nil
        if !records.isEmpty,
            let row = try conn.query("SELECT sealed_key FROM session_keys WHERE stream_id = \(stream.text)").rows.first
        {
            key = try secrets.openSessionKey(try row.decode("sealed_key", as: [UInt8].self), stream: stream.text)
        }
        let state = try fold(records, key: key, stream: stream)
        if !records.isEmpty { memo.remember(stream.text, .init(records: records, key: key, state: state)) }
        return LoadedSession(state: state, records: records, now: now, key: key)
    }

    /// Reads a session's stored events as they are, without decoding them (HISTORY, REPLAY: a tampered row
    /// must still be shown and reported), with its recorded head and the database clock.
    func records(_ stream: StreamID, on conn: PGConnection) throws -> StoredStream {
        let (records, head, now) = try EventStore.readWithHead(stream: stream.text, on: conn)
        return StoredStream(records: records, head: head, now: now)
    }

    /// The first version where a stored stream's keyed chain or head does not verify; nil when intact.
    public func firstBrokenVersion(_ stored: StoredStream) -> Int? {
        replay.firstBrokenVersion(stored.records, head: stored.head)
    }

    /// Rebuilds a state from stored records alone (REPLAY), opening destinations with the session's key.
    func fold(_ records: [EventRecord], stream: StreamID, on conn: PGConnection) throws -> SessionState {
        let sealed = try conn.query("SELECT sealed_key FROM session_keys WHERE stream_id = \(stream.text)").rows.first
        // No key: erased; destinations are gone, history stays.
        return try replay.fold(records, sealedKey: try sealed?.decode("sealed_key"), stream: stream)
    }

    /// Decodes and folds stored records; a record that no longer decodes (edited by hand, or its key lost)
    /// is reported as `UnreadableSession`, not as a database failure.
    private func fold(_ records: [EventRecord], key: [UInt8]?, stream: StreamID) throws -> SessionState {
        try replay.fold(records, key: key, stream: stream)
    }

    /// Writes one decision: the session's key when it is issued, the events after `session`'s version, an outbox
    /// row for each step they start, and the deadlines that changed, all in one round trip (`PGBatch`). Returns
    /// the state after the events.
    ///
    /// Throws `AppendError.versionConflict` when another writer appended first; roll the transaction back then.
    func commit(
        _ events: [SessionEvent],
        to stream: StreamID,
        after session: LoadedSession,
        now: Int64,
        on conn: PGConnection
    ) throws -> (next: SessionState, effects: CommitEffects) {
        var effects = CommitEffects()
        let state = session.state
        guard !events.isEmpty else { return (state, effects) }
        var key = session.key
        // None of these writes decides anything for the next: they go out together, and a version conflict the
        // append's row count shows is thrown once all have run (the caller rolls the transaction back).
        var batch = PGBatch()
        if case .issued = events[0] {
            let fresh = try secrets.newSessionKey(stream: stream.text)
            batch.add("INSERT INTO session_keys (stream_id, sealed_key) VALUES (\(stream.text), \(fresh.sealed))")
            key = fresh.key
        }
        let written = EventStore.append(
            try events.map { try codec.encode($0, stream: stream.text, key: key) },
            to: stream.text,
            expectedVersion: state.version,
            headHash: session.records.last?.hash ?? HashChain.genesis,
            at: now,
            key: secrets.chainKey,
            into: &batch
        )
        if events.contains(.erased) {
            // Crypto-shredding: without this key nothing it sealed (destinations, seed, fingerprint) can be read.
            batch.add("DELETE FROM session_keys WHERE stream_id = \(stream.text)")
            messages.forget(stream, into: &batch)
        }
        // Each event that starts a step queues its message, keyed by the event's version (the token).
        var next = state
        for event in events {
            next = SessionDecider.evolve(next, event, at: now)
            if event.startsStep, let step = next.currentStep {
                outbox.enqueue(stream, token: next.version, step: next.step, channel: step.channel, into: &batch)
                effects.queuedMessages += 1
            }
        }
        // The message the session was waiting to hand off, if this decision means it must not go out any more
        // (a hand-off or a provider failure is recorded by the dispatcher, which removes the row itself).
        let pending = state.stepStartedVersion
        let recordsTheSend = events.contains {
            if case .sent = $0 { true } else if case .deliveryFailed = $0 { true } else { false }
        }
        if !recordsTheSend && state.awaitsHandOff(token: pending, now: now)
            && !next.awaitsHandOff(token: pending, now: now)
        {
            outbox.withdraw(stream, token: pending, into: &batch)
        }
        if state.timers != next.timers {
            timers.sync(stream, from: state.timers, to: next.timers, into: &batch)
            effects.timersChanged = true
        }
        try conn.run(batch)
        // What the next load will read back, byte for byte; an erased session's key is gone with its row.
        effects.session = .init(
            records: session.records + written,
            key: events.contains(.erased) ? nil : key,
            state: next
        )
        return (next, effects)
    }
}

extension SessionEvent {
    /// Whether the event queues a message: the first step, or a move to a step.
    var startsStep: Bool {
        switch self {
        case .issued, .escalated: true
        default: false
        }
    }
}
