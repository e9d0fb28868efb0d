/// A delivery channel for a one-time code.
public enum DeliveryChannel: String, Sendable, Hashable, CaseIterable, Codable, Comparable {
    case sms
    case email
    case voice
    case push

    /// Whether the channel reaches a phone number (and so belongs to a country).
    public var isTelephony: Bool { self == .sms || self == .voice }

    public static func < (lhs: DeliveryChannel, rhs: DeliveryChannel) -> Bool {
        allCases.firstIndex(of: lhs)! < allCases.firstIndex(of: rhs)!
    }
}

/// The receipt that ends a step's wait.
public enum Until: String, Sendable, Hashable, Codable {
    case delivered
    case opened
    case verified
}

/// What a channel gateway or provider callback reports about a message.
public enum ReceiptOutcome: String, Sendable, Hashable, Codable {
    case delivered
    case failed
    case opened

    /// Whether this receipt ends a step that waits for `until`: an open implies a delivery; no receipt
    /// stands for a verified code.
    public func satisfies(_ until: Until) -> Bool {
        switch (self, until) {
        case (.delivered, .delivered), (.opened, .delivered), (.opened, .opened): true
        default: false
        }
    }
}

/// Where a code is sent: a channel and its address (personal data).
public struct Destination: Sendable, Hashable, Codable {
    /// The channel this destination belongs to.
    public var channel: DeliveryChannel
    /// The phone number, e-mail address or device token.
    public var address: String

    /// Creates a destination without validating it.
    public init(channel: DeliveryChannel, address: String) {
        self.channel = channel
        self.address = address
    }

    /// Parses `sms:<E.164>`, `voice:<E.164>`, `email:<address>` or `push:<device token>`.
    public static func parse(_ text: String) throws(Rejection) -> Destination {
        guard let colon = text.firstIndex(of: ":") else {
            throw .badArgument("destination must be channel:address")
        }
        let name = text[..<colon].lowercased()
        let address = String(text[text.index(after: colon)...])
        guard let channel = DeliveryChannel(rawValue: name) else {
            throw .badArgument("unknown channel '\(Validation.printable(name))'")
        }
        switch channel {
        case .sms, .voice:
            guard Validation.isE164(address) else {
                throw .badArgument("\(channel.rawValue) destination must be E.164 (+ then 8 to 15 digits)")
            }
        case .email:
            guard Validation.isEmail(address) else { throw .badArgument("malformed e-mail address") }
        case .push:
            guard Validation.isDeviceToken(address) else { throw .badArgument("malformed push device token") }
        }
        return Destination(channel: channel, address: address)
    }
}

/// Input checks shared by the wire parser and the domain; pure functions.
public enum Validation {
    /// Whether `s` is a valid session id: 1 to 128 characters of `A-Z a-z 0-9 . _ : -`.
    public static func isSessionID(_ s: String) -> Bool {
        let u = s.utf8
        guard (1...128).contains(u.count) else { return false }
        return u.allSatisfy { c in
            (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A)
                || c == 0x2E || c == 0x5F || c == 0x3A || c == 0x2D
        }
    }

    /// Whether `s` is E.164: `+` then 8 to 15 digits, the first not 0.
    public static func isE164(_ s: String) -> Bool {
        let u = Array(s.utf8)
        guard u.count >= 9, u.count <= 16, u[0] == 0x2B, u[1] != 0x30 else { return false }
        return u.dropFirst().allSatisfy { $0 >= 0x30 && $0 <= 0x39 }
    }

    /// A pragmatic e-mail check: one `@`, a non-empty local part, a dotted domain, no spaces or controls.
    public static func isEmail(_ s: String) -> Bool {
        let u = Array(s.utf8)
        guard u.count >= 3, u.count <= 254 else { return false }
        guard u.allSatisfy({ $0 > 0x20 && $0 < 0x7F && $0 != 0x3C && $0 != 0x3E && $0 != 0x22 && $0 != 0x2C })
        else { return false }
        let parts = s.split(separator: "@", omittingEmptySubsequences: false)
        guard parts.count == 2, !parts[0].isEmpty, parts[0].utf8.count <= 64 else { return false }
        let domain = parts[1]
        guard domain.contains("."), !domain.hasPrefix("."), !domain.hasSuffix("."), !domain.contains("..")
        else { return false }
        return true
    }

    /// Whether `s` looks like a device token: 8 to 4096 printable ASCII characters without spaces.
    public static func isDeviceToken(_ s: String) -> Bool {
        let u = s.utf8
        guard (8...4096).contains(u.count) else { return false }
        return u.allSatisfy { $0 > 0x20 && $0 < 0x7F }
    }

    /// Whether `s` is a plausible BCP 47 tag: 1 to 35 characters, subtags of letters and digits joined by `-`.
    public static func isLocaleTag(_ s: String) -> Bool {
        let u = s.utf8
        guard (1...35).contains(u.count) else { return false }
        let subtags = s.split(separator: "-", omittingEmptySubsequences: false)
        guard let first = subtags.first, (2...8).contains(first.count), first.allSatisfy(\.isLetter) else {
            return false
        }
        return subtags.allSatisfy { sub in
            (1...8).contains(sub.count)
                && sub.utf8.allSatisfy { c in
                    (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A)
                }
        }
    }

    /// A receipt's detail as it may be recorded: gateways' and carriers' texts often quote the phone number or
    /// address they failed on, and events hold no destination in clear, so every run of 7 or more digits
    /// (with the `+`, spaces, dots and dashes between them) and every word with an `@` becomes `…`.
    public static func redactedDetail(_ s: String) -> String {
        let out = s.split(separator: " ", omittingEmptySubsequences: false)
            .map { $0.contains("@") ? "…" : String($0) }.joined(separator: " ")
        // Digit runs, allowing the separators a written number has.
        var result = ""
        var run = ""
        var digits = 0
        func flush() {
            if digits >= 7 {
                result += "…"
                result += run.reversed().prefix { !$0.isNumber }.reversed()  // the separators after it
            } else {
                result += run
            }
            run = ""
            digits = 0
        }
        for ch in out {
            if ch.isASCII && ch.isNumber {
                run.append(ch)
                digits += 1
            } else if !run.isEmpty && (ch == " " || ch == "-" || ch == "." || ch == "(" || ch == ")") {
                run.append(ch)
            } else if run.isEmpty && ch == "+" {
                run.append(ch)
            } else {
                flush()
                result.append(ch)
            }
        }
        flush()
        return result
    }

    /// The text with anything but printable ASCII replaced and cut to 64 characters, safe to echo in errors.
    public static func printable(_ s: some StringProtocol) -> String {
        String(
            String.UnicodeScalarView(
                s.unicodeScalars.prefix(64).map { ($0.value >= 0x20 && $0.value < 0x7F) ? $0 : "?" }
            )
        )
    }
}
