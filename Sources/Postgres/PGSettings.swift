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
    /// How long past `statementTimeout` the client waits for the server's next answer before it drops the
    /// connection and fails the call with `.connection`.
    ///
    /// The statement timeout is enforced by the server; a server that stops answering without closing the
    /// connection (a black hole: a stopped process, a dead host behind a live path) cannot enforce it, so the
    /// client bounds every wait itself. With `statementTimeout` zero nothing bounds the wait but the keepalives.
    public var responseGrace: Duration
    /// TCP keepalive (libpq `keepalives_idle`, `keepalives_interval`, `keepalives_count`, whole seconds) and
    /// `tcp_user_timeout`: how soon the kernel gives up on a peer that stopped acknowledging; URL parameters win.
    public var keepalives: Keepalives

    /// TCP-level liveness checks of the connection's socket, applied by libpq (TCP connections only).
    public struct Keepalives: Sendable, Equatable {
        /// Idle time before the first probe (libpq `keepalives_idle`).
        public var idle: Duration
        /// Time between unanswered probes (libpq `keepalives_interval`).
        public var interval: Duration
        /// Unanswered probes before the connection is dead (libpq `keepalives_count`).
        public var count: Int
        /// How long sent data may stay unacknowledged before the kernel drops the connection
        /// (libpq `tcp_user_timeout`; zero leaves the system default).
        public var userTimeout: Duration

        /// Creates keepalive settings; the defaults notice a silent peer within about 11 s.
        public init(
            idle: Duration = .seconds(5),
            interval: Duration = .seconds(2),
            count: Int = 3,
            userTimeout: Duration = .seconds(10)
        ) {
            self.idle = idle
            self.interval = interval
            self.count = count
            self.userTimeout = userTimeout
        }
    }

    /// Creates settings; the defaults are 5 s / 2 s / 10 s, "otpd", a 5 s connect timeout, a 3 s response
    /// grace and keepalives every 2 s after 5 s idle.
    public init(
        statementTimeout: Duration = .seconds(5),
        lockTimeout: Duration = .seconds(2),
        idleInTransactionTimeout: Duration = .seconds(10),
        applicationName: String = "otpd",
        connectTimeout: Duration = .seconds(5),
        responseGrace: Duration = .seconds(3),
        keepalives: Keepalives = .init()
    ) {
        self.statementTimeout = statementTimeout
        self.lockTimeout = lockTimeout
        self.idleInTransactionTimeout = idleInTransactionTimeout
        self.applicationName = applicationName
        self.connectTimeout = connectTimeout
        self.responseGrace = responseGrace
        self.keepalives = keepalives
    }

    /// The longest the client waits for the server's next answer: the statement timeout plus the grace, or
    /// nil (no bound) when the statement timeout is disabled.
    public var responseTimeout: Duration? {
        Self.milliseconds(statementTimeout) > 0 ? statementTimeout + max(responseGrace, .zero) : nil
    }

    /// The `-c name=value` startup options carrying the timeouts, in milliseconds.
    var startupOptions: String {
        "-c statement_timeout=\(Self.milliseconds(statementTimeout))"
            + " -c lock_timeout=\(Self.milliseconds(lockTimeout))"
            + " -c idle_in_transaction_session_timeout=\(Self.milliseconds(idleInTransactionTimeout))"
    }

    /// The libpq keepalive parameters (`keepalives=1` and the four values).
    var keepaliveParameters: [(String, String)] {
        [
            ("keepalives", "1"),
            ("keepalives_idle", String(Self.wholeSeconds(keepalives.idle))),
            ("keepalives_interval", String(Self.wholeSeconds(keepalives.interval))),
            ("keepalives_count", String(min(max(keepalives.count, 1), 127))),
            ("tcp_user_timeout", String(Self.milliseconds(keepalives.userTimeout))),
        ]
    }

    static func milliseconds(_ duration: Duration) -> Int64 {
        let (seconds, attoseconds) = duration.components
        guard seconds >= 0, attoseconds >= 0 || seconds > 0 else { return 0 }
        let ms = seconds.multipliedReportingOverflow(by: 1000)
        if ms.overflow { return Int64(Int32.max) }
        return min(ms.partialValue + attoseconds / 1_000_000_000_000_000, Int64(Int32.max))
    }

    /// `duration` in whole seconds, rounded up, at least 1.
    static func wholeSeconds(_ duration: Duration) -> Int64 {
        max(1, (milliseconds(duration) + 999) / 1000)
    }
}
