import OTPDomain
import Postgres

/// The `timers` table's owner: the deadlines sessions wait for, derived from their state.
///
/// A command's transaction writes the deadlines that changed (`sync`); the scheduler claims due rows with a
/// short lease, fires each, and completes or parks it. Every statement on the table is here, each on a
/// connection the caller holds.
public struct Timers: Sendable {
    /// Signalled after a transaction that may have set a deadline, so a local scheduler looks again at once.
    public let signal = Signal()

    /// Creates the table's owner.
    public init() {}

    /// A claimed deadline.
    public struct Claim: Sendable, Hashable {
        /// The session's stream.
        public var stream: StreamID
        /// The deadline as the state derived it.
        public var timer: TimerSpec
    }

    /// Writes the deadlines that changed between two states of a session.
    func sync(_ stream: StreamID, from old: [TimerSpec], to new: [TimerSpec], into batch: inout PGBatch) {
        guard old != new else { return }
        for t in new where !old.contains(t) {
            batch.add(
                """
                INSERT INTO timers (stream_id, name, due_ms, token) VALUES (\(stream.text), \(t.name), \(t.dueAt), \(t.token))
                ON CONFLICT (stream_id, name)
                DO UPDATE SET due_ms = EXCLUDED.due_ms, token = EXCLUDED.token, leased_until_ms = NULL
                """
            )
        }
        for t in old where !new.contains(where: { $0.name == t.name }) {
            batch.add("DELETE FROM timers WHERE stream_id = \(stream.text) AND name = \(t.name)")
        }
    }

    /// Claims up to `limit` deadlines due at `now` for `leaseMs`.
    func claimDue(now: Int64, leaseMs: Int64, limit: Int, on conn: PGConnection) throws -> [Claim] {
        let rows = try conn.query(
            """
            UPDATE timers SET leased_until_ms = \(now + leaseMs)
            WHERE (stream_id, name) IN (
                SELECT stream_id, name FROM timers
                WHERE due_ms <= \(now) AND (leased_until_ms IS NULL OR leased_until_ms < \(now))
                ORDER BY due_ms LIMIT \(limit)
                FOR UPDATE SKIP LOCKED)
            RETURNING stream_id, name, token, due_ms
            """
        ).rows
        return try rows.compactMap { row in
            guard let stream = StreamID(text: try row.decode("stream_id", as: String.self)) else { return nil }
            let timer = TimerSpec(
                name: try row.decode("name"),
                dueAt: try row.decode("due_ms"),
                token: try row.decode("token")
            )
            return Claim(stream: stream, timer: timer)
        }
    }

    /// How many deadlines the table holds (every instance's, leased or not).
    func count(on conn: PGConnection) throws -> Int {
        Int(try conn.query("SELECT count(*) AS n FROM timers").rows[0].decode("n", as: Int64.self))
    }

    /// The nearest deadline after `now` (by the index); due rows leased by another instance are its to fire.
    func nextDue(after now: Int64, on conn: PGConnection) throws -> Int64? {
        try conn.query("SELECT due_ms FROM timers WHERE due_ms > \(now) ORDER BY due_ms LIMIT 1").rows.first?
            .decodeIfPresent("due_ms", as: Int64.self)
    }

    /// Removes a fired deadline, unless the firing's own append replaced it with another.
    func complete(_ claim: Claim, on conn: PGConnection) throws {
        try conn.query(
            """
            DELETE FROM timers WHERE stream_id = \(claim.stream.text) AND name = \(claim.timer.name)
              AND token = \(claim.timer.token) AND due_ms = \(claim.timer.dueAt)
            """
        )
    }

    /// Keeps a deadline from being claimed for another `ms` (its session cannot be read).
    func park(_ claim: Claim, ms: Int64, on conn: PGConnection) throws {
        try conn.query(
            """
            UPDATE timers SET leased_until_ms = leased_until_ms + \(ms)
            WHERE stream_id = \(claim.stream.text) AND name = \(claim.timer.name) AND token = \(claim.timer.token)
            """
        )
    }
}
