import EventStore
import Logging
import OTPDomain
import Postgres
import ServiceLifecycle
import Synchronization

/// Turns due deadlines into commands: a step's timeout becomes `timed_out` and an escalation, the TTL `expired`.
///
/// Due rows are claimed with `FOR UPDATE SKIP LOCKED` and a short lease, so any number of instances share the
/// table; the command carries the timer's token and `decide` ignores a stale one, so each deadline yields one
/// event even when a claim is processed twice (a lease that ran out, a crash after the append). The loop sleeps
/// until the nearest deadline (at most `maxSleep`, to see other instances' timers) or until a local append
/// sets a new one.
public final class Scheduler: Service {
    /// How the scheduler claims.
    public struct Settings: Sendable {
        /// How long a claimed deadline stays this instance's.
        public var leaseMs: Int64 = 2_000
        /// The longest sleep between looks at the table.
        public var maxSleep: Duration = .milliseconds(200)
        /// Deadlines being fired at once.
        public var batchSize = 64
        /// How often a claim also counts the timers table for `otpd_timers_pending`.
        public var pendingCountInterval: Duration = .seconds(5)
        /// Creates the defaults.
        public init() {}
    }

    let pool: PGPool
    let sessions: SessionService
    let timers: Timers
    let settings: Settings
    let logger: Logger
    let telemetry: Telemetry
    /// When the timers table was last counted; nil: not yet.
    private let lastCount = Mutex<ContinuousClock.Instant?>(nil)

    /// How long a timer of an unreadable session waits before it is tried again (an hour).
    static let parkMs: Int64 = 3_600_000

    /// Creates a scheduler; `telemetry` gets the pending deadlines' count and how late each fired.
    public init(
        pool: PGPool,
        sessions: SessionService,
        timers: Timers,
        settings: Settings = Settings(),
        logger: Logger,
        telemetry: Telemetry = Telemetry()
    ) {
        self.pool = pool
        self.sessions = sessions
        self.timers = timers
        self.settings = settings
        self.logger = logger
        self.telemetry = telemetry
    }

    /// Runs until graceful shutdown.
    public func run() async throws {
        await runClaimLoop(
            "scheduler",
            logger: logger,
            signal: timers.signal,
            capacity: [0: settings.batchSize],
            lane: { _ in 0 },
            claim: { free in try await claimDue(limit: free[0] ?? 0) },
            work: { await self.fire($0) }
        )
    }

    /// Claims due timers; returns them and how long to sleep when there are none.
    func claimDue(limit: Int) async throws -> ([Timers.Claim], Duration) {
        let (settings, telemetry) = (self.settings, self.telemetry)
        let started = ContinuousClock.now
        let countNow = lastCount.withLock { last in
            guard last.map({ started - $0 >= settings.pendingCountInterval }) ?? true else { return false }
            last = started
            return true
        }
        do {
            return try await claimDue(limit: limit, countPending: countNow)
        } catch {
            telemetry.databaseError()
            throw error
        }
    }

    private func claimDue(limit: Int, countPending: Bool) async throws -> ([Timers.Claim], Duration) {
        let (timers, settings, telemetry) = (self.timers, self.settings, self.telemetry)
        let maxSleepMs = Int64(settings.maxSleep / .milliseconds(1))
        return try await pool.withConnection { conn in
            // Every few seconds, a count of the whole table (an index-only scan) for the pending gauge.
            if countPending { telemetry.setTimersPending(try timers.count(on: conn)) }
            let now = try EventStore.now(on: conn)
            let claims = try timers.claimDue(now: now, leaseMs: settings.leaseMs, limit: limit, on: conn)
            if !claims.isEmpty { return (claims, .zero) }
            let next = try timers.nextDue(after: now, on: conn)
            let waitMs = next.map { min(max($0 - now, 1), maxSleepMs) } ?? maxSleepMs
            return ([], .milliseconds(waitMs))
        }
    }

    func fire(_ c: Timers.Claim) async {
        let timers = self.timers
        // Whatever the command decides, this firing is done: remove the row unless the append replaced it.
        let complete: @Sendable (PGConnection, SessionState) throws -> Void = { conn, _ in
            try timers.complete(c, on: conn)
        }
        do {
            guard let command = c.timer.command else {
                try await pool.withConnection { conn in try timers.complete(c, on: conn) }
                return
            }
            let outcome = try await sessions.execute(command, on: c.stream, also: complete)
            telemetry.timerFired(lateness: Double(outcome.now - c.timer.dueAt) / 1000)
        } catch let r as Rejection where r == .notFound {
            _ = try? await pool.withConnection { conn in try timers.complete(c, on: conn) }
        } catch let u as UnreadableSession {
            // Retrying cannot help until someone repairs or removes the session: park the timer, say so once.
            logger.error(
                "scheduler: session history unreadable; its timer is parked for an hour (otpctl verify shows where)",
                metadata: ["stream": "\(u.stream)", "version": "\(u.version)", "timer": "\(c.timer.name)"]
            )
            _ = try? await pool.withConnection { conn in try timers.park(c, ms: Self.parkMs, on: conn) }
        } catch {
            logger.warning(
                "scheduler: timer not fired; it will be retried after its lease",
                metadata: ["stream": "\(c.stream)", "timer": "\(c.timer.name)", "error": "\(error)"]
            )
        }
    }
}
