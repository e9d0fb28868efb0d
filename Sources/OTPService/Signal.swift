import Synchronization

/// A wake-up flag between tasks: `signal` sets it, `wait` returns when set (or after a timeout) and clears it.
public final class Signal: Sendable {
    private let state = Mutex(State())

    private struct State {
        var pending = false
        var waiters: [CheckedContinuation<Void, Never>] = []
    }

    /// Creates an unset signal.
    public init() {}

    /// Wakes every waiter, or the next one to wait.
    public func signal() {
        let waiters = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            if s.waiters.isEmpty {
                s.pending = true
                return []
            }
            defer { s.waiters = [] }
            return s.waiters
        }
        for w in waiters { w.resume() }
    }

    /// Waits for the next signal (or one already pending), with no deadline; a cancelled task returns at once.
    ///
    /// For a wait that signals usually cut short: a `Task.sleep` cut short by cancellation keeps its timer (and the
    /// task that carries it) until its deadline, so a long timeout raced against frequent signals keeps one of
    /// those per signal for the whole timeout (the live feed's hour-long idle wait, woken by every append, held
    /// some 230 MB after 1,000,000 sessions).
    public func wait() async {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let resumeNow = state.withLock { s -> Bool in
                    if s.pending || Task.isCancelled {
                        s.pending = false
                        return true
                    }
                    s.waiters.append(c)
                    return false
                }
                if resumeNow { c.resume() }
            }
        } onCancel: {
            // Wakes the waiter (or leaves the signal pending for it, when it is not stored yet).
            self.signal()
        }
    }

    /// Waits for the next signal, or `timeout` at most (keep it short where signals are frequent: see `wait()`).
    public func wait(timeout: Duration) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                    let resumeNow = self.state.withLock { s -> Bool in
                        if s.pending {
                            s.pending = false
                            return true
                        }
                        s.waiters.append(c)
                        return false
                    }
                    if resumeNow { c.resume() }
                }
            }
            group.addTask { try? await Task.sleep(for: timeout) }
            await group.next()
            // Whichever finished first, release the other.
            self.signal()
            group.cancelAll()
            await group.waitForAll()
            self.state.withLock { $0.pending = false }
        }
    }
}

/// One event that several loops wait for, each on a signal of its own: a wake one of them has not waited for
/// yet stays pending for it, and is never taken by another.
public final class SignalFan: Sendable {
    private let signals = Mutex<[Signal]>([])

    /// Creates a fan with no listener.
    public init() {}

    /// Wakes every listener (or marks it pending until it waits).
    public func signal() {
        for s in signals.withLock({ $0 }) { s.signal() }
    }

    /// A new listener's signal.
    public func listener() -> Signal {
        let s = Signal()
        signals.withLock { $0.append(s) }
        return s
    }
}
