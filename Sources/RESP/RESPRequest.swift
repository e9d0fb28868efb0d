import NIOCore

/// One decoded request: the command name and its arguments, binary-safe.
public struct RESPRequest: Sendable, Equatable {
    /// The arguments of the request; `arguments[0]` is the command name and the array is never empty.
    public var arguments: [ByteBuffer]

    /// Whether the request arrived as an inline line rather than as a RESP array.
    public var isInline: Bool

    /// Creates a request from its arguments.
    public init(arguments: [ByteBuffer], isInline: Bool) {
        self.arguments = arguments
        self.isInline = isInline
    }

    /// The arguments as Swift strings, decoded as UTF-8 with invalid sequences repaired.
    public var strings: [String] {
        self.arguments.map { String(buffer: $0) }
    }
}
