import Crypto
import EventStore
import Foundation
import OTPDomain

/// Maps domain events to stored events and back; seals destinations with the session's key on the way in.
///
/// The stored JSON uses snake_case keys (each type's `CodingKeys`). Destinations never reach the log in clear:
/// `issued` stores each as an AES-GCM box under the per-session key (bound to stream and channel), and so are the
/// code's seed and the request's fingerprint, which an auditor need not read: with the secret the seed gives the
/// code, and the fingerprint confirms a guessed phone number. Erasing the key erases all three; the hash chain
/// still verifies, because it covers the stored text as it is.
public struct EventCodec: Sendable {
    private let encoder: JSONEncoder
    private let decoder: JSONDecoder

    /// Creates a codec.
    ///
    /// The snake_case keys are spelled out in each type's `CodingKeys` (a word's key is its name) rather than
    /// converted by the coders' key strategies: converting every key of every event was a third of decoding
    /// (`otpctl replay --all` profiled), and decoding runs whenever a command, the projector or an audit reads
    /// a session.
    public init() {
        let e = JSONEncoder()
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder = e
        decoder = JSONDecoder()
    }

    /// The stored form of `issued`: the destinations sealed.
    struct StoredIssued: Codable {
        var session: String
        var policy: String
        var variant: Int?
        var steps: [Step]
        var ttlMs: Int64
        var digits: Int
        var maxAttempts: Int
        var locale: String
        var app: String?
        var carrier: String?
        var channels: [DeliveryChannel]
        var destinations: [SealedDestination]
        /// Sealed under the session key (written by every version that seals it).
        var sealedCodeSeed: String?
        var codeDigest: String
        /// Sealed under the session key.
        var sealedFingerprint: String?
        /// In clear, in events recorded before the seed and the fingerprint were sealed.
        var codeSeed: String?
        var fingerprint: String?
        /// The phone number's country calling code, in clear for the projector (absent in older events).
        var country: String?
        /// True for a session of test destinations; absent otherwise.
        var test: Bool?
        /// The planned channels the session does not get, and why (absent when none).
        var skipped: [DeliveryChannel]?
        var skipReason: String?

        enum CodingKeys: String, CodingKey {
            case session, policy, variant, steps
            case ttlMs = "ttl_ms"
            case digits
            case maxAttempts = "max_attempts"
            case locale, app, carrier, channels, destinations
            case sealedCodeSeed = "sealed_code_seed"
            case codeDigest = "code_digest"
            case sealedFingerprint = "sealed_fingerprint"
            case codeSeed = "code_seed"
            case fingerprint, country, test, skipped
            case skipReason = "skip_reason"
        }
    }

    struct SealedDestination: Codable {
        var channel: DeliveryChannel
        var sealed: String
    }

    struct Empty: Codable {}

    /// Encodes an event for the log, sealing personal data with `key`.
    public func encode(_ event: SessionEvent, stream: String, key: [UInt8]?) throws -> NewEvent {
        let data: Data
        switch event {
        case .issued(let i):
            guard let key else { throw SecretsError("no session key to seal destinations") }
            let sealed = try i.destinations.map { d in
                SealedDestination(
                    channel: d.channel,
                    sealed: try Self.seal(d.address, key: key, binding: "\(stream)\u{0}\(d.channel.rawValue)")
                )
            }
            data = try encoder.encode(
                StoredIssued(
                    session: i.session,
                    policy: i.plan.policy,
                    variant: i.plan.variant,
                    steps: i.plan.steps,
                    ttlMs: i.ttlMs,
                    digits: i.digits,
                    maxAttempts: i.maxAttempts,
                    locale: i.locale,
                    app: i.app,
                    carrier: i.carrier,
                    channels: i.destinations.map(\.channel),
                    destinations: sealed,
                    sealedCodeSeed: try Self.seal(i.codeSeed, key: key, binding: "\(stream)\u{0}code_seed"),
                    codeDigest: i.codeDigest,
                    sealedFingerprint: try Self.seal(i.fingerprint, key: key, binding: "\(stream)\u{0}fingerprint"),
                    codeSeed: nil,
                    fingerprint: nil,
                    country: i.country,
                    test: i.test ? true : nil,
                    skipped: i.skipped.isEmpty ? nil : i.skipped,
                    skipReason: i.skipReason
                )
            )
        case .sent(let e): data = try encoder.encode(e)
        case .deliveryFailed(let e): data = try encoder.encode(e)
        case .delivered(let e), .opened(let e): data = try encoder.encode(e)
        case .timedOut(let e): data = try encoder.encode(e)
        case .escalated(let e): data = try encoder.encode(e)
        case .verificationFailed(let e): data = try encoder.encode(e)
        case .verified(let e): data = try encoder.encode(e)
        case .exhausted(let e): data = try encoder.encode(e)
        case .escalationWithdrawn(let e): data = try encoder.encode(e)
        case .locked, .expired, .cancelled, .erased: data = try encoder.encode(Empty())
        }
        return NewEvent(type: event.type, data: String(decoding: data, as: UTF8.self))
    }

