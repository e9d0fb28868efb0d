import OTPService
import Synchronization
import Testing

@Suite struct CircuitBreakerTests {
    final class Clock: Sendable {
        let ms = Mutex<Int64>(0)
        func advance(_ by: Int64) { ms.withLock { $0 += by } }
        func now() -> Int64 { ms.withLock { $0 } }
    }

    final class Changes: Sendable {
        let list = Mutex<[String]>([])
    }

    static func breakers(_ clock: Clock, changes: Changes? = nil) -> CircuitBreakers {
        var settings = BreakerSettings()
        settings.failures = 3
        settings.cooldownMs = 1_000
        return CircuitBreakers(
            ["a": settings],
            clock: { clock.now() },
            changed: { name, state in
                changes?.list.withLock { $0.append("\(name)=\(state.rawValue)") }
            }
        )
    }

    @Test func failuresInARowOpenTheCircuitAndASuccessInBetweenStartsTheCountAgain() {
        let clock = Clock()
        let b = Self.breakers(clock)
        b.record("a", key: "s#1", success: false)
        b.record("a", key: "s#2", success: false)
        b.record("a", key: "s#3", success: true)
        b.record("a", key: "s#4", success: false)
        b.record("a", key: "s#5", success: false)
        #expect(b.state("a") == .closed)
        b.record("a", key: "s#6", success: false)
        #expect(b.state("a") == .open)
        #expect(!b.admit("a", key: "s#7"))
        #expect(!b.wouldAdmit("a"))
        clock.advance(999)
        #expect(!b.admit("a", key: "s#7"))
    }

    @Test func afterTheCooldownOneMessageProbesAndItsOutcomeClosesOrReopens() {
        let clock = Clock()
        let changes = Changes()
        let b = Self.breakers(clock, changes: changes)
        for i in 1...3 { b.record("a", key: "s#\(i)", success: false) }
        clock.advance(1_000)
        #expect(b.wouldAdmit("a"))
        #expect(b.admit("a", key: "probe#1"))
        #expect(b.state("a") == .probing)
        #expect(!b.admit("a", key: "other#1"), "one probe at a time")
        #expect(b.admit("a", key: "probe#1"), "the probe's own retries go through")
        b.record("a", key: "probe#1", success: false)
        #expect(b.state("a") == .open, "a failed probe opens the circuit for another cooldown")
        #expect(!b.admit("a", key: "other#1"))
        clock.advance(1_000)
        #expect(b.admit("a", key: "probe#2"))
        b.record("a", key: "probe#2", success: true)
        #expect(b.state("a") == .closed)
        #expect(b.admit("a", key: "any#1"))
        #expect(changes.list.withLock { $0 } == ["a=1", "a=2", "a=1", "a=2", "a=0"])
    }

    @Test func aProbeThatNeverReportsGivesWayAfterACooldown() {
        let clock = Clock()
        let b = Self.breakers(clock)
        for i in 1...3 { b.record("a", key: "s#\(i)", success: false) }
        clock.advance(1_000)
        #expect(b.admit("a", key: "lost#1"))
        clock.advance(500)
        #expect(!b.admit("a", key: "next#1"))
        clock.advance(500)
        #expect(b.admit("a", key: "next#1"))
    }

    @Test func aProviderWithoutABreakerIsAlwaysTried() {
        let b = Self.breakers(Clock())
        for i in 1...10 { b.record("solo", key: "s#\(i)", success: false) }
        #expect(b.admit("solo", key: "s#11"))
        #expect(b.state("solo") == .closed)
    }
}
