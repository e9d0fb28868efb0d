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

    /// Waits until signalled or until `timeout` has passed.
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
