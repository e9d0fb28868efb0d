/// A bounded integer option of ISSUE: its name, its accepted range and the one message that says so.
public struct IntegerOption: Sendable, Hashable {
    /// The option's name on the wire.
    public var name: String
    /// The accepted values.
    public var range: ClosedRange<Int>
    /// The unit named in the message, if any.
    public var unit: String?

    /// What a caller is told when a value is outside `range`.
    public var message: String {
        "\(name) must be \(range.lowerBound) to \(range.upperBound)" + (unit.map { " \($0)" } ?? "")
    }

    /// Returns `value` when it is in range; otherwise refuses with `message`.
    public func check(_ value: Int) throws(Rejection) -> Int {
        guard range.contains(value) else { throw .badArgument(message) }
        return value
    }

    /// Parses and checks a wire value.
    func parse(_ text: String) throws(Rejection) -> Int {
        guard let n = Int(text) else { throw .badArgument(message) }
        return try check(n)
    }

    /// The code's lifetime in seconds.
    public static let ttl = IntegerOption(name: "TTL", range: 30...3600, unit: "seconds")
    /// The code's length in digits.
    public static let digits = IntegerOption(name: "DIGITS", range: 4...10)
    /// Wrong codes allowed before the session locks.
    public static let maxAttempts = IntegerOption(name: "MAXATTEMPTS", range: 1...10)
}

/// What a caller asks of an ISSUE: parsed, checked and fingerprinted at the edge, complete when it reaches
/// `decide`.
public struct IssueRequest: Sendable, Hashable {
    /// The caller's session id.
    public var session: String
    /// Where the code may be sent, at most one per channel.
    public var destinations: [Destination]
    /// The policy asked for by name (`POLICY`), else chosen by the rules.
    public var policy: String?
    /// The code's lifetime (`TTL`).
    public var ttlSeconds: Int
    /// The code's length (`DIGITS`).
    public var digits: Int
    /// Wrong codes allowed (`MAXATTEMPTS`).
    public var maxAttempts: Int
    /// The BCP 47 locale of the messages (`LOCALE`).
    public var locale: String
    /// The app name shown in messages, instead of the configured one (`APP`).
    public var app: String?
    /// Channels moved to the front of the plan (`PREFER`).
    public var prefer: [DeliveryChannel]
    /// A carrier hint for policy matching (`CARRIER`).
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
        prefer: [DeliveryChannel] = [],
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

    /// The arguments the fingerprint covers, in a canonical order (destinations sorted).
    public var fingerprintParts: [String] {
        [
            session,
            destinations.map { "\($0.channel.rawValue):\($0.address)" }.sorted().joined(separator: ","),
            policy ?? "", String(ttlSeconds), String(digits), String(maxAttempts), locale, app ?? "",
            prefer.map(\.rawValue).joined(separator: ","), carrier ?? "",
        ]
    }

    /// Parses ISSUE's arguments, `session destination [destination ...] [OPTION value ...]`, and fingerprints
    /// them with `fingerprint` (a keyed digest of `fingerprintParts`).
    public static func parse(
        _ args: [String],
        fingerprint: (_ parts: [String]) -> String
    ) throws(Rejection) -> IssueRequest {
        guard let first = args.first else { throw .badArgument("ISSUE needs a session id and a destination") }
        var r = IssueRequest(session: try Arguments.sessionID(first), destinations: [])
        var i = 1
        while i < args.count && args[i].contains(":") {
            let d = try Destination.parse(args[i])
            guard !r.destinations.contains(where: { $0.channel == d.channel }) else {
                throw .badArgument("at most one destination per channel (\(d.channel.rawValue) given twice)")
            }
            r.destinations.append(d)
            i += 1
        }
        guard !r.destinations.isEmpty else { throw .badArgument("ISSUE needs at least one destination") }
        guard r.destinations.count <= 8 else { throw .badArgument("at most 8 destinations") }
        var seen = Set<String>()
        while i < args.count {
            let option = args[i].uppercased()
            guard i + 1 < args.count else {
                throw .badArgument("option '\(Validation.printable(args[i]))' needs a value")
            }
            let value = args[i + 1]
            guard seen.insert(option).inserted else { throw .badArgument("option \(option) given twice") }
            switch option {
            case "POLICY":
                guard (1...64).contains(value.count) else { throw .badArgument("POLICY must be a policy name") }
                r.policy = value
            case "TTL": r.ttlSeconds = try IntegerOption.ttl.parse(value)
            case "DIGITS": r.digits = try IntegerOption.digits.parse(value)
            case "MAXATTEMPTS": r.maxAttempts = try IntegerOption.maxAttempts.parse(value)
            case "LOCALE":
                guard Validation.isLocaleTag(value) else {
                    throw .badArgument("LOCALE must be a BCP 47 tag such as en-GB")
                }
                r.locale = value
            case "APP":
                guard (1...40).contains(value.count),
                    value.unicodeScalars.allSatisfy({ $0.value >= 0x20 && $0.value != 0x7F })
                else { throw .badArgument("APP must be 1 to 40 printable characters") }
                r.app = value
            case "PREFER":
                var prefer: [DeliveryChannel] = []
                for name in value.split(separator: ",") {
                    guard let c = DeliveryChannel(rawValue: name.lowercased()) else {
                        throw .badArgument("PREFER: unknown channel '\(Validation.printable(name))'")
                    }
                    if !prefer.contains(c) { prefer.append(c) }
                }
                guard !prefer.isEmpty else { throw .badArgument("PREFER needs channel[,channel...]") }
                r.prefer = prefer
            case "CARRIER":
                guard (1...64).contains(value.count),
                    value.unicodeScalars.allSatisfy({ $0.value > 0x20 && $0.value < 0x7F })
                else { throw .badArgument("CARRIER must be 1 to 64 printable characters") }
                r.carrier = value
            default:
                throw .badArgument("unknown option '\(Validation.printable(args[i]))'")
            }
            i += 2
        }
        r.fingerprint = fingerprint(r.fingerprintParts)
        return r
    }
}

/// Parsers of the other commands' arguments; each refuses with the message a caller sees.
public enum Arguments {
    /// A session id: 1 to 128 characters of `A-Z a-z 0-9 . _ : -`.
    public static func sessionID(_ text: String) throws(Rejection) -> String {
        guard Validation.isSessionID(text) else {
            throw .badArgument("session id must be 1 to 128 characters of A-Z a-z 0-9 . _ : -")
        }
        return text
    }

    /// RECEIPT's `channel outcome [detail]`.
    public static func receipt(
        channel: String,
        outcome: String,
        detail: String?
    ) throws(Rejection) -> SessionCommand {
        guard let c = DeliveryChannel(rawValue: channel.lowercased()) else {
            throw .badArgument("unknown channel '\(Validation.printable(channel))' (sms, email, voice, push)")
        }
        guard let o = ReceiptOutcome(rawValue: outcome.lowercased()) else {
            throw .badArgument("outcome must be delivered, failed or opened")
        }
        if let detail, detail.utf8.count > 256 { throw .badArgument("detail must be at most 256 bytes") }
        return .recordReceipt(channel: c, outcome: o, detail: detail.map(Validation.redactedDetail))
    }
}
