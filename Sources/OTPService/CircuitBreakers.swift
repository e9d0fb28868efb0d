import Synchronization

/// Each provider's circuit breaker, in this instance's memory: a provider that fails `failures` hand-offs in a
/// row is skipped by every session for the cooldown, then one message probes it; the probe's success closes the
/// circuit, its failure opens it for another cooldown.
///
/// Per instance on purpose: each instance learns a provider's health from its own calls within a few messages,
/// with no statement on the send path; a restarted instance starts with every circuit closed.
public final class CircuitBreakers: Sendable {
    /// A circuit's state, as `otpd_provider_state` shows it.
    public enum State: Int, Sendable, Hashable {
        case closed = 0
        case open = 1
        case probing = 2
    }

    struct Circuit {
        var settings: BreakerSettings
        var failuresInARow = 0
        var openUntilMs: Int64?
        /// The message that probes a circuit past its cooldown (its stream and token): only it is let through.
        var probe: String?
        /// When the probe was let through: a probe that never reports (its session withdrew the message, its
        /// instance lost the record) gives way to another after a cooldown.
        var probeSinceMs: Int64 = 0
        var state: State { probe != nil ? .probing : openUntilMs != nil ? .open : .closed }
    }

    private let circuits: Mutex<[String: Circuit]>
    private let changed: @Sendable (String, State) -> Void
    private let clock: @Sendable () -> Int64

    /// Breakers for the named providers, every circuit closed; `changed` hears every later change of state (for
    /// the gauge and the log); `clock` reads the time in milliseconds (a monotonic clock by default).
    public init(
        _ providers: [String: BreakerSettings],
        clock: @escaping @Sendable () -> Int64 = CircuitBreakers.monotonicMs,
        changed: @escaping @Sendable (String, State) -> Void = { _, _ in }
    ) {
        circuits = Mutex(providers.mapValues { Circuit(settings: $0) })
        self.clock = clock
        self.changed = changed
    }

    /// Milliseconds on the system's monotonic clock.
    public static let monotonicMs: @Sendable () -> Int64 = {
        let t = epoch.duration(to: ContinuousClock.now).components
        return t.seconds * 1000 + t.attoseconds / 1_000_000_000_000_000
    }
    private static let epoch = ContinuousClock.now

    /// Whether the message `key` (its stream and token) may go to `provider` now: always with a closed
    /// circuit; with an open one only past its cooldown, and then as the one probe. A provider without a breaker
    /// is always tried.
    public func admit(_ provider: String, key: String) -> Bool {
        let nowMs = clock()
        let (admitted, change) = circuits.withLock { all -> (Bool, State?) in
            guard var c = all[provider] else { return (true, nil) }
            if let probe = c.probe, probe == key || nowMs < c.probeSinceMs + c.settings.cooldownMs {
                return (probe == key, nil)
            }
            guard let until = c.openUntilMs else { return (true, nil) }
            guard nowMs >= until else { return (false, nil) }
            c.probe = key
            c.probeSinceMs = nowMs
            all[provider] = c
            return (true, .probing)
        }
        if let change { changed(provider, change) }
        return admitted
    }

    /// Whether `provider` would take a message now without it being the probe of another (closed, or
    /// open past its cooldown with no probe out): the provider a failing one hands a step on to.
    public func wouldAdmit(_ provider: String) -> Bool {
        let nowMs = clock()
        return circuits.withLock { all in
            guard let c = all[provider] else { return true }
            if c.probe != nil { return nowMs >= c.probeSinceMs + c.settings.cooldownMs }
            return c.openUntilMs.map { nowMs >= $0 } ?? true
        }
    }

    /// Records a hand-off's outcome: a success closes the circuit; a failure counts, and opens it at the limit
    /// (or at once when it was the probe).
    public func record(_ provider: String, key: String, success: Bool) {
        let nowMs = clock()
        let change = circuits.withLock { all -> State? in
            guard var c = all[provider] else { return nil }
            let before = c.state
            if success {
                c.failuresInARow = 0
                c.openUntilMs = nil
                c.probe = nil
            } else {
                c.failuresInARow += 1
                let wasProbe = c.probe == key
                if wasProbe || (c.openUntilMs == nil && c.failuresInARow >= c.settings.failures) {
                    c.openUntilMs = nowMs + c.settings.cooldownMs
                    c.probe = nil
                }
            }
            all[provider] = c
            return c.state == before ? nil : c.state
        }
        if let change { changed(provider, change) }
    }

    /// A provider's state now (closed for one without a breaker).
    public func state(_ provider: String) -> State {
        circuits.withLock { $0[provider]?.state ?? .closed }
    }
}
