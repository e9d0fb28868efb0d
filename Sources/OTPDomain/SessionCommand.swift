/// What a caller asks of an ISSUE, already parsed and validated by the wire layer.
public struct IssueRequest: Sendable, Hashable {
    public var session: String
    public var destinations: [Destination]
    public var policy: String?
    public var ttlSeconds: Int
    public var digits: Int
    public var maxAttempts: Int
    public var locale: String
    public var app: String?
    public var prefer: [Channel]
    public var carrier: String?
    /// A keyed digest of all the arguments, so a repeated ISSUE can be told from a conflicting one.
    public var fingerprint: String

    /// Creates a request with the protocol's defaults.
    public init(
        session: String,
        destinations: [Destination],
        policy: String? = nil,
        ttlSeconds: Int = 600,
        digits: Int = 6,
        maxAttempts: Int = 5,
        locale: String = "en",
        app: String? = nil,
        prefer: [Channel] = [],
        carrier: String? = nil,
        fingerprint: String = ""
    ) {
        self.session = session
        self.destinations = destinations
        self.policy = policy
        self.ttlSeconds = ttlSeconds
        self.digits = digits
        self.maxAttempts = maxAttempts
        self.locale = locale
        self.app = app
        self.prefer = prefer
        self.carrier = carrier
        self.fingerprint = fingerprint
    }
}

/// A command addressed to one OTP session.
public enum SessionCommand: Sendable, Hashable {
    /// Start the session with a plan chosen by `PolicyBook.plan`.
    case issue(IssueRequest, Plan)
    /// Check a code entered by the user.
    case verify(code: String)
    /// The user did not get the code: move to the next step.
    case resend
    /// A receipt from a channel gateway or provider callback.
    case recordReceipt(channel: Channel, outcome: ReceiptOutcome, detail: String?)
    /// Stop the session.
    case cancel
    /// The dispatcher handed the message of the step started at version `token` to a provider.
    case recordHandOff(token: Int, messageId: String, provider: String, providerRef: String?)
    /// The provider refused the message of the step started at version `token`.
    case recordProviderFailure(token: Int, reason: String, permanent: Bool)
    /// The wait of the step whose message was sent at version `token` has passed.
    case timeOutStep(token: Int)
    /// The session's TTL has passed.
    case expire
}

/// The answer to VERIFY.
public enum VerifyResult: String, Sendable, Hashable {
    case verified
    case mismatch
    case locked
    case expired
    case alreadyVerified = "already_verified"
    case cancelled
}

/// What `decide` returns: the events to append and, for VERIFY, the result.
public struct Decision: Sendable, Hashable {
    public var events: [SessionEvent]
    public var verifyResult: VerifyResult?
    public init(events: [SessionEvent], verifyResult: VerifyResult? = nil) {
        self.events = events
        self.verifyResult = verifyResult
    }
}

/// Derives and checks codes; injected so the domain has no secret, no randomness and no crypto.
public protocol CodeBook: Sendable {
    /// A fresh random seed from the system CSPRNG.
    func newSeed() -> String
    /// The code a seed stands for, under the server secret.
    func code(seed: String, digits: Int, stream: String) -> String
    /// The keyed digest (HMAC) of a code for a stream, as bytes.
    func digest(code: String, stream: String) -> [UInt8]
}

/// Everything `decide` needs from the outside world, injected.
public struct DecisionContext: Sendable {
    /// The current time (epoch milliseconds, from the database clock).
    public var now: Int64
    /// The stream id of the session (tenant and session id), used to bind codes to it.
    public var stream: String
    /// The code deriver and hasher.
    public var codes: any CodeBook
    /// The minimum gap between two sends on one channel, for a repeated last step.
    public var minGapMs: Int64

    /// Creates a context.
    public init(now: Int64, stream: String, codes: any CodeBook, minGapMs: Int64 = 30_000) {
        self.now = now
        self.stream = stream
        self.codes = codes
        self.minGapMs = minGapMs
    }
}