    /// Decodes a stored event; destinations are opened with `key`, or left out when the key was erased.
    public func decode(_ record: EventRecord, key: [UInt8]?) throws -> SessionEvent {
        let data = Data(record.data.utf8)
        switch record.type {
        case "issued":
            let s = try decoder.decode(StoredIssued.self, from: data)
            // What ISSUE accepts is all a stored `issued` may hold: an edited row fails here, as unreadable,
            // instead of trapping later (a code of 25 digits, a negative TTL).
            guard IntegerOption.digits.range.contains(s.digits),
                IntegerOption.maxAttempts.range.contains(s.maxAttempts),
                (Int64(IntegerOption.ttl.range.lowerBound) * 1000...Int64(IntegerOption.ttl.range.upperBound) * 1000)
                    .contains(s.ttlMs),
                !s.steps.isEmpty, s.steps.allSatisfy({ ($0.timeoutMs ?? 0) >= 0 })
            else { throw SecretsError("a stored issued event holds values ISSUE does not accept") }
            // Without the key (erased) what it sealed is gone: no destinations, no seed, no fingerprint.
            let stream = record.streamID
            let destinations: [Destination] =
                try key.map { key in
                    try s.destinations.map { d in
                        let binding = "\(stream)\u{0}\(d.channel.rawValue)"
                        return Destination(
                            channel: d.channel,
                            address: try Self.open(d.sealed, key: key, binding: binding)
                        )
                    }
                } ?? []
            let seed =
                try s.codeSeed
                ?? key.map { try Self.open(s.sealedCodeSeed ?? "", key: $0, binding: "\(stream)\u{0}code_seed") }
            let fingerprint =
                try s.fingerprint
                ?? key.map { try Self.open(s.sealedFingerprint ?? "", key: $0, binding: "\(stream)\u{0}fingerprint") }
            return .issued(
                .init(
                    session: s.session,
                    plan: Plan(policy: s.policy, variant: s.variant, steps: s.steps),
                    ttlMs: s.ttlMs,
                    digits: s.digits,
                    maxAttempts: s.maxAttempts,
                    locale: s.locale,
                    app: s.app,
                    carrier: s.carrier,
                    destinations: destinations,
                    codeSeed: seed ?? "",
                    codeDigest: s.codeDigest,
                    fingerprint: fingerprint ?? "",
                    country: s.country,
                    test: s.test ?? false,
                    skipped: s.skipped ?? [],
                    skipReason: s.skipReason
                )
            )
        case "sent": return .sent(try decoder.decode(SessionEvent.Sent.self, from: data))
        case "delivery_failed": return .deliveryFailed(try decoder.decode(SessionEvent.DeliveryFailed.self, from: data))
        case "delivered": return .delivered(try decoder.decode(SessionEvent.Receipt.self, from: data))
        case "opened": return .opened(try decoder.decode(SessionEvent.Receipt.self, from: data))
        case "timed_out": return .timedOut(try decoder.decode(SessionEvent.TimedOut.self, from: data))
        case "escalated": return .escalated(try decoder.decode(SessionEvent.Escalated.self, from: data))
        case "verification_failed":
            return .verificationFailed(try decoder.decode(SessionEvent.VerificationFailed.self, from: data))
        case "verified": return .verified(try decoder.decode(SessionEvent.Verified.self, from: data))
        case "exhausted": return .exhausted(try decoder.decode(SessionEvent.Exhausted.self, from: data))
        case "escalation_withdrawn":
            return .escalationWithdrawn(try decoder.decode(SessionEvent.Withdrawn.self, from: data))
        case "locked": return .locked
        case "expired": return .expired
        case "cancelled": return .cancelled
        case "erased": return .erased
        default: throw SecretsError("unknown event type '\(record.type)'")
        }
    }

    /// An AES-GCM box of `text` under a session key, bound to `binding`, in base64.
    private static func seal(_ text: String, key: [UInt8], binding: String) throws -> String {
        let box = try AES.GCM.seal(
            Array(text.utf8),
            using: SymmetricKey(data: key),
            authenticating: Array(binding.utf8)
        )
        guard let combined = box.combined else { throw SecretsError("cannot seal a value") }
        return combined.base64EncodedString()
    }

    /// Opens what `seal` made.
    private static func open(_ sealed: String, key: [UInt8], binding: String) throws -> String {
        guard let combined = Data(base64Encoded: sealed) else { throw SecretsError("bad sealed value") }
        let plain = try AES.GCM.open(
            AES.GCM.SealedBox(combined: combined),
            using: SymmetricKey(data: key),
            authenticating: Array(binding.utf8)
        )
        return String(decoding: plain, as: UTF8.self)
    }
}
