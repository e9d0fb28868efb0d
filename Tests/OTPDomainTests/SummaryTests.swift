import Testing

@testable import OTPDomain

@Suite struct SummaryTests {
    let stream = StreamID(tenant: "t", session: "s")
    let plan = Plan(policy: "login", variant: 2, steps: [Step(channel: .sms, timeoutMs: 10), Step(channel: .email)])

    func issued(country: String? = "+44") -> SessionEvent {
        .issued(
            .init(
                session: "s",
                plan: plan,
                ttlMs: 600_000,
                digits: 6,
                maxAttempts: 5,
                locale: "en",
                app: nil,
                carrier: nil,
                destinations: [],
                codeSeed: "",
                codeDigest: "",
                fingerprint: "",
                country: country
            )
        )
    }

    func fold(_ events: [SessionEvent]) -> SessionSummary {
        var s = SessionSummary(stream: stream)
        for (i, e) in events.enumerated() { s.apply(e, version: i + 1, at: 3_600_000 + Int64(i) * 100) }
        return s
    }

    @Test func anExpiredSessionCountsOnItsCurrentStepAndItsPathEndsThere() {
        let s = fold([
            issued(),
            .sent(.init(step: 1, channel: .sms, messageId: "m1", provider: "twilio", providerRef: nil, token: 1)),
            .timedOut(.init(step: 1, waitedMs: 10)),
            .escalated(.init(from: 1, to: 2, fromChannel: .sms, toChannel: .email, reason: .timeout)),
            .sent(.init(step: 2, channel: .email, messageId: "m2", provider: "smtp", providerRef: nil, token: 4)),
            .expired,
        ])
        #expect(s.status == .expired)
        #expect(s.path == [.sms, .email])
        #expect(s.messages.map(\.expired) == [false, true])
        var c = Contribution()
        c.add(s, sign: 1)
        let email = StatsKey(
            hourMs: 3_600_000,
            tenant: "t",
            channel: .email,
            country: "+44",
            policy: "login",
            variant: 2
        )
        var expected = StatsCounts()
        expected.sent = 1
        expected.expired = 1
        #expect(c.stats[email] == expected)
        #expect(c.paths.values.reduce(0, +) == 1)
    }

    @Test func aChangeSubtractsTheOldShareSoEventsInAnyBatchingGiveTheSameSum() {
        let events: [SessionEvent] = [
            issued(country: nil),
            .sent(.init(step: 1, channel: .sms, messageId: "m1", provider: "p", providerRef: nil, token: 1)),
            .delivered(.init(step: 1, channel: .sms, detail: nil, late: false, token: 1)),
            .delivered(.init(step: 1, channel: .sms, detail: nil, late: false, token: 1)),
            .verified(.init(step: 1, channel: .sms)),
        ]
        var incremental = Contribution()
        var s = SessionSummary(stream: stream)
        for (i, e) in events.enumerated() {
            let before = i == 0 ? nil : s
            s.apply(e, version: i + 1, at: 3_600_000 + Int64(i) * 100)
            s.apply(e, version: i + 1, at: 9_999_999)  // an event seen twice changes nothing
            incremental.add(Contribution.change(from: before, to: s))
        }
        var once = Contribution()
        once.add(fold(events), sign: 1)
        #expect(incremental.stats.filter { $0.value != StatsCounts() } == once.stats)
        #expect(incremental.latency.filter { $0.value != 0 } == once.latency)
        #expect(incremental.paths.filter { $0.value != 0 } == once.paths)
        #expect(once.stats.keys.map(\.country) == [StatsKey.noCountry])
        #expect(once.stats.values.first?.delivered == 1)
    }

    @Test func latencyBucketsAreLogScaleAndCoverEveryValue() {
        let b = LatencyBuckets.bounds
        #expect(b.first == 1)
        #expect(b.last == LatencyBuckets.overflow)
        #expect(zip(b, b.dropFirst()).allSatisfy { $0 < $1 })
        // Past the first few milliseconds each bound is about 2^(1/4) above the one before (rounded up to a ms).
        #expect(zip(b.dropLast(), b.dropLast().dropFirst()).allSatisfy { $0 < 20 || Double($1) / Double($0) <= 1.25 })
        #expect(LatencyBuckets.upperBound(of: 0) == 1)
        #expect(LatencyBuckets.upperBound(of: 1_000) >= 1_000)
        #expect(LatencyBuckets.upperBound(of: 1_000) < 1_190)
        #expect(LatencyBuckets.upperBound(of: 10_000_000_000) == LatencyBuckets.overflow)
    }
}
