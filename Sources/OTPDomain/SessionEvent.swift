/// Why a session moved to another step.
public enum EscalationReason: String, Sendable, Hashable, Codable {
    case timeout
    case failure
    case resend
    case fraud
}

/// Something that happened to an OTP session; the only source of its state.
public enum SessionEvent: Sendable, Hashable {
    case issued(Issued)
    case sent(Sent)
    case deliveryFailed(DeliveryFailed)
    case delivered(Receipt)
    case opened(Receipt)
    case timedOut(TimedOut)
    case escalated(Escalated)
    case verificationFailed(VerificationFailed)
    case verified(Verified)
    case locked
    case expired
    case cancelled
    case exhausted(Exhausted)
    case escalationWithdrawn(Withdrawn)
    /// The session's personal data was erased: its data key destroyed, nothing more is sent.
    case erased

    /// The event's type name as stored and shown in HISTORY.
    public var type: String {
        switch self {
        case .issued: "issued"
        case .sent: "sent"
        case .deliveryFailed: "delivery_failed"
        case .delivered: "delivered"
        case .opened: "opened"
        case .timedOut: "timed_out"
        case .escalated: "escalated"
        case .verificationFailed: "verification_failed"
        case .verified: "verified"
        case .locked: "locked"
        case .expired: "expired"
        case .cancelled: "cancelled"
        case .exhausted: "exhausted"
        case .escalationWithdrawn: "escalation_withdrawn"
        case .erased: "erased"
        }
    }

    /// A session was started: its plan, its limits and the sealed code.
    public struct Issued: Sendable, Hashable, Codable {
        /// The caller's session id.
        public var session: String
        /// The policy, variant and steps chosen.
        public var plan: Plan
        /// How long the code verifies, from the time of this event.
        public var ttlMs: Int64
        /// The code's length.
        public var digits: Int
        /// Wrong codes allowed before the session locks.
        public var maxAttempts: Int
        /// The messages' locale as asked (BCP 47).
        public var locale: String
        /// The app name for the messages, when the request named one.
        public var app: String?
        /// The carrier hint the request gave.
        public var carrier: String?
        /// Personal data: encrypted by the store, never written in clear.
        public var destinations: [Destination]
        /// Random seed from which the code is derived under the server secret (not the code).
        public var codeSeed: String
        /// HMAC of the code under the server secret.
        public var codeDigest: String
        /// HMAC of the request's arguments, for idempotent ISSUE.
        public var fingerprint: String
        /// The country calling code of the session's phone number (`+44`), kept in clear for the read models
        /// (a prefix names no person); nil without a phone number, and in events recorded before otpd kept it.
        public var country: String?
        /// Issued to test destinations only (`[[test_destination]]`): nothing is sent, the configured code
        /// verifies, and pacing and the read models leave the session out.
        public var test = false
        /// The channels the policy planned that this session does not get, and why: `budget` (its country
        /// was over `prefix_spend_per_hour`) or `prefix_ceiling` (over `prefix_sends_per_minute`); empty when none.
        public var skipped: [DeliveryChannel] = []
        public var skipReason: String?

        /// Creates the event's data.
        public init(
            session: String,
            plan: Plan,
            ttlMs: Int64,
            digits: Int,
            maxAttempts: Int,
            locale: String,
            app: String?,
            carrier: String?,
            destinations: [Destination],
            codeSeed: String,
            codeDigest: String,
            fingerprint: String,
            country: String? = nil,
            test: Bool = false,
            skipped: [DeliveryChannel] = [],
            skipReason: String? = nil
        ) {
            self.skipped = skipped
            self.skipReason = skipReason
            self.session = session
            self.plan = plan
            self.ttlMs = ttlMs
            self.digits = digits
            self.maxAttempts = maxAttempts
            self.locale = locale
            self.app = app
            self.carrier = carrier
            self.destinations = destinations
            self.codeSeed = codeSeed
            self.codeDigest = codeDigest
            self.fingerprint = fingerprint
            self.country = country
            self.test = test
        }
    }

