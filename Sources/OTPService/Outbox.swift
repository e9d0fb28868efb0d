import Crypto
import OTPDomain
import Postgres

/// The `outbox` table's owner: a row per step whose message is still to be handed to a provider.
///
/// A step that starts queues its row in the command's transaction (`enqueue`); the dispatcher claims rows with
/// a lease (`FOR UPDATE SKIP LOCKED`, so instances never take the same row), then completes, retries or parks
/// each. Every statement on the table is here; each runs on a connection the caller holds, so it composes into
/// the caller's transaction.
public struct Outbox: Sendable {
    /// Signalled after a transaction that queued a message, so a local dispatcher wakes at once.
    public let signal = Signal()

    /// Creates the table's owner.
    public init() {}

    /// A claimed row: the message of the step started at version `token` of `stream`.
    public struct Claim: Sendable, Hashable {
        /// The session's stream.
        public var stream: StreamID
        /// The version of the event that started the step (the message's token).
        public var token: Int
        /// The step's channel.
        public var channel: DeliveryChannel
        /// How many times the row was claimed, this claim included.
        public var attempts: Int
        /// This claim's fencing token: every later write to the row names it.
        public var lease: Int64
        /// Whether an earlier holder handed the message to the provider without recording what happened.
        public var wasInFlight: Bool
        /// Whether an earlier try of this provider may have reached it (a timeout after the request went
        /// out): the step may be retried with it, never handed to another provider.
        public var maybeSent = false
    }

    /// Queues the message of the step started at `token`.
    func enqueue(_ stream: StreamID, token: Int, step: Int, channel: DeliveryChannel, into batch: inout PGBatch) {
        batch.add(
            """
            INSERT INTO outbox (stream_id, token, step, channel)
            VALUES (\(stream.text), \(token), \(step), \(channel.rawValue))
            """
        )
    }

    /// Claims up to `limit` due rows of one channel for `leaseSeconds`, each under a new lease id.
    func claim(_ channel: DeliveryChannel, limit: Int, leaseSeconds: Int, on conn: PGConnection) throws -> [Claim] {
        try claim([channel: limit], leaseSeconds: leaseSeconds, on: conn)
    }

    /// Claims, in one statement, up to `limits[channel]` due rows of each channel for `leaseSeconds`, each under
    /// a new lease id.
    ///
    /// Each lane reads at most `ceiling` rows (the largest limit rounded up to a power of two, written into the
    /// SQL) and keeps its first `n`. A limit that is a parameter is unknown to the planner of a prepared
    /// statement, which then assumed a tenth of the table per lane and chose a sort or a hash join over the
    /// whole outbox: 200 ms a claim with 117,000 rows queued, against 1 ms with the limit written in.
    func claim(_ limits: [DeliveryChannel: Int], leaseSeconds: Int, on conn: PGConnection) throws -> [Claim] {
        let lanes = limits.filter { $0.value > 0 }.sorted { $0.key < $1.key }
        guard let most = lanes.map(\.value).max() else { return [] }
        let ceiling = 1 << (Int.bitWidth - (most - 1).leadingZeroBitCount)  // the power of two ≥ most
        let values = lanes.indices.map { "($\(2 * $0 + 2)::text, $\(2 * $0 + 3)::integer)" }.joined(separator: ", ")
        let rows = try conn.query(
            PGQuery(
                unsafeSQL: """
                    WITH lanes(channel, n) AS (VALUES \(values))
                    UPDATE outbox o SET leased_until = now() + make_interval(secs => $1::integer),
                        attempts = o.attempts + 1, lease_id = nextval('outbox_lease_seq')
                    FROM (
                        SELECT ranked.stream_id, ranked.token FROM (
                            SELECT due.stream_id, due.token, lanes.n,
                                   row_number() OVER (PARTITION BY lanes.channel ORDER BY due.available_at) AS rank
                            FROM lanes CROSS JOIN LATERAL (
                                SELECT stream_id, token, available_at FROM outbox
                                WHERE channel = lanes.channel AND available_at <= now()
                                  AND (leased_until IS NULL OR leased_until < now())
                                ORDER BY available_at LIMIT \(ceiling)
                                FOR UPDATE SKIP LOCKED) AS due
                        ) AS ranked WHERE ranked.rank <= ranked.n
                    ) AS picked
                    WHERE o.stream_id = picked.stream_id AND o.token = picked.token
                    RETURNING o.stream_id, o.token, o.channel, o.attempts, o.lease_id, o.in_flight, o.maybe_sent
                    """,
                parameters: [leaseSeconds.pgText] + lanes.flatMap { [$0.key.rawValue.pgText, $0.value.pgText] }
            )
        ).rows
        return try rows.compactMap { row in
            guard let stream = StreamID(text: try row.decode("stream_id", as: String.self)),
                let channel = DeliveryChannel(rawValue: try row.decode("channel", as: String.self))
            else { return nil }
            return Claim(
                stream: stream,
                token: try row.decode("token"),
                channel: channel,
                attempts: try row.decode("attempts"),
                lease: try row.decode("lease_id"),
                wasInFlight: try row.decode("in_flight"),
                maybeSent: try row.decode("maybe_sent")
            )
        }
    }

