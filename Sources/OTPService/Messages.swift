import OTPDomain
import Postgres

/// The `messages` table's owner: which session and step each message handed to a provider belongs to.
///
/// A provider's receipt names a message by otpd's message id (the webhook driver's gateways) or by the
/// provider's own reference (Twilio's `MessageSid`), and an e-mail's tracking URL by an unguessable token; each
/// is looked up here, so nothing is ever parsed out of an id. `register` runs just before the provider call,
/// `attach` in the transaction that records `sent`.
public struct Messages: Sendable {
    /// Creates the table's owner.
    public init() {}

    /// A message: its session, the token (version) of the event that started its step, and its channel.
    public struct Row: Sendable, Hashable {
        /// otpd's message id.
        public var messageId: String
        /// The session's stream.
        public var stream: StreamID
        /// The version of the event that started the step.
        public var token: Int
        /// The step's channel.
        public var channel: DeliveryChannel
    }

    /// Records a message about to be handed to its provider (again, on a retry: the row stays as it was).
    func register(
        messageId: String,
        stream: StreamID,
        token: Int,
        channel: DeliveryChannel,
        tracking: String,
        on conn: PGConnection
    ) throws {
        try conn.query(
            """
            INSERT INTO messages (message_id, stream_id, token, channel, tracking)
            VALUES (\(messageId), \(stream.text), \(token), \(channel.rawValue), \(tracking))
            ON CONFLICT (message_id) DO NOTHING
            """
        )
    }

    /// Records the provider's reference of an accepted message.
    func attach(providerRef: String, to messageId: String, on conn: PGConnection) throws {
        try conn.query("UPDATE messages SET provider_ref = \(providerRef) WHERE message_id = \(messageId)")
    }

    /// Removes a session's rows (it was erased).
    func forget(_ stream: StreamID, into batch: inout PGBatch) {
        batch.add("DELETE FROM messages WHERE stream_id = \(stream.text)")
    }

    /// The message with otpd's id `messageId`.
    public func find(messageId: String, on conn: PGConnection) throws -> Row? {
        try rows(
            conn.query(
                "SELECT message_id, stream_id, token, channel FROM messages WHERE message_id = \(messageId)"
            )
        ).first
    }

    /// The newest message of `channel` the provider named `providerRef`.
    public func find(providerRef: String, channel: DeliveryChannel, on conn: PGConnection) throws -> Row? {
        try rows(
            conn.query(
                """
                SELECT message_id, stream_id, token, channel FROM messages
                WHERE channel = \(channel.rawValue) AND provider_ref = \(providerRef)
                ORDER BY created_at DESC LIMIT 1
                """
            )
        ).first
    }

    /// The message whose tracking token is `tracking`.
    public func find(tracking: String, on conn: PGConnection) throws -> Row? {
        try rows(
            conn.query("SELECT message_id, stream_id, token, channel FROM messages WHERE tracking = \(tracking)")
        ).first
    }

    /// Removes up to `limit` rows older than `days`; returns how many.
    func sweep(olderThanDays days: Int, limit: Int, on conn: PGConnection) throws -> Int {
        try conn.query(
            """
            DELETE FROM messages WHERE message_id IN (
                SELECT message_id FROM messages WHERE created_at < now() - make_interval(days => \(days))
                LIMIT \(limit))
            """
        ).affectedRows
    }

    private func rows(_ result: PGResult) throws -> [Row] {
        try result.rows.compactMap { row in
            guard let stream = StreamID(text: try row.decode("stream_id", as: String.self)),
                let channel = DeliveryChannel(rawValue: try row.decode("channel", as: String.self))
            else { return nil }
            return Row(
                messageId: try row.decode("message_id"),
                stream: stream,
                token: try row.decode("token"),
                channel: channel
            )
        }
    }
}
