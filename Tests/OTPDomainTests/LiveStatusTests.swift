import OTPDomain
import Testing

/// The live feed's message: where a session stands and what happens next, without a code or a destination.
@Suite struct LiveStatusTests {
    @Test func noSessionHasNoMessage() {
        #expect(LiveStatus(SessionState(), type: "issued", at: 0) == nil)
    }

    @Test func aSentStepSaysWhenItsWaitEndsAndWhereTheSessionGoesThen() throws {
        let m = try #require(LiveStatus(try sentSession().state, type: "sent", at: 100))
        #expect(m.status == .sent && m.channel == .sms && m.step == 1 && m.version == 2)
        #expect(m.nextChannel == .email && m.nextAt == 15_100)
        #expect(
            m.json
                == #"{"session":"s1","status":"sent","version":2,"type":"sent","channel":"sms","step":1,"#
                + #""next_channel":"email","next_at":15100,"at":100}"#
        )
    }

    @Test func aPendingOrFinishedSessionWaitsForNothing() throws {
        let pending = try #require(LiveStatus(try issuedSession().state, type: "issued", at: 0))
        #expect(pending.status == .pending && pending.nextAt == nil && pending.nextChannel == nil)
        let g = try sentSession()
        let v = try g.when(.verify(code: "123456"), at: 200)
        let verified = try #require(LiveStatus(g.and(v.events, at: 200).state, type: "verified", at: 200))
        #expect(verified.status == .verified && verified.nextAt == nil)
        #expect(verified.json.contains(#""next_channel":null,"next_at":null"#))
    }

    @Test func theLastStepsWaitEndsTheSession() throws {
        let plan = Plan(policy: "p", variant: nil, steps: [Step(channel: .sms, timeoutMs: 5_000)])
        let m = try #require(LiveStatus(try sentSession(plan: plan).state, type: "sent", at: 100))
        #expect(m.nextAt == 5_100 && m.nextChannel == nil)
    }

    @Test func aSessionIdIsQuotedAsJSON() {
        #expect(JSONText.quoted("a\"b\\c\n\u{1}") == #""a\"b\\c\n\u0001""#)
    }
}
