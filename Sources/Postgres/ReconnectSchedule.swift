/// A `PGWorker`'s reconnect decisions: when to connect, how long to back off, and what happens to bodies meanwhile.
///
/// A pure value: every event takes the current instant and the jitter comes from the caller's random number
/// generator, so tests drive it with a manual clock and a seeded generator, without threads or a database. The
/// worker's thread keeps the libpq handles, reports what happened to them, and carries out `next(at:)`.
///
/// Backoff: 100 ms after the first failure, doubling to 5 s, each delay times a jitter factor in 0.5–1.0.
/// A connection that lasted `shortestHealthyConnection` resets it; one that dies sooner counts as a failure,
/// so a flapping server is backed off too.
struct ReconnectSchedule<Instant: InstantProtocol>: Sendable where Instant.Duration == Duration {
    /// Where the worker stands.
    enum Phase: Equatable, Sendable {
        /// No connection; the next attempt is due at `nextAttempt`, `backoff` after the failure that set it
        /// (zero when it was due at once).
        case disconnected(nextAttempt: Instant, backoff: Duration)
        /// A connection attempt is in flight; it is abandoned at `deadline`.
        case connecting(deadline: Instant)
        /// Connected since `since`.
        case connected(since: Instant)
        /// Stopped for good; every later event is ignored.
        case shutDown
    }

    /// What the worker does next.
    enum Action: Equatable, Sendable {
        /// Connected: run submitted bodies, then wait for more work or for the connection's socket.
        case runBodies
        /// Start a connection attempt now, then report `attemptStarted(at:)` or `attemptFailed(at:using:)`.
        case connect
        /// An attempt is in flight: drive it until `deadline`; submitted bodies wait for its outcome.
        case awaitAttempt(deadline: Instant)
        /// The attempt in flight passed its deadline: abandon it and report `attemptFailed(at:using:)`.
        case abandonAttempt
        /// Back off until the instant (or a `retrySoon(at:)`); submitted bodies fail fast meanwhile.
        case backOff(until: Instant)
        /// Close everything; every body fails with `.closed`.
        case shutDown
    }

    /// The backoff after the first failure.
    static var firstBackoff: Duration { .milliseconds(100) }
    /// The longest backoff, before jitter.
    static var maximumBackoff: Duration { .seconds(5) }
    /// How long a connection must last for its loss to reset the backoff.
    static var shortestHealthyConnection: Duration { .seconds(1) }

    /// Where the worker stands now.
    private(set) var phase: Phase
    /// Consecutive failures: failed attempts, and connections lost within `shortestHealthyConnection`.
    private(set) var failures = 0
    /// How long one connection attempt may take.
    let attemptTimeout: Duration

    /// A schedule whose first attempt is due at `now`.
    init(now: Instant, attemptTimeout: Duration) {
        self.phase = .disconnected(nextAttempt: now, backoff: .zero)
        self.attemptTimeout = attemptTimeout
    }

    /// What to do at `now`.
    func next(at now: Instant) -> Action {
        switch phase {
        case .shutDown:
            return .shutDown
        case .connected:
            return .runBodies
        case .connecting(let deadline):
            return now >= deadline ? .abandonAttempt : .awaitAttempt(deadline: deadline)
        case .disconnected(let nextAttempt, _):
            return now >= nextAttempt ? .connect : .backOff(until: nextAttempt)
        }
    }

    /// The backoff the worker is waiting out while disconnected (zero when the attempt was due at once); else nil.
    var backoff: Duration? {
        guard case .disconnected(_, let backoff) = phase else { return nil }
        return backoff
    }

    // MARK: Events

    /// A connection attempt started at `now`.
    mutating func attemptStarted(at now: Instant) {
        guard phase != .shutDown else { return }
        phase = .connecting(deadline: now.advanced(by: attemptTimeout))
    }

    /// A connection attempt failed (or could not start, or was abandoned) at `now`: back off.
    mutating func attemptFailed(at now: Instant, using jitter: inout some RandomNumberGenerator) {
        guard phase != .shutDown else { return }
        failures += 1
        backOff(from: now, using: &jitter)
    }

    /// The attempt in flight connected at `now`.
    mutating func connected(at now: Instant) {
        guard phase != .shutDown else { return }
        phase = .connected(since: now)
    }

    /// The connection was lost at `now`: reconnect at once if it had lasted, else back off.
    mutating func connectionLost(at now: Instant, using jitter: inout some RandomNumberGenerator) {
        guard case .connected(let since) = phase else { return }
        if since.duration(to: now) < Self.shortestHealthyConnection {
            failures += 1
            backOff(from: now, using: &jitter)
        } else {
            failures = 0
            phase = .disconnected(nextAttempt: now, backoff: .zero)
        }
    }

    /// The database is known to answer again (a sibling connected): a pending backoff ends at `now`.
    ///
    /// Does nothing while connected or connecting; the failure count stays, so a new failure backs off further.
    mutating func retrySoon(at now: Instant) {
        guard case .disconnected(let nextAttempt, _) = phase, nextAttempt > now else { return }
        phase = .disconnected(nextAttempt: now, backoff: .zero)
    }

    /// Stop: from now on `next(at:)` answers `.shutDown` whatever happens.
    mutating func shutDown() {
        phase = .shutDown
    }

    private mutating func backOff(from now: Instant, using jitter: inout some RandomNumberGenerator) {
        let delay = Self.backoff(failures: failures, using: &jitter)
        phase = .disconnected(nextAttempt: now.advanced(by: delay), backoff: delay)
    }

    // MARK: Delays

    /// The backoff before jitter after `failures` consecutive failures (1-based): 100 ms doubling to 5 s.
    static func backoffCeiling(failures: Int) -> Duration {
        let exponent = min(max(failures - 1, 0), 16)
        return min(firstBackoff * (1 << exponent), maximumBackoff)
    }

    /// The backoff after `failures` consecutive failures: `backoffCeiling(failures:)` times 0.5–1.0.
    static func backoff(failures: Int, using jitter: inout some RandomNumberGenerator) -> Duration {
        backoffCeiling(failures: failures) * Double.random(in: 0.5...1.0, using: &jitter)
    }
}
