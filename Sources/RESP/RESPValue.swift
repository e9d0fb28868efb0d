import NIOCore

/// A reply value, encoded as RESP2 or RESP3.
public indirect enum RESPValue: Sendable {
    /// A simple string such as `+OK`; CR and LF inside are replaced by spaces when encoded.
    case simpleString(String)
    /// An error such as `-CODE message` (the string is `CODE message`); CR and LF inside are replaced by spaces when encoded.
    case error(String)
    /// An integer such as `:1`.
    case integer(Int64)
    /// A binary-safe bulk string such as `$3\r\nfoo\r\n`.
    case bulkString(ByteBuffer)
    /// The null value: `$-1` in RESP2, `_` in RESP3.
    case null
    /// An array of values.
    case array([RESPValue])
    /// A map with string keys: `%n` in RESP3, a flat array of alternating keys and values in RESP2; keys are bulk strings.
    case map([(key: String, value: RESPValue)])
    /// Out-of-band data the server sends unasked (pub/sub messages): `>n` in RESP3, an array in RESP2.
    case push([RESPValue])
    /// Nothing: a request answered by writes of its own (SUBSCRIBE queues one reply per session). Encodes to no
    /// bytes.
    case nothing

    /// A bulk string holding the UTF-8 bytes of `string`.
    public static func bulk(_ string: String) -> RESPValue {
        .bulkString(ByteBuffer(string: string))
    }

    /// Appends the encoding of this value to `buffer`, as RESP3 if `protocolVersion` is 3 and as RESP2 otherwise.
    public func encode(into buffer: inout ByteBuffer, protocolVersion: Int) {
        switch self {
        case .simpleString(let string):
            buffer.writeLine(prefix: .plus, sanitizing: string)
        case .error(let message):
            buffer.writeLine(prefix: .minus, sanitizing: message)
        case .integer(let value):
            buffer.writeHeader(prefix: .colon, value)
        case .bulkString(let bytes):
            buffer.writeHeader(prefix: .dollar, Int64(bytes.readableBytes))
            buffer.writeImmutableBuffer(bytes)
            buffer.writeCRLF()
        case .null:
            if protocolVersion >= 3 {
                buffer.writeStaticString("_\r\n")
            } else {
                buffer.writeStaticString("$-1\r\n")
            }
        case .array(let elements):
            buffer.writeHeader(prefix: .asterisk, Int64(elements.count))
            for element in elements {
                element.encode(into: &buffer, protocolVersion: protocolVersion)
            }
        case .push(let elements):
            buffer.writeHeader(prefix: protocolVersion >= 3 ? .greater : .asterisk, Int64(elements.count))
            for element in elements {
                element.encode(into: &buffer, protocolVersion: protocolVersion)
            }
        case .nothing:
            break
        case .map(let pairs):
            if protocolVersion >= 3 {
                buffer.writeHeader(prefix: .percent, Int64(pairs.count))
            } else {
                buffer.writeHeader(prefix: .asterisk, Int64(pairs.count) * 2)
            }
            for pair in pairs {
                buffer.writeHeader(prefix: .dollar, Int64(pair.key.utf8.count))
                buffer.writeString(pair.key)
                buffer.writeCRLF()
                pair.value.encode(into: &buffer, protocolVersion: protocolVersion)
            }
        }
    }
}

extension RESPValue: Equatable {
    /// Two values are equal when they have the same case and equal contents, map pairs compared in order.
    public static func == (lhs: RESPValue, rhs: RESPValue) -> Bool {
        switch (lhs, rhs) {
        case (.simpleString(let a), .simpleString(let b)): return a == b
        case (.error(let a), .error(let b)): return a == b
        case (.integer(let a), .integer(let b)): return a == b
        case (.bulkString(let a), .bulkString(let b)): return a == b
        case (.null, .null): return true
        case (.array(let a), .array(let b)): return a == b
        case (.map(let a), .map(let b)):
            return a.count == b.count && zip(a, b).allSatisfy { $0.key == $1.key && $0.value == $1.value }
        case (.push(let a), .push(let b)): return a == b
        case (.nothing, .nothing): return true
        case (.simpleString, _), (.error, _), (.integer, _), (.bulkString, _), (.null, _), (.array, _), (.map, _),
            (.push, _), (.nothing, _):
            return false
        }
    }
}

extension ByteBuffer {
    /// Appends the RESP encoding of `value`, as RESP3 if `protocolVersion` is 3 and as RESP2 otherwise.
    public mutating func writeRESP(_ value: RESPValue, protocolVersion: Int) {
        value.encode(into: &self, protocolVersion: protocolVersion)
    }

    /// Writes `\r\n`.
    @inline(__always)
    fileprivate mutating func writeCRLF() {
        self.writeInteger(UInt16(0x0D0A), endianness: .big)
    }

    /// Writes `<prefix><decimal value>\r\n` without creating a String.
    fileprivate mutating func writeHeader(prefix: UInt8, _ value: Int64) {
        self.writeInteger(prefix)
        // Up to 20 characters for Int64, written right to left into a fixed stack buffer.
        var magnitude = value.magnitude
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 20) { digits in
            var index = 20
            repeat {
                index -= 1
                digits[index] = UInt8(ascii: "0") &+ UInt8(truncatingIfNeeded: magnitude % 10)
                magnitude /= 10
            } while magnitude != 0
            if value < 0 {
                index -= 1
                digits[index] = UInt8(ascii: "-")
            }
            self.writeBytes(UnsafeRawBufferPointer(UnsafeBufferPointer(rebasing: digits[index..<20])))
        }
        self.writeCRLF()
    }

    /// Writes `<prefix><text>\r\n`, replacing any CR or LF inside `text` with a space.
    fileprivate mutating func writeLine(prefix: UInt8, sanitizing text: String) {
        self.writeInteger(prefix)
        let utf8 = text.utf8
        if utf8.contains(where: { $0 == 0x0D || $0 == 0x0A }) {
            self.writeBytes(utf8.lazy.map { $0 == 0x0D || $0 == 0x0A ? UInt8(ascii: " ") : $0 })
        } else {
            self.writeString(text)
        }
        self.writeCRLF()
    }
}

extension UInt8 {
    fileprivate static let plus = UInt8(ascii: "+")
    fileprivate static let minus = UInt8(ascii: "-")
    fileprivate static let colon = UInt8(ascii: ":")
    fileprivate static let dollar = UInt8(ascii: "$")
    fileprivate static let asterisk = UInt8(ascii: "*")
    fileprivate static let percent = UInt8(ascii: "%")
    fileprivate static let greater = UInt8(ascii: ">")
}
