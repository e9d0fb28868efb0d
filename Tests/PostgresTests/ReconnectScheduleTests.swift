import Testing

@testable import Postgres

/// An instant of `ManualClock`: an offset from the clock's start.
struct ManualInstant: InstantProtocol {
    var offset: Duration

    func advanced(by duration: Duration) -> ManualInstant { ManualInstant(offset: offset + duration) }
    func duration(to other: ManualInstant) -> Duration { other.offset - offset }
    static func < (lhs: ManualInstant, rhs: ManualInstant) -> Bool { lhs.offset < rhs.offset }
}

/// A clock that moves only when the test says so.
struct ManualClock {
    private(set) var now = ManualInstant(offset: .zero)

    mutating func advance(by duration: Duration) { now = now.advanced(by: duration) }
}

/// A seeded generator (SplitMix64), so the jitter is random but every run draws the same.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

typealias Schedule = ReconnectSchedule<ManualInstant>

/// A schedule driven by a manual clock and a seeded jitter source, as a worker's thread would drive it.
struct Harness {
    var clock = ManualClock()
    var jitter = SeededGenerator(state: 42)
    var schedule: Schedule
    let attemptTimeout = Duration.seconds(2)

    init() {
        schedule = Schedule(now: clock.now, attemptTimeout: attemptTimeout)
    }

    /// What the schedule says to do now.
    var next: Schedule.Action { schedule.next(at: clock.now) }

    mutating func advance(by duration: Duration) { clock.advance(by: duration) }

    /// Waits out any backoff, then starts an attempt.
    mutating func startAttempt() {
        if case .backOff(let due) = next { clock.advance(by: clock.now.duration(to: due)) }
        #expect(next == .connect)
        schedule.attemptStarted(at: clock.now)
    }

    /// Fails `count` attempts in a row, each 3 ms after it starts, waiting out every backoff but the last.
    mutating func failAttempts(_ count: Int) {
        for _ in 0..<count {
            startAttempt()
            clock.advance(by: .milliseconds(3))
            schedule.attemptFailed(at: clock.now, using: &jitter)
        }
    }

    /// Waits out any backoff, then connects 3 ms after the attempt starts.
    mutating func connect() {
        startAttempt()
        clock.advance(by: .milliseconds(3))
        schedule.connected(at: clock.now)
    }

    /// The connection is lost `lifetime` after it was established.
    mutating func loseConnection(after lifetime: Duration) {
        clock.advance(by: lifetime)
        schedule.connectionLost(at: clock.now, using: &jitter)
    }
}

@Suite("ReconnectSchedule")
struct ReconnectScheduleTests {
    @Test func theFirstAttemptIsDueAtOnce() {
        let harness = Harness()
        #expect(harness.next == .connect)
        #expect(harness.schedule.failures == 0)
    }

    @Test func theBackoffCeilingDoublesFrom100MillisecondsToTheFiveSecondCap() {
        let ceilings = (1...9).map { Schedule.backoffCeiling(failures: $0) }
        #expect(ceilings == [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000].map { Duration.milliseconds($0) })
        #expect(Schedule.backoffCeiling(failures: 0) == .milliseconds(100))
        #expect(Schedule.backoffCeiling(failures: 1_000_000) == .seconds(5))
    }

    @Test func jitterKeepsEveryBackoffBetweenHalfItsCeilingAndTheCeiling() throws {
        var jitter = SeededGenerator(state: 7)
        for failures in 1...8 {
            let ceiling = Schedule.backoffCeiling(failures: failures)
            let delays = (0..<2000).map { _ in Schedule.backoff(failures: failures, using: &jitter) }
            #expect(delays.allSatisfy { $0 >= ceiling / 2 && $0 <= ceiling })
            // And it does spread over that range.
            #expect(try #require(delays.min()) < ceiling * 0.51)
            #expect(try #require(delays.max()) > ceiling * 0.99)
        }
    }

    @Test func eachFailedAttemptBacksOffLongerUntilTheCap() {
        var harness = Harness()
        for failures in 1...9 {
            harness.failAttempts(1)
            let ceiling = Schedule.backoffCeiling(failures: failures)
            let backoff = harness.schedule.backoff ?? .zero
            #expect(harness.schedule.failures == failures)
            #expect(backoff >= ceiling / 2 && backoff <= ceiling)
            let due = harness.clock.now.advanced(by: backoff)
            #expect(harness.next == .backOff(until: due))
            harness.advance(by: backoff - .nanoseconds(1))
            #expect(harness.next == .backOff(until: due))
            harness.advance(by: .nanoseconds(1))
            #expect(harness.next == .connect)
        }
    }

