/// Why a command was refused; each case maps to one wire error code.
public enum Rejection: Error, Sendable, Equatable {
    /// No such session (for this tenant).
    case notFound
    /// ISSUE reused a session id with different arguments.
    case conflict(String)
    /// An argument is malformed or cannot be satisfied.
    case badArgument(String)
    /// A pacing or abuse limit holds; retry after the given number of seconds.
    case rateLimited(retryAfterSeconds: Int)

    /// Refuses until `ms` milliseconds have passed: `retry_after` in whole seconds, rounded up, at least 1.
    public static func rateLimited(afterMs ms: Int64) -> Rejection {
        .rateLimited(retryAfterSeconds: Int(max(1, ms.saturatingAdd(999) / 1000)))
    }
}
