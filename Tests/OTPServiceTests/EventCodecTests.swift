import EventStore
import Foundation
import OTPDomain
import Testing

@testable import OTPService

/// The stored JSON of every event is what it was when the coders converted keys to snake_case (the chain hashes
/// the stored text, and rows already in the log must keep decoding), now that each type spells its keys.
@Suite struct StoredEventFormat {
    static let stream = "default/fmt1"
    static let key = Array(repeating: UInt8(9), count: 32)

    /// The encoder as it was: every key converted.
    static func referenceEncoder() -> JSONEncoder {
        let e = JSONEncoder()
        e.keyEncodingStrategy = .convertToSnakeCase
        e.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        return e
    }

    static let issued = SessionEvent.issued(
        .init(
            session: "fmt1",
            plan: Plan(
                policy: "default",
                variant: 2,
                steps: [Step(channel: .sms, timeoutMs: 15_000, until: .delivered), Step(channel: .email)]
            ),
            ttlMs: 600_000,
            digits: 6,
            maxAttempts: 5,
            locale: "pt-BR",
            app: "AcmeApp",
            carrier: "vodafone",
            destinations: [
                Destination(channel: .sms, address: "+447700900123"),
                Destination(channel: .email, address: "a@example.com"),
            ],
            codeSeed: "seed",
            codeDigest: "digest",
            fingerprint: "fp",
            country: "+44"
        )
    )

    /// One of every event that carries data, with every optional field set.
    static let others: [SessionEvent] = [
        .sent(
            .init(
                step: 1,
                channel: .sms,
                messageId: "m_1",
                provider: "twilio",
                providerRef: "SM1",
                token: 1,
                locale: "pt"
            )
        ),
        .deliveryFailed(.init(step: 1, channel: .sms, reason: "30003", permanent: true, late: false, token: 1)),
        .delivered(.init(step: 1, channel: .sms, detail: "DELIVRD", late: true, token: 1)),
        .opened(.init(step: 2, channel: .email, detail: nil, late: false, token: 4)),
        .timedOut(.init(step: 1, waitedMs: 15_000)),
        .escalated(.init(from: 1, to: 2, fromChannel: .sms, toChannel: .email, reason: .timeout)),
        .verificationFailed(.init(attemptsLeft: 4)),
        .verified(.init(step: 2, channel: .email)),
        .exhausted(.init(step: 2)),
        .escalationWithdrawn(.init(from: 1, to: 2, channel: .sms, outcome: .delivered)),
    ]

    func record(_ stored: NewEvent) -> EventRecord {
        EventRecord(
            streamID: Self.stream,
            version: 1,
            type: stored.type,
            data: stored.data,
            at: 0,
            prevHash: [],
            hash: []
        )
    }

    @Test func everyEventIsStoredAsTheConvertingCodersStoredIt() throws {
        let codec = EventCodec()
        for event in Self.others {
            let stored = try codec.encode(event, stream: Self.stream, key: Self.key)
            let payload: any Encodable =
                switch event {
                case .sent(let e): e
                case .deliveryFailed(let e): e
                case .delivered(let e), .opened(let e): e
                case .timedOut(let e): e
                case .escalated(let e): e
                case .verificationFailed(let e): e
                case .verified(let e): e
                case .exhausted(let e): e
                case .escalationWithdrawn(let e): e
                default: EventCodec.Empty()
                }
            let reference = String(decoding: try Self.referenceEncoder().encode(payload), as: UTF8.self)
            #expect(stored.data == reference, "\(event.type)")
            #expect(try codec.decode(record(stored), key: Self.key) == event, "\(event.type)")
        }
        // `issued` seals with fresh nonces: its keys are those the converting encoder gave its properties.
        let stored = try codec.encode(Self.issued, stream: Self.stream, key: Self.key)
        let object = try #require(try JSONSerialization.jsonObject(with: Data(stored.data.utf8)) as? [String: Any])
        #expect(
            Set(object.keys) == [
                "session", "policy", "variant", "steps", "ttl_ms", "digits", "max_attempts", "locale", "app", "carrier",
                "channels", "destinations", "sealed_code_seed", "code_digest", "sealed_fingerprint", "country",
            ]
        )
        let steps = try #require(object["steps"] as? [[String: Any]])
        #expect(Set(steps[0].keys) == ["channel", "timeout_ms", "until"])
        #expect(try codec.decode(record(stored), key: Self.key) == Self.issued)
    }

    @Test func rowsWrittenBeforeDecodeAsTheyDid() throws {
        let codec = EventCodec()
        let rows: [(type: String, data: String, event: SessionEvent)] = [
            (
                "sent",
                #"{"channel":"sms","message_id":"m_1","provider":"twilio","provider_ref":"SM1","step":1}"#,
                .sent(.init(step: 1, channel: .sms, messageId: "m_1", provider: "twilio", providerRef: "SM1"))
            ),
            ("timed_out", #"{"step":1,"waited_ms":15000}"#, .timedOut(.init(step: 1, waitedMs: 15_000))),
            (
                "escalated",
                #"{"from":1,"from_channel":"sms","reason":"timeout","to":2,"to_channel":"email"}"#,
                .escalated(.init(from: 1, to: 2, fromChannel: .sms, toChannel: .email, reason: .timeout))
            ),
            ("verification_failed", #"{"attempts_left":3}"#, .verificationFailed(.init(attemptsLeft: 3))),
        ]
        for row in rows {
            let decoded = try codec.decode(record(NewEvent(type: row.type, data: row.data)), key: nil)
            #expect(decoded == row.event, "\(row.type)")
        }
    }
}
