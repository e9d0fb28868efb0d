import OTPDomain
import Testing

@Suite struct TimerRules {
    @Test func aPendingSessionWaitsOnlyForItsExpiry() throws {
        let s = try issuedSession().state
        #expect(s.timers == [TimerSpec(name: "expiry", dueAt: 600_000, token: 1)])
    }

    @Test func aSentStepWaitsForItsTimeoutFromTheHandOff() throws {
        let s = try sentSession().state
        #expect(
            s.timers == [
                TimerSpec(name: "expiry", dueAt: 600_000, token: 1), TimerSpec(name: "step", dueAt: 15_100, token: 2),
            ]
        )
        #expect(s.timers[1].command == .timeOutStep(token: 2))
    }

    @Test func theStepTimerGoesOnceItsUntilReceiptComes() throws {
        let g = try sentSession()
        let d = try g.when(.recordReceipt(channel: .sms, outcome: .delivered, detail: nil), at: 200)
        #expect(g.and(d.events, at: 200).state.timers.map(\.name) == ["expiry"])
    }

    @Test func aLastStepWithoutTimeoutAndFinishedSessionsHaveNoStepTimer() throws {
        let plan = Plan(policy: "p", variant: nil, steps: [Step(channel: .push)])
        #expect(try sentSession(plan: plan).state.timers.map(\.name) == ["expiry"])
        let g = try sentSession()
        let v = try g.when(.verify(code: "123456"), at: 200)
        #expect(g.and(v.events, at: 200).state.timers.isEmpty)
    }

    @Test func smsSilentFallsThroughEveryChannelToExhausted() throws {
        let plan = Plan(
            policy: "p",
            variant: nil,
            steps: [
                Step(channel: .sms, timeoutMs: 100), Step(channel: .email, timeoutMs: 100),
                Step(channel: .voice, timeoutMs: 100), Step(channel: .push, timeoutMs: 100),
            ]
        )
        var g = try issuedSession(plan: plan)
        var t: Int64 = 10
        var types: [String] = []
        for _ in 0..<4 {
            let handOff = try g.when(
                .recordHandOff(
                    token: g.state.stepStartedVersion,
                    messageId: "m",
                    provider: "log",
                    providerRef: nil
                ),
                at: t
            )
            g = g.and(handOff.events, at: t)
            t += 150
            guard let timer = g.state.timers.first(where: { $0.name == "step" }), let command = timer.command else {
                Issue.record("no step timer")
                return
            }
            let fired = try g.when(command, at: t)
            g = g.and(fired.events, at: t)
            types += (handOff.events + fired.events).map(\.type)
        }
        #expect(
            types == [
                "sent", "timed_out", "escalated", "sent", "timed_out", "escalated", "sent", "timed_out", "escalated",
                "sent", "timed_out", "exhausted",
            ]
        )
        #expect(g.state.status == .exhausted)
        #expect(try g.when(.verify(code: "123456"), at: t).verifyResult == .verified)
    }
}

@Suite struct LateReceiptRules {
    /// Step 1 sent at 100, timed out at 15 100: step 2 is queued but not handed off.
    func escalatedOnTimeout() throws -> Given {
        let g = try sentSession()
        let d = try g.when(.timeOutStep(token: 2), at: 15_100)
        return g.and(d.events, at: 15_100)
    }

