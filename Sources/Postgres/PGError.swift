/// An error from the Postgres module; its `description` is redacted and never contains values.
///
/// Like postgres-nio's `PSQLError`, `description` only shows the error code, the SQLSTATE and a generic
/// text, because server messages and especially DETAIL lines can echo parameter values
/// (for example `Key (id)=(secret) already exists`). `debugDescription` adds the primary message.
/// Launcher errors (`.launch`) carry no data values, so their description includes the message.
public struct PGError: Error, Sendable, CustomStringConvertible, CustomDebugStringConvertible {
    /// The category of a `PGError`.
    public struct Code: Sendable, Hashable, CustomStringConvertible {
        private enum Value: Sendable, Hashable {
            case connection, server, timeout, decoding, closed, launch, commitOutcomeUnknown
        }

        private let value: Value

        private init(_ value: Value) {
            self.value = value
        }

        /// The connection failed, was lost, or the worker is currently disconnected.
        public static let connection = Code(.connection)
        /// The server rejected a statement (see `sqlState`), including statement timeouts (57014).
        public static let server = Code(.server)
        /// Waiting for a pooled connection took longer than the acquire timeout.
        public static let timeout = Code(.timeout)
        /// A value could not be decoded into the requested Swift type (or was NULL).
        public static let decoding = Code(.decoding)
        /// The pool, worker or connection has been closed.
        public static let closed = Code(.closed)
        /// The embedded PostgreSQL server could not be created or started.
        public static let launch = Code(.launch)
        /// The connection was lost (or stopped answering) after COMMIT was sent and before its answer came:
        /// the transaction may have committed or not. Unlike `.connection`, this does not mean nothing was done.
        public static let commitOutcomeUnknown = Code(.commitOutcomeUnknown)

        /// The code's name, e.g. `connection`.
        public var description: String {
            switch value {
            case .connection: "connection"
            case .server: "server"
            case .timeout: "timeout"
            case .decoding: "decoding"
            case .closed: "closed"
            case .launch: "launch"
            case .commitOutcomeUnknown: "commitOutcomeUnknown"
            }
        }
    }

    /// The category of the error.
    public var code: Code
    /// The five-character SQLSTATE reported by the server, e.g. "23505".
    public var sqlState: String?
    /// The unredacted explanation (primary server message or client-side text); shown only by `debugDescription`.
    public var message: String?

    /// Creates an error from its parts.
    public init(code: Code, sqlState: String? = nil, message: String? = nil) {
        self.code = code
        self.sqlState = sqlState
        self.message = message
    }

    /// Whether the server reported a unique constraint violation (SQLSTATE 23505).
    public var isUniqueViolation: Bool { sqlState == "23505" }

    /// Whether a prepared statement is no longer usable as prepared: gone (26000, after DISCARD ALL) or planned
    /// for a table that changed shape (0A000, "cached plan must not change result type"). Prepare it again.
    var isStalePreparedStatement: Bool { sqlState == "26000" || sqlState == "0A000" }

    /// Whether the statement was canceled, typically by `statement_timeout` (SQLSTATE 57014).
    public var isQueryCanceled: Bool { sqlState == "57014" }

    /// Whether the connection is gone (`.connection`, or `.commitOutcomeUnknown`, which also lost it).
    public var isConnectionLost: Bool { code == .connection || code == .commitOutcomeUnknown }

    /// A redacted description: code, SQLSTATE and a generic text, never values or server DETAIL.
    public var description: String {
        var text = "PGError(code: \(code)"
        if let sqlState {
            text += ", sqlState: \(sqlState)"
        }
        text += "): \(genericText)"
        if code == .launch, let message {
            text += ": \(message)"
        }
        return text
    }

    /// The redacted description plus the primary message (which may contain values, never DETAIL).
    public var debugDescription: String {
        guard let message, code != .launch else { return description }
        return "\(description) (\(message))"
    }

    private var genericText: String {
        switch code {
        case .connection: return "the database connection failed or is unavailable"
        case .server:
            if let sqlState, let name = Self.sqlStateNames[sqlState] {
                return "the database server reported \(name)"
            }
            return "the database server reported an error"
        case .timeout: return "timed out waiting for a database connection"
        case .decoding: return "a database value could not be decoded"
        case .closed: return "the database connection or pool is closed"
        case .launch: return "could not launch the embedded PostgreSQL server"
        case .commitOutcomeUnknown:
            return "the database connection was lost while committing; the transaction may or may not have committed"
        default: return "database error"
        }
    }

    /// Fixed names for common SQLSTATEs; they contain no values.
    private static let sqlStateNames: [String: String] = [
        "23505": "a unique violation",
        "23503": "a foreign key violation",
        "23502": "a not-null violation",
        "23514": "a check violation",
        "22021": "an invalid byte sequence",
        "25P02": "an aborted transaction",
        "40001": "a serialization failure",
        "40P01": "a deadlock",
        "42P01": "an undefined table",
        "42601": "a syntax error",
        "55P03": "a lock timeout",
        "57014": "a canceled statement",
    ]

    static func connection(_ message: String?) -> PGError {
        PGError(code: .connection, message: message)
    }

    static func decoding(_ message: String) -> PGError {
        PGError(code: .decoding, message: message)
    }

    static func launch(_ message: String) -> PGError {
        PGError(code: .launch, message: message)
    }

    static func closed(_ message: String = "closed") -> PGError {
        PGError(code: .closed, message: message)
    }
}
