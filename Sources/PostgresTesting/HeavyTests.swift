import Foundation
import Synchronization
import Testing

/// A trait for tests that start servers, clusters or child processes: at most `HeavyTests.width` of them run at
/// once, across every suite and test target of the test process.
///
/// Swift Testing starts every test of a run at once. The tests of this package that start an otpd, a mail server
/// or a Python peer each wait on timers, receipts and child processes, and with forty of them sharing two cores
/// those waits stretched past their bounds on a loaded machine (timeouts that fired late, retries counted twice).
/// Bounding how many run together keeps each one's timing what it asserts, instead of widening every bound.
/// Pure tests (the domain, the wire's decoders) stay unbounded: they neither wait nor load the machine.
///
/// Use it on a suite, `@Suite(.heavy)`, and every test case in it takes a slot while it runs.
/// `OTPD_TEST_WIDTH` sets the width (default 4).
public struct HeavyTestTrait: SuiteTrait, TestTrait, TestScoping {
    public var isRecursive: Bool { true }

    public func provideScope(
        for test: Test,
        testCase: Test.Case?,
        performing function: @Sendable () async throws -> Void
    ) async throws {
        await HeavyTests.slots.acquire()
        defer { HeavyTests.slots.release() }
        try await function()
    }
}

extension Trait where Self == HeavyTestTrait {
    /// At most `HeavyTests.width` such tests at once (see `HeavyTestTrait`).
    public static var heavy: HeavyTestTrait { HeavyTestTrait() }
}

/// The slots `HeavyTestTrait` hands out.
public enum HeavyTests {
    /// How many heavy tests run at once: `OTPD_TEST_WIDTH` when it is a positive integer, else 4.
    public static let width: Int = {
        if let text = ProcessInfo.processInfo.environment["OTPD_TEST_WIDTH"], let value = Int(text), value > 0 {
            return value
        }
        return 4
    }()

    static let slots = Slots(width: width)
}

/// A counting semaphore for tasks, first come first served.
final class Slots: Sendable {
    private struct State {
        var free: Int
        var waiters: [CheckedContinuation<Void, Never>] = []
    }
    private let state: Mutex<State>

    init(width: Int) { state = Mutex(State(free: width)) }

    func acquire() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let granted = state.withLock { state -> Bool in
                if state.free > 0 {
                    state.free -= 1
                    return true
                }
                state.waiters.append(continuation)
                return false
            }
            if granted { continuation.resume() }
        }
    }

    func release() {
        let next = state.withLock { state -> CheckedContinuation<Void, Never>? in
            if state.waiters.isEmpty {
                state.free += 1
                return nil
            }
            return state.waiters.removeFirst()
        }
        next?.resume()
    }
}