    @Test func aLateDeliveryBeforeTheNextHandOffWithdrawsTheEscalation() throws {
        let g = try escalatedOnTimeout()
        #expect(g.state.step == 2)
        let d = try g.when(.recordReceipt(channel: .sms, outcome: .delivered, detail: nil), at: 15_200)
        #expect(
            d.events == [
                .delivered(.init(step: 1, channel: .sms, detail: nil, late: true, token: 1)),
                .escalationWithdrawn(.init(from: 2, to: 1, channel: .sms, outcome: .delivered)),
            ]
        )
        let after = g.and(d.events, at: 15_200)
        #expect(after.state.step == 1)
        #expect(after.state.status == .delivered)
        #expect(!after.state.awaitsHandOff(token: 4, now: 0))  // the queued e-mail is not sent
        #expect(after.state.timers.map(\.name) == ["expiry"])
        #expect(
            try after.when(.verify(code: "123456"), at: 16_000).events == [.verified(.init(step: 1, channel: .sms))]
        )
    }

    @Test func aReceiptForAWithdrawnStepsMessageIsRecordedLate() throws {
        var g = try escalatedOnTimeout()
        let d = try g.when(.recordReceipt(channel: .sms, outcome: .delivered, detail: nil), at: 15_200)
        g = g.and(d.events, at: 15_200)  // the e-mail step (token 4) is withdrawn
        let h = try g.when(.recordHandOff(token: 4, messageId: "m2", provider: "log", providerRef: nil), at: 15_300)
        g = g.and(h.events, at: 15_300)  // its message had gone out all the same
        let r = try g.when(.recordReceipt(channel: .email, outcome: .opened, detail: nil, token: 4), at: 16_000)
        #expect(r.events == [.opened(.init(step: 2, channel: .email, detail: nil, late: true, token: 4))])
        #expect(g.and(r.events, at: 16_000).state.step == 1)  // recorded for analytics; the session stays put
    }

    @Test func aLateDeliveryAfterTheNextHandOffIsOnlyRecorded() throws {
        var g = try escalatedOnTimeout()
        let h = try g.when(.recordHandOff(token: 4, messageId: "m2", provider: "log", providerRef: nil), at: 15_150)
        g = g.and(h.events, at: 15_150)
        let d = try g.when(.recordReceipt(channel: .sms, outcome: .delivered, detail: nil), at: 15_200)
        #expect(d.events == [.delivered(.init(step: 1, channel: .sms, detail: nil, late: true, token: 1))])
    }

    @Test func aResendIsNotWithdrawnByALateReceipt() throws {
        let g = try sentSession()
        let r = try g.when(.resend, at: 200)
        let after = g.and(r.events, at: 200)
        let d = try after.when(.recordReceipt(channel: .sms, outcome: .delivered, detail: nil), at: 300)
        #expect(d.events.count == 1)
    }
}

@Suite struct WithdrawnHandOffRules {
    @Test func aHandOffAlreadyUnderWayWhenTheEscalationWasWithdrawnIsStillRecorded() throws {
        let g = try sentSession()
        let t = try g.when(.timeOutStep(token: 2), at: 15_100)
        var after = g.and(t.events, at: 15_100)
        let r = try after.when(.recordReceipt(channel: .sms, outcome: .delivered, detail: nil), at: 15_200)
        after = after.and(r.events, at: 15_200)
        #expect(after.state.step == 1)
        // The dispatcher had already called the e-mail provider (token 4) when the withdrawal committed.
        let h = try after.when(
            .recordHandOff(token: 4, messageId: "m2", provider: "webhook", providerRef: nil),
            at: 15_300
        )
        #expect(
            h.events == [
                .sent(.init(step: 2, channel: .email, messageId: "m2", provider: "webhook", providerRef: nil, token: 4))
            ]
        )
        let final = after.and(h.events, at: 15_300)
        #expect(final.state.step == 1)
        #expect(final.state.status == .delivered)
        #expect(
            try final.when(.recordHandOff(token: 4, messageId: "m2", provider: "webhook", providerRef: nil), at: 15_400)
                .events.isEmpty
        )
    }
}

@Suite struct OneDeadlineFiresOnce {
    /// E-mail first (until opened, 1 s), then SMS: the e-mail was sent at 100 and timed out at 1 100.
    let plan = Plan(
        policy: "p",
        variant: nil,
        steps: [Step(channel: .email, timeoutMs: 1_000, until: .opened), Step(channel: .sms, timeoutMs: 1_000)]
    )

    func emailTimedOut() throws -> Given {
        let g = try sentSession(plan: plan)
        let d = try g.when(.timeOutStep(token: 2), at: 1_100, plan: plan)
        #expect(d.events.map(\.type) == ["timed_out", "escalated"])
        return g.and(d.events, at: 1_100)
    }

    @Test func aLateReceiptThatDoesNotSatisfyTheStepsUntilWithdrawsNothing() throws {
        let g = try emailTimedOut()
        let d = try g.when(.recordReceipt(channel: .email, outcome: .delivered, detail: nil), at: 1_200, plan: plan)
        #expect(d.events == [.delivered(.init(step: 1, channel: .email, detail: nil, late: true, token: 1))])
        let after = g.and(d.events, at: 1_200)
        #expect(after.state.step == 2)
        #expect(after.state.awaitsHandOff(token: 4, now: 0))  // the SMS still goes out
        #expect(try after.when(.timeOutStep(token: 2), at: 5_000, plan: plan).events.isEmpty)
    }

