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
    }

    /// Queues the message of the step started at `token`.
    func enqueue(_ stream: StreamID, token: Int, step: Int, channel: DeliveryChannel, on conn: PGConnection) throws {
        try conn.query(
            """
            INSERT INTO outbox (stream_id, token, step, channel)
            VALUES (\(stream.text), \(token), \(step), \(channel.rawValue))
            """
        )
    }

    /// Claims up to `limit` due rows for `leaseSeconds`.
    func claim(limit: Int, leaseSeconds: Int, on conn: PGConnection) throws -> [Claim] {
        let rows = try conn.query(
            """
            UPDATE outbox SET leased_until = now() + make_interval(secs => \(leaseSeconds)), attempts = attempts + 1
            WHERE (stream_id, token) IN (
                SELECT stream_id, token FROM outbox
                WHERE available_at <= now() AND (leased_until IS NULL OR leased_until < now())
                ORDER BY available_at LIMIT \(limit)
                FOR UPDATE SKIP LOCKED)
            RETURNING stream_id, token, channel, attempts
            """
        ).rows
        return try rows.compactMap { row in
            guard let stream = StreamID(text: try row.decode("stream_id", as: String.self)),
                let channel = DeliveryChannel(rawValue: try row.decode("channel", as: String.self))
            else { return nil }
            return Claim(
                stream: stream,
                token: try row.decode("token"),
                channel: channel,
                attempts: try row.decode("attempts")
            )
        }
    }

    /// Removes a row whose message was handed off, refused, or is no longer wanted.
    func complete(_ claim: Claim, on conn: PGConnection) throws {
        try conn.query("DELETE FROM outbox WHERE stream_id = \(claim.stream.text) AND token = \(claim.token)")
    }

    /// Releases a row to be claimed again after `delayMs` (a transient failure's backoff).
    func retry(_ claim: Claim, afterMs delayMs: Int, on conn: PGConnection) throws {
        try conn.query(
            """
            UPDATE outbox SET leased_until = NULL, available_at = now() + make_interval(secs => \(Double(delayMs) / 1000))
            WHERE stream_id = \(claim.stream.text) AND token = \(claim.token)
            """
        )
    }

    /// Keeps a row from being claimed for `seconds` (its session cannot be read; retrying cannot help soon).
    func park(_ claim: Claim, seconds: Int, on conn: PGConnection) throws {
        try conn.query(
            """
            UPDATE outbox SET leased_until = now() + make_interval(secs => \(seconds))
            WHERE stream_id = \(claim.stream.text) AND token = \(claim.token)
            """
        )
    }

    /// A stable, opaque id for the message of the step started at `token`: the provider's idempotency key.
    public static func messageId(stream: StreamID, token: Int) -> String {
        let digest = SHA256.hash(data: Array("\(stream.text)#\(token)".utf8))
        return "m_" + Hex.encode(digest.prefix(12))
    }
}
