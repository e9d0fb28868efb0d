/// A command addressed to one OTP session.
public enum SessionCommand: Sendable, Hashable {
    /// Start the session: plan its steps and derive its code.
    case issue(IssueRequest)
    /// Check a code entered by the user.
    case verify(code: String)
    /// The user did not get the code: move to the next step.
    case resend
    /// A receipt from a channel gateway or provider callback.
    /// `token`, when the receipt names its message (a provider callback found through the message's id), is the
    /// version of the event that started that message's step; nil: the latest step on `channel` (RESP's RECEIPT).
    case recordReceipt(channel: DeliveryChannel, outcome: ReceiptOutcome, detail: String?, token: Int? = nil)
    /// Stop the session.
    case cancel
    /// The dispatcher handed the message of the step started at version `token` to a provider; `locale` is the
    /// locale of the template it was rendered from.
    /// `price` is what the message costs, when known.
    case recordHandOff(
        token: Int,
        messageId: String,
        provider: String,
        providerRef: String?,
        locale: String? = nil,
        price: MessagePrice? = nil
    )
    /// The provider refused the message of the step started at version `token`. `provider` names it and
    /// `messageId` the message; `nextProvider`, when set, is the channel's next provider, which takes the same step
    /// (failover within the channel) instead of the session escalating.
    case recordProviderFailure(
        token: Int,
        reason: String,
        permanent: Bool,
        provider: String? = nil,
        messageId: String? = nil,
        nextProvider: String? = nil
    )
    /// The wait of the step whose message was sent at version `token` has passed.
    case timeOutStep(token: Int)
    /// The session's TTL has passed.
    case expire
    /// Erase the person's data: destroy the session's data key; nothing more is sent.
    case erase
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
    /// The events to append, in order; empty when the command changes nothing.
    public var events: [SessionEvent]
    /// VERIFY's answer; nil for the other commands.
    public var verifyResult: VerifyResult?
    /// Creates a decision.
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
    func code(seed: String, digits: Int, stream: StreamID) -> String
    /// The keyed digest (HMAC) of a code for a stream, as text.
    func digest(code: String, stream: StreamID) -> String
    /// Whether `code` is the one `digest` was made from, compared in constant time.
    func matches(code: String, digest: String, stream: StreamID) -> Bool
}

/// Everything `decide` needs from the outside world, injected.
public struct DecisionContext: Sendable {
    /// The current time (epoch milliseconds, from the database clock).
    public var now: Int64
    /// The session's stream, used to bind codes to it.
    public var stream: StreamID
    /// The code deriver and hasher.
    public var codes: any CodeBook
    /// The configured fallback flows, for ISSUE's plan.
    public var policies: PolicyBook
    /// A uniform random integer in `0..<n`, for a policy's weighted variants.
    public var pick: @Sendable (_ n: Int) -> Int
    /// The minimum gap between two sends on one channel, for a repeated last step.
    public var minGapMs: Int64
    /// Facts read from storage before deciding.
    public var facts: Facts
    /// The destinations a team tests with, and their codes.
    public var testDestinations: TestDestinations
    /// How fast a channel delivers to a country (its calling code, or `none`) lately, for adaptive step
    /// timeouts; nil when nothing is known. Read from memory, never from the database per command.
    public var routeLatency: @Sendable (DeliveryChannel, String) -> RouteLatency?

    /// What the store looked up for this decision (pacing counters the domain cannot read itself).
    public struct Facts: Sendable, Hashable {
        /// The phone number's country is over its sends-per-minute ceiling (against SMS pumping): a new session
        /// gets no SMS or voice step, or is refused when it has no other channel.
        public var countryOverCeiling: Bool
        /// The phone number's country has spent its `prefix_spend_per_hour`: the same, recorded as `budget`.
        public var countryOverBudget: Bool

        /// Creates facts; none hold by default.
        public init(countryOverCeiling: Bool = false, countryOverBudget: Bool = false) {
            self.countryOverCeiling = countryOverCeiling
            self.countryOverBudget = countryOverBudget
        }
    }

    /// Creates a context.
    public init(
        now: Int64,
        stream: StreamID,
        codes: any CodeBook,
        policies: PolicyBook = PolicyBook(policies: []),
        pick: @escaping @Sendable (_ n: Int) -> Int = { Int.random(in: 0..<$0) },
        minGapMs: Int64 = 30_000,
        facts: Facts = Facts(),
        testDestinations: TestDestinations = TestDestinations(),
        routeLatency: @escaping @Sendable (DeliveryChannel, String) -> RouteLatency? = { _, _ in nil }
    ) {
        self.now = now
        self.stream = stream
        self.codes = codes
        self.policies = policies
        self.pick = pick
        self.minGapMs = minGapMs
        self.facts = facts
        self.testDestinations = testDestinations
        self.routeLatency = routeLatency
    }
}