    @Test func aStepThatCameBackAfterItsTimeoutNeverTimesOutAgain() throws {
        // A history an earlier version could record: the e-mail's escalation withdrawn by a mere delivery.
        let g = try emailTimedOut().and(
            [
                .delivered(.init(step: 1, channel: .email, detail: nil, late: true)),
                .escalationWithdrawn(.init(from: 2, to: 1, channel: .email, outcome: .delivered)),
            ],
            at: 1_200
        )
        #expect(g.state.step == 1)
        #expect(g.state.timers.map(\.name) == ["expiry"])  // no revived, past-due step timer
        #expect(try g.when(.timeOutStep(token: 2), at: 5_000, plan: plan).events.isEmpty)
    }

    @Test func aHandOffRecordsTheStartItBelongsTo() throws {
        let g = try issuedSession()
        let d = try g.when(.recordHandOff(token: 1, messageId: "m1", provider: "log", providerRef: nil), at: 100)
        #expect(
            d.events == [
                .sent(.init(step: 1, channel: .sms, messageId: "m1", provider: "log", providerRef: nil, token: 1))
            ]
        )
    }

    @Test func aSentRecordedWithoutItsTokenStillFoldsOntoItsStep() throws {
        let g = try issuedSession().and(
            [.sent(.init(step: 1, channel: .sms, messageId: "m1", provider: "log", providerRef: nil))],
            at: 100
        )
        #expect(g.state.status == .sent)
        #expect(g.state.sentVersion == 2)
    }
}

@Suite struct TimesAtTheEndOfTime {
    @Test func eventsRecordedNearTheEndOfTimeFoldAndDecideWithoutTrapping() throws {
        let late = Int64.max - 10
        let g = try issuedSession().and([], at: 0)
        let issued = try #require(g.events.first?.event)
        let far = Given([(issued, late)])
        #expect(far.state.expiresAt == .max)  // saturated, not wrapped
        let sent = try far.when(.recordHandOff(token: 1, messageId: "m", provider: "log", providerRef: nil), at: late)
        let after = far.and(sent.events, at: late)
        #expect(after.state.timers.first(where: { $0.name == "step" })?.dueAt == .max)
        #expect(try after.when(.timeOutStep(token: 2), at: .max).events.isEmpty)
    }
}

/// Receipts that name their message (through its step's token) land on that message, even when one channel
/// was sent twice (RESEND on the last step).
@Suite struct ReceiptsNamingTheirMessageTests {
    static let smsOnly = Plan(
        policy: "default",
        variant: nil,
        steps: [Step(channel: .sms, timeoutMs: 60_000, until: .delivered)]
    )

    /// Sent at 100 (token 1), resent at 40 000 (token 3), the second SMS handed off at 40 100.
    static func resent() throws -> Given {
        var g = try sentSession(plan: smsOnly)
        let resend = try g.when(.resend, at: 40_000, plan: smsOnly)
        #expect(resend.events.count == 1)
        g = g.and(resend.events, at: 40_000)
        let handOff = try g.when(
            .recordHandOff(token: 3, messageId: "m3", provider: "log", providerRef: nil),
            at: 40_100,
            plan: smsOnly
        )
        return g.and(handOff.events, at: 40_100)
    }

    @Test func aLateReceiptForTheFirstSMSDoesNotSwallowTheSecondOnes() throws {
        var g = try Self.resent()
        let first = try g.when(.recordReceipt(channel: .sms, outcome: .delivered, detail: nil, token: 1), at: 41_000)
        #expect(first.events == [.delivered(.init(step: 1, channel: .sms, detail: nil, late: true, token: 1))])
        g = g.and(first.events, at: 41_000)
        #expect(g.state.status == .sent)  // a late receipt does not deliver the current message

        let second = try g.when(.recordReceipt(channel: .sms, outcome: .delivered, detail: nil, token: 3), at: 42_000)
        #expect(second.events == [.delivered(.init(step: 1, channel: .sms, detail: nil, late: false, token: 3))])
        g = g.and(second.events, at: 42_000)
        #expect(g.state.status == .delivered)

        // Each message's receipt is recorded once.
        for token in [1, 3] {
            let again = try g.when(
                .recordReceipt(channel: .sms, outcome: .delivered, detail: nil, token: token),
                at: 43_000
            )
            #expect(again.events.isEmpty)
        }
    }

    @Test func aReceiptNamingNoMessageOfItsChannelIsABadArgument() throws {
        let g = try Self.resent()
        #expect(throws: Rejection.self) {
            try g.when(.recordReceipt(channel: .sms, outcome: .delivered, detail: nil, token: 2), at: 41_000)
        }
        #expect(throws: Rejection.self) {
            try g.when(.recordReceipt(channel: .email, outcome: .delivered, detail: nil, token: 1), at: 41_000)
        }
    }
}
