/// A framing error; the server answers `-PROTO <reason>` and closes the connection.
public struct RESPProtocolError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The human-readable reason, sent to the client after `-PROTO `.
    public var reason: String

    /// Creates an error with the given reason.
    public init(reason: String) {
        self.reason = reason
    }

    /// The reason itself, so that `"-PROTO \(error)"` renders the wire reply.
    public var description: String { self.reason }

    /// A request was begun but not completed in time (a client that stalls or trickles bytes).
    public static let requestTimedOut = RESPProtocolError(reason: "request not completed in time")

    /// A quoted inline argument is not closed, or its closing quote is not followed by a blank.
    public static let unbalancedQuotes = RESPProtocolError(reason: "unbalanced quotes")

    /// An inline line is longer than `RESPLimits.maxInlineLength`.
    public static let inlineTooLong = RESPProtocolError(reason: "inline request too long")

    /// A request has more arguments than `RESPLimits.maxArrayCount`.
    public static let tooManyArguments = RESPProtocolError(reason: "too many arguments")

    /// A bulk string is longer than `RESPLimits.maxBulkLength`.
    public static let bulkTooLong = RESPProtocolError(reason: "bulk string too long")

    /// The `*<n>` header is not a valid element count.
    public static let invalidMultibulkLength = RESPProtocolError(reason: "invalid multibulk length")

    /// A `$<len>` header is not a valid length.
    public static let invalidBulkLength = RESPProtocolError(reason: "invalid bulk length")

    /// The `*<n>` header line is too long to be a count.
    public static let multibulkHeaderTooLong = RESPProtocolError(reason: "too big mbulk count string")

    /// A `$<len>` header line is too long to be a length.
    public static let bulkHeaderTooLong = RESPProtocolError(reason: "too big bulk count string")

    /// A bulk string's bytes are not followed by exactly `\r\n`.
    public static let missingBulkTerminator = RESPProtocolError(reason: "expected '\\r\\n' after bulk string")

    /// An array element does not start with `$`; the offending byte is shown, escaped when not printable.
    public static func expectedBulk(got byte: UInt8) -> RESPProtocolError {
        let shown: String
        if byte >= 0x20 && byte < 0x7F {
            shown = String(UnicodeScalar(byte))
        } else {
            let hex = String(byte, radix: 16)
            shown = byte < 0x10 ? "\\x0" + hex : "\\x" + hex
        }
        return RESPProtocolError(reason: "expected '$', got '\(shown)'")
    }
}
