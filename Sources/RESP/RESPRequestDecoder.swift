import NIOCore
import Synchronization

/// Decodes client requests, inline or RESP arrays of bulk strings, as a `NIOSingleStepByteToMessageDecoder`.
///
/// The decoder parses on a read-only view of the buffer and moves the reader index only once a whole
/// request (or an ignorable empty line / empty array) is complete, so a request split across many reads
/// decodes exactly like one that arrives at once. Every size is checked against ``RESPLimits`` before the
/// decoder waits for (or copies) the bytes it announces; violations throw ``RESPProtocolError``.
public struct RESPRequestDecoder: NIOSingleStepByteToMessageDecoder, Sendable {
    /// The decoded message type: one request.
    public typealias InboundOut = RESPRequest

    /// The limits this decoder enforces.
    public let limits: RESPLimits

    /// The longest `*<n>` or `$<len>` header line, prefix byte included and `\r\n` excluded.
    static let maxHeaderLength = 32

    /// Set while the bytes buffered so far end in an incomplete request; nil when nobody watches.
    let partial: PartialRequestMark?

    /// How many bytes of an incomplete inline line, from the reader index, are known to hold no line ending:
    /// the next read's search starts there, so a line sent a byte at a time is scanned once, not once a byte.
    private var inlineScanned = 0

    /// Creates a decoder enforcing the given limits; it keeps `partial` up to date when one is given.
    public init(limits: RESPLimits = .standard, partial: PartialRequestMark? = nil) {
        self.limits = limits
        self.partial = partial
    }

    /// Decodes the next request, skipping empty inline lines and empty arrays, or returns `nil` when more bytes are needed.
    public mutating func decode(buffer: inout ByteBuffer) throws -> RESPRequest? {
        defer { self.partial?.set(buffer.readableBytes > 0) }
        while buffer.readableBytes > 0 {
            switch try Self.step(buffer, limits: self.limits, inlineScanned: self.inlineScanned) {
            case .needMoreData:
                if buffer.readableBytesView.first != .asterisk { self.inlineScanned = buffer.readableBytes }
                return nil
            case .skip(let consumed):
                buffer.moveReaderIndex(forwardBy: consumed)
                self.inlineScanned = 0
            case .request(let request, let consumed):
                buffer.moveReaderIndex(forwardBy: consumed)
                self.inlineScanned = 0
                return request
            }
        }
        return nil
    }

    /// Decodes any complete request left at the end of the stream; an incomplete trailing request is dropped silently.
    public mutating func decodeLast(buffer: inout ByteBuffer, seenEOF: Bool) throws -> RESPRequest? {
        try self.decode(buffer: &buffer)
    }
}

/// Whether a connection's buffered bytes end in an incomplete request: the decoder sets it, and the server
/// uses it to time out a request that never completes. Used on the connection's event loop only.
public final class PartialRequestMark: Sendable {
    private let value = Atomic<Bool>(false)

    /// Creates an unset mark.
    public init() {}

    /// Whether an incomplete request is buffered.
    public var isSet: Bool { value.load(ordering: .relaxed) }

    func set(_ partial: Bool) { value.store(partial, ordering: .relaxed) }
}

// MARK: - Parsing

extension RESPRequestDecoder {
    /// The outcome of one parsing attempt at the reader index.
    enum Step {
        case needMoreData
        case skip(consumed: Int)
        case request(RESPRequest, consumed: Int)
    }

    /// Parses whatever starts at the reader index of `buffer` without consuming anything.
    static func step(_ buffer: ByteBuffer, limits: RESPLimits, inlineScanned: Int = 0) throws -> Step {
        let base = buffer.readerIndex
        return try buffer.withUnsafeReadableBytes { bytes throws -> Step in
            if bytes[0] == .asterisk {
                return try Self.parseMultibulk(bytes, buffer: buffer, base: base, limits: limits)
            } else {
                return try Self.parseInline(bytes, buffer: buffer, base: base, limits: limits, scanned: inlineScanned)
            }
        }
    }

