/// An amount of money in millionths of the one currency prices are given in: exact sums, no float noise.
public struct Money: Sendable, Hashable, Comparable, Codable, CustomStringConvertible {
    /// Millionths of the currency unit.
    public var micros: Int64

    /// An amount of `micros` millionths.
    public init(micros: Int64) { self.micros = micros }

    /// Parses a decimal such as `0.0079` or `-0.00750` (a provider's sign is dropped: a price is what it costs),
    /// at most six decimals; nil for anything else.
    public init?(decimal text: String) {
        var t = Substring(text)
        if t.first == "-" || t.first == "+" { t = t.dropFirst() }
        let parts = t.split(separator: ".", maxSplits: 1, omittingEmptySubsequences: false)
        guard let whole = parts.first, !whole.isEmpty || parts.count == 2, whole.count <= 12,
            whole.allSatisfy(\.isASCII), whole.allSatisfy(\.isNumber)
        else { return nil }
        var fraction = parts.count == 2 ? parts[1] : ""
        guard fraction.allSatisfy({ $0.isASCII && $0.isNumber }), !(whole.isEmpty && fraction.isEmpty) else {
            return nil
        }
        // Beyond six decimals only zeros may follow (a provider's "0.0075000000").
        guard fraction.dropFirst(6).allSatisfy({ $0 == "0" }) else { return nil }
        fraction = fraction.prefix(6)
        let digits = String(fraction) + String(repeating: "0", count: 6 - fraction.count)
        micros = (Int64(whole) ?? 0) * 1_000_000 + (Int64(digits) ?? 0)
    }

    /// The shortest decimal that says the amount exactly: `0.0079`, `2`, `0.5`.
    public var description: String {
        let whole = micros / 1_000_000
        var fraction = String(micros % 1_000_000)
        fraction = String(repeating: "0", count: 6 - fraction.count) + fraction
        while fraction.hasSuffix("0") { fraction.removeLast() }
        return fraction.isEmpty ? "\(whole)" : "\(whole).\(fraction)"
    }

    public static func < (a: Money, b: Money) -> Bool { a.micros < b.micros }

    /// The amount with four decimals, rounded half up (STATS' `cost`).
    public var fourDecimals: String { Self.fourDecimals(micros, dividedBy: 1) }

    /// `micros ÷ divisor` in currency units with four decimals, rounded half up; `0.0000` when `divisor` is not
    /// positive.
    public static func fourDecimals(_ micros: Int64, dividedBy divisor: Int64) -> String {
        FourDecimals.ratio(micros, divisor.multipliedReportingOverflow(by: 1_000_000).partialValue)
    }
}

/// Ratios written with four decimals, as STATS gives its rates and costs.
public enum FourDecimals {
    /// `n ÷ d` with four decimals, rounded half up, in integers (no locale, no float noise); `0.0000` when `d` is
    /// not positive.
    public static func ratio(_ n: Int64, _ d: Int64) -> String {
        guard d > 0 else { return "0.0000" }
        let scaled = (n * 10_000 + d / 2) / d
        let frac = String(scaled % 10_000)
        return "\(scaled / 10_000)." + String(repeating: "0", count: 4 - frac.count) + frac
    }
}

/// What a message costs, and whether the provider said so or the operator's `[prices]` did.
public struct MessagePrice: Sendable, Hashable {
    /// The amount.
    public var amount: Money
    /// `provider` (reported with the hand-off: Twilio's `price`) or `prices` (the configuration's).
    public var source: String
    /// Creates a price.
    public init(amount: Money, source: String) {
        self.amount = amount
        self.source = source
    }
}

/// `[prices]`: a message's price by channel and country calling code, in one currency.
public struct Prices: Sendable, Hashable {
    /// One channel's prices: by country calling code (`+44`), else the default.
    public struct Table: Sendable, Hashable {
        /// The price where no country is listed; nil: unpriced there.
        public var `default`: Money?
        /// Prices by country calling code.
        public var byCountry: [String: Money]
        /// Creates a table.
        public init(default: Money? = nil, byCountry: [String: Money] = [:]) {
            self.default = `default`
            self.byCountry = byCountry
        }
    }

    /// The tables by channel.
    public var channels: [DeliveryChannel: Table]

    /// Prices; none by default (nothing is priced).
    public init(_ channels: [DeliveryChannel: Table] = [:]) { self.channels = channels }

    /// The configured price of a message on `channel` for a session whose phone number has calling code
    /// `country` (nil without a phone number: the default).
    public func price(_ channel: DeliveryChannel, country: String?) -> Money? {
        guard let table = channels[channel] else { return nil }
        return country.flatMap { table.byCountry[$0] } ?? table.default
    }
}
