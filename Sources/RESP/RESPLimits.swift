/// Limits of the request framing, checked before any memory is committed to a request.
public struct RESPLimits: Sendable, Equatable {
    /// The longest inline request line accepted, in bytes, excluding the line ending.
    public var maxInlineLength: Int

    /// The largest number of arguments a request may carry.
    public var maxArrayCount: Int

    /// The longest bulk string accepted, in bytes.
    public var maxBulkLength: Int

    /// Creates limits, defaulting to the values of the wire specification.
    public init(maxInlineLength: Int = 16384, maxArrayCount: Int = 64, maxBulkLength: Int = 65536) {
        self.maxInlineLength = maxInlineLength
        self.maxArrayCount = maxArrayCount
        self.maxBulkLength = maxBulkLength
    }

    /// The limits of the wire specification: 16 KiB inline lines, 64 arguments, 64 KiB bulk strings.
    public static let standard = RESPLimits()
}
