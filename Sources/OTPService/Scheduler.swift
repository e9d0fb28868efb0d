import EventStore
import Logging
import OTPDomain
import Postgres
import ServiceLifecycle

/// Turns due deadlines into commands: a step's timeout becomes `timed_out` and an escalation, the TTL `expired`.
///
/// Due rows are claimed with `FOR UPDATE SKIP LOCKED` and a short lease, so any number of instances share the
/// table; the command carries the timer's token and `decide` ignores a stale one, so each deadline yields one
/// event even when a claim is processed twice (a lease that ran out, a crash after the append). The loop sleeps
/// until the nearest deadline (at most `maxSleep`, to see other instances' timers) or until a local append
/// sets a new one.
public final class Scheduler: Service {
    let service: SessionService
    let logger: Logger
    let leaseMs: Int64
    let maxSleep: Duration
    let batchSize: Int

    /// Creates a scheduler.
    public init(
        service: SessionService,
        logger: Logger,
        leaseMs: Int64 = 2_000,
        maxSleep: Duration = .milliseconds(200),
        batchSize: Int = 64
    ) {
        self.service = service
        self.logger = logger
        self.leaseMs = leaseMs
        self.maxSleep = maxSleep
        self.batchSize = batchSize
    }

    /// How long a timer of an unreadable session waits before it is tried again (an hour).
    static let parkMs: Int64 = 3_600_000

    struct Claim: Sendable {
        var stream: String
        var name: String
        var token: Int
        var due: Int64
    }

    /// Runs until graceful shutdown.
    public func run() async throws {
        await runClaimLoop(
            "scheduler",
            logger: logger,
            signal: service.timerSignal,
            claim: { try await claimDue() },
            work: { await self.fire($0) }
        )
    }

    /// Claims due timers; returns them and how long to sleep when there are none.
    func claimDue() async throws -> ([Claim], Duration) {
        let lease = leaseMs
        let limit = batchSize
        let maxSleepMs = Int64(
            maxSleep.components.seconds * 1000 + maxSleep.components.attoseconds / 1_000_000_000_000_000
        )
        return try await service.pool.withConnection { conn in
            let now = try EventStore.now(on: conn)
            let rows = try conn.query(
                """
                UPDATE timers SET leased_until_ms = \(now + lease)
                WHERE (stream_id, name) IN (
                    SELECT stream_id, name FROM timers
                    WHERE due_ms <= \(now) AND (leased_until_ms IS NULL OR leased_until_ms < \(now))
                    ORDER BY due_ms LIMIT \(limit)
                    FOR UPDATE SKIP LOCKED)
                RETURNING stream_id, name, token, due_ms
                """
            ).rows
            let claims = try rows.map { row in
                Claim(
                    stream: try row.decode("stream_id"),
                    name: try row.decode("name"),
                    token: try row.decode("token"),
                    due: try row.decode("due_ms")
                )
            }
            if !claims.isEmpty { return (claims, .zero) }
            // The nearest future deadline (by the index); due rows leased by another instance are its to fire.
            let next = try conn.query(
                """
                SELECT due_ms FROM timers WHERE due_ms > \(now) ORDER BY due_ms LIMIT 1
                """
            ).rows.first?.decodeIfPresent("due_ms", as: Int64.self)
            let waitMs = next.map { min(max($0 - now, 1), maxSleepMs) } ?? maxSleepMs
            return ([], .milliseconds(waitMs))
        }
    }

    func fire(_ c: Claim) async {
        guard let (tenant, session) = SessionService.split(c.stream) else { return }
        let timer = TimerSpec(name: c.name, dueAt: c.due, token: c.token)
        // Whatever the command decides, this firing is done: remove the row unless the append replaced it.
        let remove: @Sendable (PGConnection, SessionState) throws -> Void = { conn, _ in
            try conn.query(
                """
                DELETE FROM timers WHERE stream_id = \(c.stream) AND name = \(c.name)
                  AND token = \(c.token) AND due_ms = \(c.due)
                """
            )
        }
        do {
            guard let command = timer.command else {
                try await service.pool.withConnection { conn in try remove(conn, SessionState()) }
                return
            }
            _ = try await service.execute(command, tenant: tenant, session: session, also: remove)
        } catch let r as Rejection where r == .notFound {
            _ = try? await service.pool.withConnection { conn in try remove(conn, SessionState()) }
        } catch let u as UnreadableSession {
            // Retrying cannot help until someone repairs or removes the session: park the timer, say so once.
            logger.error(
                "scheduler: session history unreadable; its timer is parked for an hour (otpctl verify shows where)",
                metadata: ["stream": "\(u.stream)", "version": "\(u.version)", "timer": "\(c.name)"]
            )
            let park = Self.parkMs
            _ = try? await service.pool.withConnection { conn in
                try conn.query(
                    """
                    UPDATE timers SET leased_until_ms = leased_until_ms + \(park)
                    WHERE stream_id = \(c.stream) AND name = \(c.name) AND token = \(c.token)
                    """
                )
            }
        } catch {
            logger.warning(
                "scheduler: timer not fired; it will be retried after its lease",
                metadata: ["stream": "\(c.stream)", "timer": "\(c.name)", "error": "\(error)"]
            )
        }
    }
}
