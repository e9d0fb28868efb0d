/// The destinations a team runs its own end-to-end tests with (`[[test_destination]]`): an ISSUE to them sends
/// nothing, and VERIFY takes the configured code.
public struct TestDestinations: Sendable, Hashable {
    /// One configured test destination.
    public struct Entry: Sendable, Hashable {
        /// The destination, as ISSUE names it.
        public var destination: Destination
        /// The code that verifies its sessions (4 to 10 digits).
        public var code: String

        /// Creates an entry.
        public init(destination: Destination, code: String) {
            self.destination = destination
            self.code = code
        }
    }

    /// The entries, in configuration order.
    public let entries: [Entry]
    private let codes: [Destination: String]

    /// Test destinations from their entries; the first entry of a destination named twice wins.
    public init(_ entries: [Entry] = []) {
        self.entries = entries
        codes = Dictionary(entries.map { (Self.key($0.destination), $0.code) }, uniquingKeysWith: { a, _ in a })
    }

    /// Whether there are none.
    public var isEmpty: Bool { entries.isEmpty }

    /// The code of a session issued to `destinations`: the first one's when all are test destinations, nil when
    /// none is. A session that mixes them is refused: it would either send to the real ones with a known code or
    /// not send to them at all.
    public func code(for destinations: [Destination]) throws(Rejection) -> String? {
        guard !codes.isEmpty else { return nil }
        let found = destinations.map { codes[Self.key($0)] }
        if found.allSatisfy({ $0 == nil }) { return nil }
        guard let first = found.first ?? nil, found.allSatisfy({ $0 != nil }) else {
            throw .badArgument("ISSUE mixes test destinations and real ones")
        }
        return first
    }

    /// Whether a destination is in a range reserved for tests, where no real person can be reached: E.164
    /// `+1555...` (North American fictional numbers) and `+1500555...` (Twilio's test numbers), the UK's
    /// `+447700900...` (Ofcom's drama range), e-mail at `example.com` (RFC 2606) or under `.test` or `.invalid`.
    /// Push tokens have no reserved range.
    public static func isReserved(_ d: Destination) -> Bool {
        switch d.channel {
        case .sms, .voice:
            return ["+1555", "+1500555", "+447700900"].contains { d.address.hasPrefix($0) }
        case .email:
            let domain = d.address.split(separator: "@").last.map { $0.lowercased() } ?? ""
            return domain == "example.com" || domain.hasSuffix(".example.com") || domain.hasSuffix(".test")
                || domain.hasSuffix(".invalid")
        case .push:
            return false
        }
    }

    /// E-mail addresses compare without case; numbers and tokens exactly.
    private static func key(_ d: Destination) -> Destination {
        d.channel == .email ? Destination(channel: .email, address: d.address.lowercased()) : d
    }
}