    /// A provider accepted the message of a step.
    public struct Sent: Sendable, Hashable, Codable {
        /// The keys as stored (snake_case).
        enum CodingKeys: String, CodingKey {
            case step
            case channel
            case messageId = "message_id"
            case provider
            case providerRef = "provider_ref"
            case token
            case locale
            case timeoutMs = "timeout_ms"
            case timeoutBasis = "timeout_basis"
            case price
            case priceSource = "price_source"
        }
        /// The 1-based step whose message went out.
        public var step: Int
        /// Its channel.
        public var channel: DeliveryChannel
        /// otpd's id of the message (the provider's idempotency key).
        public var messageId: String
        /// The driver that handed it over.
        public var provider: String
        /// The provider's own reference, when it gave one.
        public var providerRef: String?
        /// The version of the event that started the step (its outbox token); nil in events recorded before
        /// otpd recorded it, which are matched to their start by step number.
        public var token: Int?
        /// The locale of the template the message was rendered from (`pt` for a request's `pt-BR` without a
        /// `pt-BR` template); nil in events recorded before otpd recorded it.
        public var locale: String?
        /// The wait chosen for an adaptive step (`timeout = "auto"`), and why; nil for a fixed timeout.
        public var timeoutMs: Int64?
        public var timeoutBasis: String?
        /// What the message cost (a decimal such as `"0.0079"`), and where the figure comes from (`provider`:
        /// it reported it; `prices`: the configuration's); nil when nothing prices it.
        public var price: String?
        public var priceSource: String?
        /// Creates the event's data.
        public init(
            step: Int,
            channel: DeliveryChannel,
            messageId: String,
            provider: String,
            providerRef: String?,
            token: Int? = nil,
            locale: String? = nil,
            timeoutMs: Int64? = nil,
            timeoutBasis: String? = nil,
            price: MessagePrice? = nil
        ) {
            self.price = price?.amount.description
            self.priceSource = price?.source
            self.timeoutMs = timeoutMs
            self.timeoutBasis = timeoutBasis
            self.step = step
            self.channel = channel
            self.messageId = messageId
            self.provider = provider
            self.providerRef = providerRef
            self.token = token
            self.locale = locale
        }
    }

    /// A message could not be delivered (provider error or a `failed` receipt).
    public struct DeliveryFailed: Sendable, Hashable, Codable {
        /// The keys as stored (snake_case).
        enum CodingKeys: String, CodingKey {
            case step, channel, reason, permanent, late, token, provider
            case messageId = "message_id"
            case nextProvider = "next_provider"
        }
        /// The step whose message failed.
        public var step: Int
        /// Its channel.
        public var channel: DeliveryChannel
        /// What the provider or the receipt said (never the code or the destination).
        public var reason: String
        /// Whether retrying could not help (a refusal, a `failed` receipt).
        public var permanent: Bool
        /// Whether it concerns a step the session had already left.
        public var late: Bool
        /// The version of the event that started the message's step (its token); nil in events recorded before
        /// otpd recorded it, which are matched to the channel's latest start.
        public var token: Int?
        /// The provider that failed it (its `[provider.NAME]` table's name, or the driver's in the
        /// single-provider form); nil for a receipt, and in events recorded before otpd recorded it.
        public var provider: String?
        /// otpd's id of the message that failed, when it had one.
        public var messageId: String?
        /// The provider the same step goes on with (failover within the channel): the step stays, its message is
        /// sent again with the same code and a new id; nil: the step failed, and the session escalates.
        public var nextProvider: String?
        /// Creates the event's data.
        public init(
            step: Int,
            channel: DeliveryChannel,
            reason: String,
            permanent: Bool,
            late: Bool,
            token: Int? = nil,
            provider: String? = nil,
            messageId: String? = nil,
            nextProvider: String? = nil
        ) {
            self.step = step
            self.channel = channel
            self.reason = reason
            self.permanent = permanent
            self.late = late
            self.token = token
            self.provider = provider
            self.messageId = messageId
            self.nextProvider = nextProvider
        }
    }

