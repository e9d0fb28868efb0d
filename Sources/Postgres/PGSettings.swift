/// Per-connection session settings applied when a connection is opened.
public struct PGSettings: Sendable {
    /// `statement_timeout`: the longest a single statement may run (zero disables it).
    public var statementTimeout: Duration
    /// `lock_timeout`: the longest a statement waits for a lock (zero disables it).
    public var lockTimeout: Duration
    /// `idle_in_transaction_session_timeout`: how long a transaction may sit idle (zero disables it).
    public var idleInTransactionTimeout: Duration
    /// `application_name` shown in `pg_stat_activity` (a URL `application_name` parameter wins).
    public var applicationName: String
    /// How long opening a connection may take (libpq `connect_timeout`, at least 2 s; a URL parameter wins).
    public var connectTimeout: Duration

    /// Creates settings; the defaults are 5 s / 2 s / 10 s, "otpd" and a 5 s connect timeout.
    public init(
        statementTimeout: Duration = .seconds(5),
        lockTimeout: Duration = .seconds(2),
        idleInTransactionTimeout: Duration = .seconds(10),
        applicationName: String = "otpd",
        connectTimeout: Duration = .seconds(5)
    ) {
        self.statementTimeout = statementTimeout
        self.lockTimeout = lockTimeout
        self.idleInTransactionTimeout = idleInTransactionTimeout
        self.applicationName = applicationName
        self.connectTimeout = connectTimeout
    }

    /// The `-c name=value` startup options carrying the timeouts, in milliseconds.
    var startupOptions: String {
        "-c statement_timeout=\(Self.milliseconds(statementTimeout))"
            + " -c lock_timeout=\(Self.milliseconds(lockTimeout))"
            + " -c idle_in_transaction_session_timeout=\(Self.milliseconds(idleInTransactionTimeout))"
    }

    static func milliseconds(_ duration: Duration) -> Int64 {
        let (seconds, attoseconds) = duration.components
        guard seconds >= 0, attoseconds >= 0 || seconds > 0 else { return 0 }
        let ms = seconds.multipliedReportingOverflow(by: 1000)
        if ms.overflow { return Int64(Int32.max) }
        return min(ms.partialValue + attoseconds / 1_000_000_000_000_000, Int64(Int32.max))
    }
}