    @Test func aConnectionThatLastedResetsTheBackoff() {
        var harness = Harness()
        harness.failAttempts(5)
        harness.connect()
        #expect(harness.next == .runBodies)
        #expect(harness.schedule.backoff == nil)

        harness.loseConnection(after: .seconds(2))
        #expect(harness.schedule.failures == 0)
        #expect(harness.next == .connect)

        harness.failAttempts(1)
        #expect((harness.schedule.backoff ?? .zero) <= .milliseconds(100))
    }

    @Test func aConnectionLostWithinASecondCountsAsAFailure() {
        var harness = Harness()
        harness.failAttempts(3)
        harness.connect()

        harness.loseConnection(after: .milliseconds(500))
        #expect(harness.schedule.failures == 4)
        let backoff = harness.schedule.backoff ?? .zero
        #expect(backoff >= .milliseconds(400) && backoff <= .milliseconds(800))
        #expect(harness.next == .backOff(until: harness.clock.now.advanced(by: backoff)))
    }

    @Test func retrySoonWhileBackingOffMakesTheNextAttemptImmediate() {
        var harness = Harness()
        harness.failAttempts(6)
        let backoff = harness.schedule.backoff ?? .zero
        #expect(backoff >= .milliseconds(1600))
        let due = harness.clock.now.advanced(by: backoff)
        harness.advance(by: .milliseconds(10))
        #expect(harness.next == .backOff(until: due))

        harness.schedule.retrySoon(at: harness.clock.now)
        #expect(harness.next == .connect)
        // The failures are remembered: if the database is gone again, the backoff goes on growing.
        #expect(harness.schedule.failures == 6)
        harness.failAttempts(1)
        #expect((harness.schedule.backoff ?? .zero) >= Schedule.backoffCeiling(failures: 7) / 2)
    }

    @Test func retrySoonWhileConnectingOrConnectedChangesNothing() {
        var harness = Harness()
        harness.startAttempt()
        let connecting = harness.schedule.phase
        harness.schedule.retrySoon(at: harness.clock.now)
        #expect(harness.schedule.phase == connecting)

        harness.schedule.connected(at: harness.clock.now)
        let connected = harness.schedule.phase
        harness.schedule.retrySoon(at: harness.clock.now)
        #expect(harness.schedule.phase == connected)
    }

    @Test func bodiesFailFastWhileBackingOffButWaitForAnAttemptInFlight() {
        var harness = Harness()
        // Given an attempt in flight, bodies wait for it (until its deadline).
        harness.startAttempt()
        let deadline = harness.clock.now.advanced(by: harness.attemptTimeout)
        harness.advance(by: .milliseconds(50))
        #expect(harness.next == .awaitAttempt(deadline: deadline))
        #expect(harness.schedule.backoff == nil)

        // When it fails, the worker backs off, and bodies submitted meanwhile fail fast.
        harness.schedule.attemptFailed(at: harness.clock.now, using: &harness.jitter)
        let backoff = harness.schedule.backoff ?? .zero
        #expect(backoff > .zero)
        #expect(harness.next == .backOff(until: harness.clock.now.advanced(by: backoff)))
    }

    @Test func anAttemptThatOutlivesItsTimeoutIsAbandoned() {
        var harness = Harness()
        harness.startAttempt()
        let deadline = harness.clock.now.advanced(by: harness.attemptTimeout)
        harness.advance(by: harness.attemptTimeout - .nanoseconds(1))
        #expect(harness.next == .awaitAttempt(deadline: deadline))

        harness.advance(by: .nanoseconds(1))
        #expect(harness.next == .abandonAttempt)
        harness.schedule.attemptFailed(at: harness.clock.now, using: &harness.jitter)
        #expect(harness.schedule.failures == 1)
        #expect(harness.next == .backOff(until: harness.clock.now.advanced(by: harness.schedule.backoff ?? .zero)))
    }

    /// The phases shutdown can arrive in.
    enum Phase: CaseIterable {
        case dueToConnect
        case backingOff
        case connecting
        case connected
    }

    @Test(arguments: Phase.allCases)
    func shutdownWinsOverEverything(in phase: Phase) {
        var harness = Harness()
        switch phase {
        case .dueToConnect: break
        case .backingOff: harness.failAttempts(2)
        case .connecting: harness.startAttempt()
        case .connected: harness.connect()
        }

        harness.schedule.shutDown()
        #expect(harness.next == .shutDown)

        // Whatever is reported afterwards, and however much time passes, it stays shut down.
        harness.schedule.retrySoon(at: harness.clock.now)
        harness.schedule.attemptStarted(at: harness.clock.now)
        harness.schedule.connected(at: harness.clock.now)
        harness.loseConnection(after: .seconds(10))
        harness.schedule.attemptFailed(at: harness.clock.now, using: &harness.jitter)
        harness.advance(by: .seconds(10))
        #expect(harness.next == .shutDown)
        #expect(harness.schedule.phase == .shutDown)
        #expect(harness.schedule.backoff == nil)
    }
}
