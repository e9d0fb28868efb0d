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
        }
    }

    /// A session was started: its plan, its limits and the sealed code.
    public struct Issued: Sendable, Hashable, Codable {
        public var session: String
        public var plan: Plan
        public var ttlMs: Int64
        public var digits: Int
        public var maxAttempts: Int
        public var locale: String
        public var app: String?
        public var carrier: String?
        /// Personal data: encrypted by the store, never written in clear.
        public var destinations: [Destination]
        /// Random seed from which the code is derived under the server secret (not the code).
        public var codeSeed: String
        /// HMAC of the code under the server secret.
        public var codeDigest: String
        /// HMAC of the request's arguments, for idempotent ISSUE.
        public var fingerprint: String

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
            fingerprint: String
        ) {
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
        }
    }

    /// A provider accepted the message of a step.
    public struct Sent: Sendable, Hashable, Codable {
        public var step: Int
        public var channel: DeliveryChannel
        public var messageId: String
        public var provider: String
        public var providerRef: String?
        public init(step: Int, channel: DeliveryChannel, messageId: String, provider: String, providerRef: String?) {
            self.step = step
            self.channel = channel
            self.messageId = messageId
            self.provider = provider
            self.providerRef = providerRef
        }
    }

    /// A message could not be delivered (provider error or a `failed` receipt).
    public struct DeliveryFailed: Sendable, Hashable, Codable {
        public var step: Int
        public var channel: DeliveryChannel
        public var reason: String
        public var permanent: Bool
        public var late: Bool
        public init(step: Int, channel: DeliveryChannel, reason: String, permanent: Bool, late: Bool) {
            self.step = step
            self.channel = channel
            self.reason = reason
            self.permanent = permanent
            self.late = late
        }
    }

    /// A delivery or open receipt.
    public struct Receipt: Sendable, Hashable, Codable {
        public var step: Int
        public var channel: DeliveryChannel
        public var detail: String?
        public var late: Bool
        public init(step: Int, channel: DeliveryChannel, detail: String?, late: Bool) {
            self.step = step
            self.channel = channel
            self.detail = detail
            self.late = late
        }
    }

    /// A step's wait ended without its `until` receipt.
    public struct TimedOut: Sendable, Hashable, Codable {
        public var step: Int
        public var waitedMs: Int64
        public init(step: Int, waitedMs: Int64) {
            self.step = step
            self.waitedMs = waitedMs
        }
    }

    /// The session moved to another step (or repeats the last one, `from == to`).
    public struct Escalated: Sendable, Hashable, Codable {
        public var from: Int
        public var to: Int
        public var fromChannel: DeliveryChannel
        public var toChannel: DeliveryChannel
        public var reason: EscalationReason
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
        public var attemptsLeft: Int
        public init(attemptsLeft: Int) { self.attemptsLeft = attemptsLeft }
    }

    /// The right code was entered; the step that was current converted.
    public struct Verified: Sendable, Hashable, Codable {
        public var step: Int
        public var channel: DeliveryChannel
        public init(step: Int, channel: DeliveryChannel) {
            self.step = step
            self.channel = channel
        }
    }

    /// A late receipt for the previous step came before the next step's message was handed off: the session
    /// returns to that step and the queued message is not sent.
    public struct Withdrawn: Sendable, Hashable, Codable {
        public var from: Int
        public var to: Int
        public var channel: DeliveryChannel
        public var outcome: ReceiptOutcome
        public init(from: Int, to: Int, channel: DeliveryChannel, outcome: ReceiptOutcome) {
            self.from = from
            self.to = to
            self.channel = channel
            self.outcome = outcome
        }
    }

    /// The last step ended without success.
    public struct Exhausted: Sendable, Hashable, Codable {
        public var step: Int
        public init(step: Int) { self.step = step }
    }
}
