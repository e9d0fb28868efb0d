/// A Swift value that can be sent as a text-format query parameter.
public protocol PGEncodable: Sendable {
    /// The PostgreSQL text representation of the value; `nil` means SQL NULL.
    var pgText: String? { get }
}

/// A Swift value that can be created from a PostgreSQL text-format result value.
public protocol PGDecodable {
    /// Decodes the value from its PostgreSQL text representation.
    init(pgText: String) throws(PGError)
}

extension String: PGEncodable, PGDecodable {
    /// The string itself.
    public var pgText: String? { self }

    /// Takes the text as is.
    public init(pgText: String) throws(PGError) {
        self = pgText
    }
}

extension Int: PGEncodable, PGDecodable {
    /// The decimal representation.
    public var pgText: String? { String(self) }

    /// Parses a decimal integer.
    public init(pgText: String) throws(PGError) {
        guard let value = Int(pgText) else { throw .decoding("not an integer of type Int") }
        self = value
    }
}

extension Int32: PGEncodable, PGDecodable {
    /// The decimal representation.
    public var pgText: String? { String(self) }

    /// Parses a decimal integer.
    public init(pgText: String) throws(PGError) {
        guard let value = Int32(pgText) else { throw .decoding("not an integer of type Int32") }
        self = value
    }
}

extension Int64: PGEncodable, PGDecodable {
    /// The decimal representation.
    public var pgText: String? { String(self) }

    /// Parses a decimal integer.
    public init(pgText: String) throws(PGError) {
        guard let value = Int64(pgText) else { throw .decoding("not an integer of type Int64") }
        self = value
    }
}

extension Bool: PGEncodable, PGDecodable {
    /// "t" or "f".
    public var pgText: String? { self ? "t" : "f" }

    /// Parses PostgreSQL's boolean output ("t"/"f", also "true"/"false").
    public init(pgText: String) throws(PGError) {
        switch pgText {
        case "t", "true", "TRUE", "on", "1": self = true
        case "f", "false", "FALSE", "off", "0": self = false
        default: throw .decoding("not a boolean")
        }
    }
}

extension Double: PGEncodable, PGDecodable {
    /// The shortest round-tripping decimal representation, or NaN/Infinity/-Infinity.
    public var pgText: String? {
        if isNaN { return "NaN" }
        if isInfinite { return self < 0 ? "-Infinity" : "Infinity" }
        return description
    }

    /// Parses PostgreSQL's float8 output, including NaN and ±Infinity.
    public init(pgText: String) throws(PGError) {
        switch pgText {
        case "NaN": self = .nan
        case "Infinity": self = .infinity
        case "-Infinity": self = -.infinity
        default:
            guard let value = Double(pgText) else { throw .decoding("not a floating point number") }
            self = value
        }
    }
}

extension Array: PGEncodable where Element == UInt8 {
    /// The bytea hex format, `\x` followed by two lowercase hex digits per byte.
    public var pgText: String? {
        let digits: [UInt8] = [UInt8]("0123456789abcdef".utf8)
        var bytes: [UInt8] = [UInt8(ascii: "\\"), UInt8(ascii: "x")]
        bytes.reserveCapacity(2 + count * 2)
        for byte in self {
            bytes.append(digits[Int(byte >> 4)])
            bytes.append(digits[Int(byte & 0x0f)])
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

extension Array: PGDecodable where Element == UInt8 {
    /// Parses the bytea hex format (`\x0a1b...`).
    public init(pgText: String) throws(PGError) {
        let utf8 = [UInt8](pgText.utf8)
        guard utf8.count >= 2, utf8[0] == UInt8(ascii: "\\"), utf8[1] == UInt8(ascii: "x"), utf8.count % 2 == 0
        else { throw .decoding("not a bytea value in hex format") }
        func nibble(_ c: UInt8) -> UInt8? {
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
            default: nil
            }
        }
        var result: [UInt8] = []
        result.reserveCapacity((utf8.count - 2) / 2)
        var index = 2
        while index < utf8.count {
            guard let high = nibble(utf8[index]), let low = nibble(utf8[index + 1]) else {
                throw .decoding("not a bytea value in hex format")
            }
            result.append(high << 4 | low)
            index += 2
        }
        self = result
    }
}

extension Optional: PGEncodable where Wrapped: PGEncodable {
    /// The wrapped value's text, or `nil` (SQL NULL).
    public var pgText: String? {
        switch self {
        case .some(let wrapped): wrapped.pgText
        case .none: nil
        }
    }
}

/// A `text[]` parameter: the array literal of its elements, each quoted (cast it: `$1::text[]`).
public struct PGTextArray: PGEncodable {
    /// The elements.
    public var elements: [String]

    /// An array of `elements`.
    public init(_ elements: [String]) {
        self.elements = elements
    }

    /// `{"a","b"}`, with `"` and `\` escaped inside the quotes.
    public var pgText: String? {
        var out = "{"
        for (i, e) in elements.enumerated() {
            if i > 0 { out += "," }
            out += "\""
            for c in e.unicodeScalars {
                if c == "\"" || c == "\\" { out += "\\" }
                out.unicodeScalars.append(c)
            }
            out += "\""
        }
        return out + "}"
    }
}