    /// Parses `<prefix><decimal>\r\n` at `start`, returning the value and the index after the line, or `nil` if incomplete.
    ///
    /// The digits are validated as they arrive, so a bad or oversize header fails before its line ending.
    /// Only plain decimal without leading zeros is accepted; `-1` only for an array header.
    @inline(__always)
    static func parseHeader(
        _ bytes: UnsafeRawBufferPointer,
        at start: Int,
        isArray: Bool,
        limit: Int
    ) throws(RESPProtocolError) -> (value: Int, next: Int)? {
        var invalid: RESPProtocolError { isArray ? .invalidMultibulkLength : .invalidBulkLength }
        var overLimit: RESPProtocolError { isArray ? .tooManyArguments : .bulkTooLong }
        var tooLong: RESPProtocolError { isArray ? .multibulkHeaderTooLong : .bulkHeaderTooLong }
        var index = start + 1
        var value = 0
        var digits = 0
        var negative = false
        while index < bytes.count {
            let byte = bytes[index]
            if byte == .cr {
                guard index + 1 < bytes.count else { return nil }
                guard bytes[index + 1] == .lf, digits > 0 else { throw invalid }
                return (negative ? -1 : value, index + 2)  // a negative value can only be 1
            }
            guard index - start < Self.maxHeaderLength else { throw tooLong }
            if byte &- .zero < 10 {
                if digits > 0 && value == 0 { throw invalid }  // leading zero
                let (times10, o1) = value.multipliedReportingOverflow(by: 10)
                let (next, o2) = times10.addingReportingOverflow(Int(byte &- .zero))
                value = next
                digits += 1
                if negative {
                    if value != 1 { throw invalid }
                } else if o1 || o2 || value > limit {
                    throw overLimit
                }
            } else if byte == .minus && index == start + 1 && isArray {
                negative = true
            } else {
                throw invalid
            }
            index += 1
        }
        return nil
    }

    /// Parses a `*<n>` array of `$<len>` bulk strings starting at index 0.
    static func parseMultibulk(
        _ bytes: UnsafeRawBufferPointer,
        buffer: ByteBuffer,
        base: Int,
        limits: RESPLimits
    ) throws -> Step {
        guard
            let (count, headerEnd) = try Self.parseHeader(
                bytes,
                at: 0,
                isArray: true,
                limit: limits.maxArrayCount
            )
        else { return .needMoreData }
        if count <= 0 {
            return .skip(consumed: headerEnd)  // `*0` and `*-1` carry no request
        }
        // Record each element's (offset, length) on the stack; slice only once the whole request is present.
        return try withUnsafeTemporaryAllocation(of: Int.self, capacity: count &* 2) { spans throws -> Step in
            var index = headerEnd
            for element in 0..<count {
                guard index < bytes.count else { return .needMoreData }
                let first = bytes[index]
                guard first == .dollar else { throw RESPProtocolError.expectedBulk(got: first) }
                guard
                    let (length, dataStart) = try Self.parseHeader(
                        bytes,
                        at: index,
                        isArray: false,
                        limit: limits.maxBulkLength
                    )
                else { return .needMoreData }
                let dataEnd = dataStart + length
                guard dataEnd + 2 <= bytes.count else {
                    if dataEnd < bytes.count && bytes[dataEnd] != .cr { throw RESPProtocolError.missingBulkTerminator }
                    return .needMoreData
                }
                guard bytes[dataEnd] == .cr, bytes[dataEnd + 1] == .lf else {
                    throw RESPProtocolError.missingBulkTerminator
                }
                spans[element &* 2] = dataStart
                spans[element &* 2 &+ 1] = length
                index = dataEnd + 2
            }
            var arguments: [ByteBuffer] = []
            arguments.reserveCapacity(count)
            for element in 0..<count {
                arguments.append(buffer.getSlice(at: base &+ spans[element &* 2], length: spans[element &* 2 &+ 1])!)
            }
            return .request(RESPRequest(arguments: arguments, isInline: false), consumed: index)
        }
    }

