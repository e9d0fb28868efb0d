import OTPService
import Testing

@Suite struct SignalTests {
    @Test func aWaitWithoutDeadlineReturnsOnASignalOnOneAlreadyPendingAndOnCancellation() async {
        let signal = Signal()
        // Pending before the wait: returns at once.
        signal.signal()
        await signal.wait()
        // A signal while waiting.
        let waiter = Task { await signal.wait() }
        try? await Task.sleep(for: .milliseconds(50))
        signal.signal()
        await waiter.value
        // Cancellation ends a wait no signal will end.
        let cancelled = Task { await signal.wait() }
        try? await Task.sleep(for: .milliseconds(50))
        cancelled.cancel()
        await cancelled.value
        // A task cancelled before it waits returns too.
        let early = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            await signal.wait()
        }
        await early.value
    }
}
