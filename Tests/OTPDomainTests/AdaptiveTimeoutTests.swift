import OTPDomain
import Testing

/// `timeout = "auto"`: the wait follows how fast the route delivers, within `[min, max]`, recorded in `sent`.
@Suite struct AdaptiveTimeoutRules {
    let plan = Plan(
        policy: "default",
        variant: nil,
        steps: [
            Step(channel: .sms, until: .delivered, auto: AutoTimeout(minMs: 2_000, maxMs: 60_000)),
            Step(channel: .email),
        ]
    )

    @Test func theWaitIsTheRoutesP95TimesOneAndAQuarterWithinItsBounds() {
        let auto = AutoTimeout(minMs: 2_000, maxMs: 60_000)
        #expect(auto.wait(for: RouteLatency(p95Ms: 4_000, samples: 812)) == (5_000, "p95 4000 ms of 812 in 1 h"))
        #expect(auto.wait(for: RouteLatency(p95Ms: 1_000, samples: 60)).ms == 2_000)
        #expect(auto.wait(for: RouteLatency(p95Ms: 90_000, samples: 60)).ms == 60_000)
        #expect(auto.wait(for: RouteLatency(p95Ms: 1_000, samples: 49)) == (60_000, "too few samples"))
        #expect(auto.wait(for: nil) == (60_000, "too few samples"))
    }

    @Test func theHandOffRecordsTheWaitAndTheStepTimerFollowsIt() throws {
        let g = try issuedSession(plan: plan)
        var ctx = context(100, plan: plan)
        ctx.routeLatency = { channel, country in
            channel == .sms && country == "+1" ? RouteLatency(p95Ms: 1_600, samples: 200) : nil
        }
        let d = try SessionDecider.decide(
            .recordHandOff(token: 1, messageId: "m1", provider: "log", providerRef: nil),
            state: g.state,
            context: ctx
        )
        guard case .sent(let sent) = d.events.first else {
            Issue.record("no sent event")
            return
        }
        #expect(sent.timeoutMs == 2_000 && sent.timeoutBasis == "p95 1600 ms of 200 in 1 h")
        let s = g.and(d.events, at: 100).state
        #expect(s.timers.first { $0.name == "step" }?.dueAt == 2_100)
        // The timeout fires at the chosen wait, not at max.
        let fired = try g.and(d.events, at: 100).when(.timeOutStep(token: 2), at: 2_100)
        #expect(fired.events.contains { $0.isEscalated })
    }

    @Test func aFixedStepRecordsNoWait() throws {
        let g = try issuedSession()
        let d = try g.when(.recordHandOff(token: 1, messageId: "m1", provider: "log", providerRef: nil), at: 100)
        guard case .sent(let sent) = d.events.first else {
            Issue.record("no sent event")
            return
        }
        #expect(sent.timeoutMs == nil && sent.timeoutBasis == nil)
    }
}