    /// Parses one inline line starting at index 0, splitting it into arguments the way Redis's `sdssplitargs` does.
    static func parseInline(
        _ bytes: UnsafeRawBufferPointer,
        buffer: ByteBuffer,
        base: Int,
        limits: RESPLimits,
        scanned: Int = 0
    ) throws(RESPProtocolError) -> Step {
        let maxLength = limits.maxInlineLength
        // A line of `maxLength` bytes may be followed by `\r\n`: look no further than that. The first
        // `scanned` bytes were searched by an earlier call and hold no line ending.
        let searchEnd = min(bytes.count, maxLength &+ 2)
        var newline = min(scanned, searchEnd)
        while newline < searchEnd && bytes[newline] != .lf {
            newline &+= 1
        }
        guard newline < searchEnd else {
            // No line ending yet: fail as soon as the line can no longer fit.
            if bytes.count > maxLength &+ 1 { throw .inlineTooLong }
            if bytes.count == maxLength &+ 1 && bytes[maxLength] != .cr { throw .inlineTooLong }
            return .needMoreData
        }
        let end = newline > 0 && bytes[newline - 1] == .cr ? newline - 1 : newline
        guard end <= maxLength else { throw .inlineTooLong }

        var arguments: [ByteBuffer] = []
        var index = 0
        while true {
            while index < end && bytes[index].isBlank { index &+= 1 }
            if index == end { break }
            guard arguments.count < limits.maxArrayCount else { throw .tooManyArguments }

            // Unquoted run: taken as a slice of the input unless a quote starts inside it.
            let tokenStart = index
            while index < end {
                let byte = bytes[index]
                if byte.isBlank || byte == .doubleQuote || byte == .singleQuote { break }
                index &+= 1
            }
            if index == end || bytes[index].isBlank {
                arguments.append(buffer.getSlice(at: base &+ tokenStart, length: index &- tokenStart)!)
                continue
            }

            // Quoted part: it ends the argument, and must be followed by a blank or the end of line.
            var out = ByteBuffer()
            out.reserveCapacity(end &- tokenStart)
            out.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[tokenStart..<index]))
            let quote = bytes[index]
            index &+= 1
            while true {
                guard index < end else { throw .unbalancedQuotes }
                let byte = bytes[index]
                if byte == quote {
                    index &+= 1
                    if index < end && !bytes[index].isBlank { throw .unbalancedQuotes }
                    break
                }
                if byte == .backslash && index &+ 1 < end {
                    let escaped = bytes[index &+ 1]
                    if quote == .singleQuote {
                        if escaped == .singleQuote {
                            out.writeInteger(escaped)
                            index &+= 2
                        } else {
                            out.writeInteger(byte)
                            index &+= 1
                        }
                        continue
                    }
                    if escaped == .lowercaseX && index &+ 3 < end,
                        let high = bytes[index &+ 2].hexValue, let low = bytes[index &+ 3].hexValue
                    {
                        out.writeInteger(high &<< 4 | low)
                        index &+= 4
                        continue
                    }
                    let decoded: UInt8
                    switch escaped {
                    case .lowercaseN: decoded = .lf
                    case .lowercaseR: decoded = .cr
                    case .lowercaseT: decoded = 0x09
                    case .lowercaseB: decoded = 0x08
                    case .lowercaseA: decoded = 0x07
                    default: decoded = escaped
                    }
                    out.writeInteger(decoded)
                    index &+= 2
                    continue
                }
                out.writeInteger(byte)
                index &+= 1
            }
            arguments.append(out)
        }

        if arguments.isEmpty {
            return .skip(consumed: newline &+ 1)
        }
        return .request(RESPRequest(arguments: arguments, isInline: true), consumed: newline &+ 1)
    }
}

extension UInt8 {
    fileprivate static let asterisk = UInt8(ascii: "*")
    fileprivate static let dollar = UInt8(ascii: "$")
    fileprivate static let minus = UInt8(ascii: "-")
    fileprivate static let zero = UInt8(ascii: "0")
    fileprivate static let cr = UInt8(ascii: "\r")
    fileprivate static let lf = UInt8(ascii: "\n")
    fileprivate static let space = UInt8(ascii: " ")
    fileprivate static let tab = UInt8(ascii: "\t")
    fileprivate static let doubleQuote = UInt8(ascii: "\"")
    fileprivate static let singleQuote = UInt8(ascii: "'")
    fileprivate static let backslash = UInt8(ascii: "\\")
    fileprivate static let lowercaseA = UInt8(ascii: "a")
    fileprivate static let lowercaseB = UInt8(ascii: "b")
    fileprivate static let lowercaseN = UInt8(ascii: "n")
    fileprivate static let lowercaseR = UInt8(ascii: "r")
    fileprivate static let lowercaseT = UInt8(ascii: "t")
    fileprivate static let lowercaseX = UInt8(ascii: "x")

    /// Whether the byte separates inline arguments (space or tab).
    fileprivate var isBlank: Bool { self == .space || self == .tab }

    /// The value of the byte as a hexadecimal digit, or `nil` if it is not one.
    fileprivate var hexValue: UInt8? {
        switch self {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return self &- UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return self &- UInt8(ascii: "a") &+ 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return self &- UInt8(ascii: "A") &+ 10
        default: return nil
        }
    }
}