    /// A delivery or open receipt.
    public struct Receipt: Sendable, Hashable, Codable {
        /// The step the receipt is for.
        public var step: Int
        /// Its channel.
        public var channel: DeliveryChannel
        /// The gateway's detail, at most 256 bytes.
        public var detail: String?
        /// Whether it came after the session left that step.
        public var late: Bool
        /// The version of the event that started the message's step (its token); nil in events recorded before
        /// otpd recorded it, which are matched to the channel's latest start.
        public var token: Int?
        /// Creates the event's data.
        public init(step: Int, channel: DeliveryChannel, detail: String?, late: Bool, token: Int? = nil) {
            self.step = step
            self.channel = channel
            self.detail = detail
            self.late = late
            self.token = token
        }
    }

    /// A step's wait ended without its `until` receipt.
    public struct TimedOut: Sendable, Hashable, Codable {
        /// The keys as stored (snake_case).
        enum CodingKeys: String, CodingKey {
            case step
            case waitedMs = "waited_ms"
        }
        /// The step that waited.
        public var step: Int
        /// How long it waited after its message was sent.
        public var waitedMs: Int64
        /// Creates the event's data.
        public init(step: Int, waitedMs: Int64) {
            self.step = step
            self.waitedMs = waitedMs
        }
    }

    /// The session moved to another step (or repeats the last one, `from == to`).
    public struct Escalated: Sendable, Hashable, Codable {
        /// The keys as stored (snake_case).
        enum CodingKeys: String, CodingKey {
            case from
            case to
            case fromChannel = "from_channel"
            case toChannel = "to_channel"
            case reason
        }
        /// The step left.
        public var from: Int
        /// The step started (equal to `from` when the last step repeats).
        public var to: Int
        /// The channel left.
        public var fromChannel: DeliveryChannel
        /// The channel of the step started.
        public var toChannel: DeliveryChannel
        /// Why: a timeout, a failure, a resend or a fraud rule.
        public var reason: EscalationReason
        /// Creates the event's data.
        public init(
            from: Int,
            to: Int,
            fromChannel: DeliveryChannel,
            toChannel: DeliveryChannel,
            reason: EscalationReason
        ) {
            self.from = from
            self.to = to
            self.fromChannel = fromChannel
            self.toChannel = toChannel
            self.reason = reason
        }
    }

    /// A wrong code was entered.
    public struct VerificationFailed: Sendable, Hashable, Codable {
        /// The keys as stored (snake_case).
        enum CodingKeys: String, CodingKey {
            case attemptsLeft = "attempts_left"
        }
        /// Wrong codes still allowed after this one.
        public var attemptsLeft: Int
        /// Creates the event's data.
        public init(attemptsLeft: Int) { self.attemptsLeft = attemptsLeft }
    }

    /// The right code was entered; the step that was current converted.
    public struct Verified: Sendable, Hashable, Codable {
        /// The step current when the code was entered (the one that converted).
        public var step: Int
        /// Its channel.
        public var channel: DeliveryChannel
        /// Creates the event's data.
        public init(step: Int, channel: DeliveryChannel) {
            self.step = step
            self.channel = channel
        }
    }

    /// A late receipt for the previous step came before the next step's message was handed off: the session
    /// returns to that step and the queued message is not sent.
    public struct Withdrawn: Sendable, Hashable, Codable {
        /// The step whose start is withdrawn.
        public var from: Int
        /// The step the session returns to.
        public var to: Int
        /// The channel of the late receipt.
        public var channel: DeliveryChannel
        /// What the late receipt said (delivered or opened).
        public var outcome: ReceiptOutcome
        /// Creates the event's data.
        public init(from: Int, to: Int, channel: DeliveryChannel, outcome: ReceiptOutcome) {
            self.from = from
            self.to = to
            self.channel = channel
            self.outcome = outcome
        }
    }

    /// The last step ended without success.
    public struct Exhausted: Sendable, Hashable, Codable {
        /// The last step, which ended without success.
        public var step: Int
        /// Creates the event's data.
        public init(step: Int) { self.step = step }
    }
}
