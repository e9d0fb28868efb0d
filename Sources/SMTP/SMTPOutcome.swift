/// What became of one mail.
///
/// The strings are recorded in otpd's event store, so they name only the stage, the reply code and the enhanced
/// status code (`SMTP 550 5.1.1 at RCPT`) or what went wrong (`timeout waiting for the greeting`): never the
/// recipient, the message, the password or the server's free text, which often echoes the address.
public enum SMTPOutcome: Sendable, Equatable {
    /// The server took the message (2xx after the final dot); the queue id from its reply when it gave one in a
    /// known form (`queued as X`, `id=X`), else "".
    case accepted(String)
    /// Worth retrying: a 4xx reply, a timeout, a refused or lost connection, a TLS handshake or certificate
    /// failure, a protocol violation by the server.
    case transient(String)
    /// Not worth retrying: a 5xx reply, STARTTLS required but not offered, AUTH configured but neither PLAIN nor
    /// LOGIN offered, a bad address or configuration.
    case permanent(String)
    /// The whole message was sent and its answer never came (a timeout or a lost connection after the final
    /// dot): the server may deliver it, so sending it again could deliver it twice.
    case unknown(String)
}
