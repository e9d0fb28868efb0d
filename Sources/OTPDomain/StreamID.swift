/// The identity of one session's event stream: the tenant that owns it and the caller's session id.
///
/// It travels typed from the wire to the store; `text` is the one place its stored form is made, and
/// `init(text:)` the one place that form is read back (outbox and timer rows name their stream by it).
public struct StreamID: Sendable, Hashable, CustomStringConvertible {
    /// The tenant that issued the session (never contains `/`: the configuration refuses such names).
    public var tenant: String
    /// The caller's session id.
    public var session: String

    /// Creates a stream id.
    public init(tenant: String, session: String) {
        self.tenant = tenant
        self.session = session
    }

    /// Reads the stored form `tenant/session`; nil when it has no `/`.
    public init?(text: some StringProtocol) {
        guard let slash = text.firstIndex(of: "/") else { return nil }
        self.init(tenant: String(text[..<slash]), session: String(text[text.index(after: slash)...]))
    }

    /// The stored form: `tenant/session`.
    public var text: String { "\(tenant)/\(session)" }

    public var description: String { text }
}