    /// Marks the row as handed to the provider, just before the call, and starts its lease again for the call
    /// and its record; false when the row is gone (the session no longer wants it) or the lease ran out (another
    /// instance may hold it now), and then the message must not be sent.
    func beginSend(_ claim: Claim, leaseSeconds: Int, on conn: PGConnection) throws -> Bool {
        try conn.query(
            """
            UPDATE outbox SET in_flight = true, leased_until = now() + make_interval(secs => \(leaseSeconds))
            WHERE stream_id = \(claim.stream.text) AND token = \(claim.token) AND lease_id = \(claim.lease)
              AND leased_until > now()
            """
        ).affectedRows == 1
    }

    /// Removes the row of a step whose message the session no longer wants (cancelled, verified, expired,
    /// erased, superseded), whoever holds it, in the transaction that decided so: a dispatcher that has not
    /// yet begun the send then finds no row and sends nothing.
    func withdraw(_ stream: StreamID, token: Int, into batch: inout PGBatch) {
        batch.add("DELETE FROM outbox WHERE stream_id = \(stream.text) AND token = \(token)")
    }

    /// Removes a row whose message was handed off, refused, or is no longer wanted, if this claim still holds it.
    func complete(_ claim: Claim, on conn: PGConnection) throws {
        try conn.query(
            """
            DELETE FROM outbox
            WHERE stream_id = \(claim.stream.text) AND token = \(claim.token) AND lease_id = \(claim.lease)
            """
        )
    }

    /// Releases a row to be claimed again after `delayMs` (the provider said the send failed, so it may be sent
    /// again), if this claim still holds it; `maybeSent` remembers that this try may have reached the provider.
    func retry(_ claim: Claim, afterMs delayMs: Int, maybeSent: Bool = false, on conn: PGConnection) throws {
        try conn.query(
            """
            UPDATE outbox SET leased_until = NULL, in_flight = false, maybe_sent = maybe_sent OR \(maybeSent),
                available_at = now() + make_interval(secs => \(Double(delayMs) / 1000))
            WHERE stream_id = \(claim.stream.text) AND token = \(claim.token) AND lease_id = \(claim.lease)
            """
        )
    }

    /// Releases a row at once for the channel's next provider (the one whose circuit let it fail handed the
    /// step on), its tries counted afresh, if this claim still holds it.
    func handOn(_ claim: Claim, on conn: PGConnection) throws {
        try conn.query(
            """
            UPDATE outbox SET leased_until = NULL, in_flight = false, attempts = 0, maybe_sent = false,
                available_at = now()
            WHERE stream_id = \(claim.stream.text) AND token = \(claim.token) AND lease_id = \(claim.lease)
            """
        )
    }

    /// Keeps a row from being claimed for `seconds` (its session cannot be read; retrying cannot help soon).
    func park(_ claim: Claim, seconds: Int, on conn: PGConnection) throws {
        try conn.query(
            """
            UPDATE outbox SET leased_until = now() + make_interval(secs => \(seconds))
            WHERE stream_id = \(claim.stream.text) AND token = \(claim.token) AND lease_id = \(claim.lease)
            """
        )
    }
}
