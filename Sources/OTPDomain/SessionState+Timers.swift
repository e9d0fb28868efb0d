/// A deadline a session is waiting for, kept in the `timers` table and fired by the scheduler.
public struct TimerSpec: Sendable, Hashable {
    /// Which deadline: `step` (the current step's wait) or `expiry` (the TTL).
    public var name: String
    /// When it is due (Unix epoch milliseconds, database clock).
    public var dueAt: Int64
    /// The state version that set it; a firing with another token is stale and ignored by `decide`.
    public var token: Int

    /// Creates a timer.
    public init(name: String, dueAt: Int64, token: Int) {
        self.name = name
        self.dueAt = dueAt
        self.token = token
    }

    /// The command the scheduler runs when the timer fires.
    public var command: SessionCommand? {
        switch name {
        case "step": .timeOutStep(token: token)
        case "expiry": .expire
        default: nil
        }
    }
}

extension SessionState {
    /// The deadlines this state waits for, derived from it alone (so they can be written with its events).
    public var timers: [TimerSpec] {
        guard issued != nil, status.isActive else { return [] }
        var out = [TimerSpec(name: "expiry", dueAt: expiresAt, token: 1)]
        if status == .sent || status == .delivered, let timeout = stepWaitMs ?? currentStep?.timeoutMs, let sentAt,
            let sentVersion, !untilSatisfied, !currentStepTimedOut, !erased
        {
            out.append(TimerSpec(name: "step", dueAt: sentAt.saturatingAdd(timeout), token: sentVersion))
        }
        return out
    }
}
