import OTPDomain
import Testing

@Suite struct IssueRules {
    @Test func issueRecordsOneIssuedEventWithDigestAndNoCode() throws {
        let d = try Given().when(.issue(request()), at: 0)
        #expect(d.events.count == 1)
        guard case .issued(let i) = d.events[0] else {
            Issue.record("not issued")
            return
        }
        #expect(i.codeDigest == "default/s1|123456")
        #expect(i.codeSeed != "123456")
        #expect(i.plan == defaultPlan)
        #expect(i.ttlMs == 600_000)
    }

    @Test func issuedSessionIsPendingOnStepOneUntilHandedOff() throws {
        let s = try issuedSession().state
        #expect(s.status == .pending)
        #expect(s.step == 1)
        #expect(s.attemptsLeft == 5)
        #expect(s.expiresAt == 600_000)
        #expect(s.awaitsHandOff(token: 1, now: 0))
    }

    @Test func aSessionPastItsTTLSendsNothingEvenBeforeItsExpiryIsRecorded() throws {
        let s = try issuedSession().state
        #expect(s.awaitsHandOff(token: 1, now: 599_999))
        #expect(!s.awaitsHandOff(token: 1, now: 600_000))
    }

    @Test func sameIssueAgainRecordsNothing() throws {
        let g = try issuedSession()
        let d = try g.when(.issue(request()), at: 50)
        #expect(d.events.isEmpty)
    }

    @Test func issueWithOtherArgumentsConflicts() throws {
        let g = try issuedSession()
        #expect(throws: Rejection.self) { try g.when(.issue(request(fingerprint: "other")), at: 50) }
    }

    @Test func outOfRangeOptionsAreBadArguments() {
        #expect(throws: Rejection.badArgument("TTL must be 30 to 3600 seconds")) {
            try Given().when(.issue(request(ttl: 29)), at: 0)
        }
        #expect(throws: Rejection.badArgument("MAXATTEMPTS must be 1 to 10")) {
            try Given().when(.issue(request(maxAttempts: 11)), at: 0)
        }
    }

    @Test func commandsOnAMissingSessionAreNotFound() {
        for c: SessionCommand in [
            .verify(code: "1"), .resend, .cancel, .expire,
            .recordReceipt(channel: .sms, outcome: .delivered, detail: nil),
        ] {
            #expect(throws: Rejection.notFound) { try Given().when(c, at: 0) }
        }
    }
}

@Suite struct VerifyRules {
    @Test func rightCodeVerifiesOnceOnTheCurrentStep() throws {
        let g = try sentSession()
        let d = try g.when(.verify(code: "123456"), at: 200)
        #expect(d.verifyResult == .verified)
        #expect(d.events == [.verified(.init(step: 1, channel: .sms))])
        let after = g.and(d.events, at: 200)
        #expect(after.state.status == .verified)
        #expect(after.state.verifiedAt == 200)
        let again = try after.when(.verify(code: "123456"), at: 300)
        #expect(again.verifyResult == .alreadyVerified)
        #expect(again.events.isEmpty)
    }

    @Test func wrongCodeCountsDownAttempts() throws {
        let g = try sentSession()
        let d = try g.when(.verify(code: "000000"), at: 200)
        #expect(d.verifyResult == .mismatch)
        #expect(d.events == [.verificationFailed(.init(attemptsLeft: 4))])
    }

    @Test func nonDigitsAndWrongLengthAreMismatches() throws {
        let g = try sentSession()
        for code in ["abcdef", "1234567", "", "12345"] {
            #expect(try g.when(.verify(code: code), at: 200).verifyResult == .mismatch)
        }
    }

    @Test func fifthWrongCodeLocksAndRightCodeIsThenRefused() throws {
        var g = try sentSession()
        for i in 1...4 {
            let d = try g.when(.verify(code: "000000"), at: Int64(200 + i))
            #expect(d.verifyResult == .mismatch)
            g = g.and(d.events, at: Int64(200 + i))
        }
        let last = try g.when(.verify(code: "000000"), at: 300)
        #expect(last.verifyResult == .locked)
        #expect(last.events == [.verificationFailed(.init(attemptsLeft: 0)), .locked])
        g = g.and(last.events, at: 300)
        #expect(g.state.status == .locked)
        #expect(g.state.attemptsLeft == 0)
        let right = try g.when(.verify(code: "123456"), at: 400)
        #expect(right.verifyResult == .locked)
        #expect(right.events.isEmpty)
    }

    @Test func resendNeverRestoresAttempts() throws {
        var g = try sentSession()
        let d = try g.when(.verify(code: "000000"), at: 200)
        g = g.and(d.events, at: 200)
        let r = try g.when(.resend, at: 300)
        g = g.and(r.events, at: 300)
        #expect(g.state.attemptsLeft == 4)
    }

    @Test func codeAfterTTLIsExpiredEvenBeforeTheTimerFires() throws {
        let g = try sentSession(ttl: 30)
        let d = try g.when(.verify(code: "123456"), at: 30_000)
        #expect(d.verifyResult == .expired)
        #expect(d.events == [.expired])
        let after = g.and(d.events, at: 30_000)
        #expect(try after.when(.verify(code: "123456"), at: 30_001).verifyResult == .expired)
    }

    @Test func cancelledSessionVerifiesNothing() throws {
        let g = try sentSession()
        let c = try g.when(.cancel, at: 200)
        #expect(c.events == [.cancelled])
        let after = g.and(c.events, at: 200)
        #expect(try after.when(.verify(code: "123456"), at: 300).verifyResult == .cancelled)
        #expect(try after.when(.cancel, at: 300).events.isEmpty)
    }

    @Test func exhaustedSessionStillVerifiesUntilExpiry() throws {
        let plan = Plan(policy: "p", variant: nil, steps: [Step(channel: .sms, timeoutMs: 1000)])
        let g = try sentSession(plan: plan)
        let t = try g.when(.timeOutStep(token: 2), at: 1100)
        #expect(t.events == [.timedOut(.init(step: 1, waitedMs: 1000)), .exhausted(.init(step: 1))])
        let after = g.and(t.events, at: 1100)
        #expect(after.state.status == .exhausted)
        #expect(try after.when(.verify(code: "123456"), at: 2000).verifyResult == .verified)
    }
}

@Suite struct DeliveryRules {
    @Test func handOffMarksTheStepSentOnce() throws {
        let g = try sentSession()
        #expect(g.state.status == .sent)
        #expect(g.state.sentAt == 100)
        #expect(g.state.sentVersion == 2)
        let again = try g.when(.recordHandOff(token: 1, messageId: "m1", provider: "log", providerRef: nil), at: 150)
        #expect(again.events.isEmpty)
    }

    @Test func deliveredReceiptOnCurrentStepMarksDelivered() throws {
        let g = try sentSession()
        let d = try g.when(.recordReceipt(channel: .sms, outcome: .delivered, detail: nil), at: 200)
        #expect(d.events == [.delivered(.init(step: 1, channel: .sms, detail: nil, late: false, token: 1))])
        let after = g.and(d.events, at: 200)
        #expect(after.state.status == .delivered)
        #expect(after.state.deliveredAt == 200)
    }

    @Test func repeatedReceiptRecordsNothing() throws {
        let g = try sentSession()
        let d = try g.when(.recordReceipt(channel: .sms, outcome: .delivered, detail: nil), at: 200)
        let after = g.and(d.events, at: 200)
        #expect(try after.when(.recordReceipt(channel: .sms, outcome: .delivered, detail: nil), at: 300).events.isEmpty)
    }

    @Test func failedReceiptEscalatesAtOnce() throws {
        let g = try sentSession()
        let d = try g.when(.recordReceipt(channel: .sms, outcome: .failed, detail: "30003"), at: 200)
        #expect(
            d.events == [
                .deliveryFailed(.init(step: 1, channel: .sms, reason: "30003", permanent: true, late: false, token: 1)),
                .escalated(.init(from: 1, to: 2, fromChannel: .sms, toChannel: .email, reason: .failure)),
            ]
        )
        let after = g.and(d.events, at: 200)
        #expect(after.state.step == 2)
        #expect(after.state.status == .pending)
        #expect(after.state.awaitsHandOff(token: 4, now: 0))
    }

    @Test func receiptForAnOldStepIsRecordedLateAndChangesNoStep() throws {
        var g = try sentSession()
        let r = try g.when(.resend, at: 200)
        g = g.and(r.events, at: 200)
        let d = try g.when(.recordReceipt(channel: .sms, outcome: .delivered, detail: nil), at: 300)
        #expect(d.events == [.delivered(.init(step: 1, channel: .sms, detail: nil, late: true, token: 1))])
        let after = g.and(d.events, at: 300)
        #expect(after.state.step == 2)
        #expect(after.state.status == .pending)
        #expect(after.state.deliveredAt == nil)
    }

    @Test func receiptOnAChannelNeverUsedIsABadArgument() throws {
        let g = try sentSession()
        #expect(throws: Rejection.self) {
            try g.when(.recordReceipt(channel: .voice, outcome: .delivered, detail: nil), at: 200)
        }
    }

    @Test func providerFailureEscalatesAndLastStepFailureExhausts() throws {
        let plan = Plan(policy: "p", variant: nil, steps: [Step(channel: .sms, timeoutMs: 1000), Step(channel: .push)])
        let g = try issuedSession(plan: plan)
        let d = try g.when(.recordProviderFailure(token: 1, reason: "HTTP 400", permanent: true), at: 10)
        #expect(
            d.events.last == .escalated(.init(from: 1, to: 2, fromChannel: .sms, toChannel: .push, reason: .failure))
        )
        let g2 = g.and(d.events, at: 10)
        let d2 = try g2.when(.recordProviderFailure(token: 3, reason: "HTTP 400", permanent: true), at: 20)
        #expect(d2.events.last == .exhausted(.init(step: 2)))
    }
}

@Suite struct StepRules {
    @Test func resendMovesToTheNextStepInsteadOfRepeating() throws {
        let g = try sentSession()
        let d = try g.when(.resend, at: 200)
        #expect(d.events == [.escalated(.init(from: 1, to: 2, fromChannel: .sms, toChannel: .email, reason: .resend))])
    }

    @Test func resendAtTheLastStepRepeatsOnlyAfterTheGap() throws {
        let plan = Plan(policy: "p", variant: nil, steps: [Step(channel: .sms)])
        let g = try sentSession(plan: plan)
        #expect(throws: Rejection.rateLimited(retryAfterSeconds: 30)) { try g.when(.resend, at: 100) }
        #expect(throws: Rejection.rateLimited(retryAfterSeconds: 1)) { try g.when(.resend, at: 29_500) }
        let d = try g.when(.resend, at: 30_100)
        #expect(d.events == [.escalated(.init(from: 1, to: 1, fromChannel: .sms, toChannel: .sms, reason: .resend))])
    }

    @Test func resendOnAFinishedSessionRecordsNothing() throws {
        let g = try sentSession()
        let v = try g.when(.verify(code: "123456"), at: 200)
        #expect(try g.and(v.events, at: 200).when(.resend, at: 300).events.isEmpty)
    }

    @Test func stepTimeoutEscalatesWhenUntilHasNotCome() throws {
        let g = try sentSession()
        #expect(try g.when(.timeOutStep(token: 2), at: 15_000).events.isEmpty)  // not yet due
        let d = try g.when(.timeOutStep(token: 2), at: 15_100)
        #expect(
            d.events == [
                .timedOut(.init(step: 1, waitedMs: 15_000)),
                .escalated(.init(from: 1, to: 2, fromChannel: .sms, toChannel: .email, reason: .timeout)),
            ]
        )
    }

    @Test func stepTimeoutIsIgnoredOnceDeliveredOrStale() throws {
        let g = try sentSession()
        let r = try g.when(.recordReceipt(channel: .sms, outcome: .delivered, detail: nil), at: 200)
        #expect(try g.and(r.events, at: 200).when(.timeOutStep(token: 2), at: 20_000).events.isEmpty)
        #expect(try g.when(.timeOutStep(token: 1), at: 20_000).events.isEmpty)
    }

    @Test func expiryAppendsExpiredOnlyWhenDueAndActive() throws {
        let g = try sentSession(ttl: 30)
        #expect(try g.when(.expire, at: 29_999).events.isEmpty)
        #expect(try g.when(.expire, at: 30_000).events == [.expired])
        #expect(g.state.effectiveStatus(now: 30_000) == .expired)
        #expect(g.state.effectiveStatus(now: 29_999) == .sent)
    }
}

@Suite struct PolicyRules {
    let book = PolicyBook(policies: [
        Policy(name: "default", steps: Policy.builtInDefault.steps),
        Policy(
            name: "uk",
            steps: [Step(channel: .sms, timeoutMs: 20_000), Step(channel: .voice), Step(channel: .email)],
            matchCountry: ["+44"],
            variants: [
                Variant(weight: 50, order: [.voice, .sms, .email]), Variant(weight: 50, order: [.sms, .voice, .email]),
            ]
        ),
        Policy(name: "carrierx", steps: [Step(channel: .voice)], matchCarrier: ["CarrierX"]),
    ])

    @Test func stepsWithoutDestinationAreSkipped() throws {
        let plan = try book.plan(
            policyName: nil,
            destinations: [Destination(channel: .email, address: "a@b.co")],
            prefer: [],
            carrier: nil,
            pick: { _ in 0 }
        )
        #expect(plan.steps.map(\.channel) == [.email])
        #expect(plan.steps[0].timeoutMs == 30_000)
    }

    @Test func countryCodeChoosesThePolicyAndTheVariantIsRecorded() throws {
        let uk = [
            Destination(channel: .sms, address: "+447700900123"),
            Destination(channel: .voice, address: "+447700900123"),
        ]
        let a = try book.plan(policyName: nil, destinations: uk, prefer: [], carrier: nil, pick: { _ in 10 })
        #expect(a.policy == "uk")
        #expect(a.variant == 1)
        #expect(a.steps.map(\.channel) == [.voice, .sms])
        let b = try book.plan(policyName: nil, destinations: uk, prefer: [], carrier: nil, pick: { _ in 60 })
        #expect(b.variant == 2)
        #expect(b.steps.map(\.channel) == [.sms, .voice])
        #expect(b.steps[0].timeoutMs == 20_000)
        #expect(b.steps[1].timeoutMs == nil)  // the last step waits only when it has a timeout
    }

    @Test func carrierHintAndPreferenceAndExplicitPolicy() throws {
        let c = try book.plan(
            policyName: nil,
            destinations: allDestinations,
            prefer: [],
            carrier: "carrierx",
            pick: { _ in 0 }
        )
        #expect(c.policy == "carrierx")
        let p = try book.plan(
            policyName: "default",
            destinations: allDestinations,
            prefer: [.push, .voice],
            carrier: nil,
            pick: { _ in 0 }
        )
        #expect(p.steps.map(\.channel) == [.push, .voice, .sms, .email])
        #expect(p.steps[0].timeoutMs == 30_000)  // not last: the 30 s default wait
        #expect(throws: Rejection.self) {
            try book.plan(policyName: "nope", destinations: allDestinations, prefer: [], carrier: nil, pick: { _ in 0 })
        }
    }

    @Test func noUsableStepIsABadArgument() {
        #expect(throws: Rejection.self) {
            try book.plan(
                policyName: "carrierx",
                destinations: [Destination(channel: .email, address: "a@b.co")],
                prefer: [],
                carrier: nil,
                pick: { _ in 0 }
            )
        }
    }
}

@Suite struct InputRules {
    @Test func destinationsAreValidated() throws {
        #expect(try Destination.parse("sms:+15551234567") == Destination(channel: .sms, address: "+15551234567"))
        #expect(try Destination.parse("EMAIL:a@example.com").channel == .email)
        for bad in [
            "sms:15551234567", "sms:+0555123456", "sms:+1234567", "sms:+1234567890123456", "fax:+15551234567",
            "email:nope", "email:a@b", "push:x", "noColon",
        ] {
            #expect(throws: Rejection.self) { try Destination.parse(bad) }
        }
    }

    @Test func sessionIdsAndLocales() {
        #expect(Validation.isSessionID("a.b_c:d-9"))
        #expect(!Validation.isSessionID(""))
        #expect(!Validation.isSessionID(String(repeating: "a", count: 129)))
        #expect(!Validation.isSessionID("a b"))
        #expect(Validation.isLocaleTag("en-GB"))
        #expect(!Validation.isLocaleTag("e"))
    }
}

@Suite struct MessageRules {
    let renderer = MessageRenderer(settings: MessageSettings(appName: "AcmeApp", appDomain: "acme.example"))

    @Test func smsKeepsTheCodeUnbrokenAndEndsWithTheOriginBoundLine() {
        let m = renderer.render(channel: .sms, code: "123456", app: nil, locale: "en-US")
        #expect(m.text == "AcmeApp: your code is 123456. Don't share it.\n\n@acme.example #123456")
        #expect(MessageRenderer.fitsOneSegment(m.text))
        #expect(m.locale == "en")
    }

    @Test func androidHashGoesOnItsOwnLineBeforeTheOriginLine() {
        let r = MessageRenderer(
            settings: MessageSettings(
                appName: "AcmeApp",
                appDomain: "acme.example",
                androidAppHash: "FA+9qCX9VSu"
            )
        )
        let lines = r.render(channel: .sms, code: "123456", app: nil, locale: "en").text.split(separator: "\n")
        #expect(lines.suffix(2) == ["FA+9qCX9VSu", "@acme.example #123456"])
    }

    @Test func emailSubjectStartsWithTheCode() {
        let m = renderer.render(channel: .email, code: "123456", app: "Other", locale: "zh-Hant")
        #expect(m.subject == "123456 is your Other code")
        #expect(m.html?.contains("123456") == true)
        #expect(m.locale == "en")
    }

    @Test func voiceReadsDigitsTwiceAndPushCarriesTheCode() {
        let v = renderer.render(channel: .voice, code: "1234", app: nil, locale: "en")
        #expect(v.text == "Your AcmeApp code is 1, 2, 3, 4. Again: 1, 2, 3, 4.")
        #expect(v.ssml?.contains("interpret-as=\"digits\"") == true)
        let p = renderer.render(channel: .push, code: "1234", app: nil, locale: "en")
        #expect(p.title == "AcmeApp sign-in code")
        #expect(p.dataCode == "1234")
    }
}

@Suite struct ErasureRules {
    @Test func eraseAppendsErasedOnceAndTheStateForgetsWhatTheKeySealed() throws {
        let g = try sentSession()
        let d = try g.when(.erase, at: 200)
        #expect(d.events == [.erased])
        let after = g.and(d.events, at: 200)
        #expect(after.state.erased)
        #expect(after.state.issued?.destinations == [])
        #expect(after.state.issued?.codeSeed == "")
        #expect(after.state.status == .sent)  // its status does not change
        #expect(try after.when(.erase, at: 300).events.isEmpty)
    }

    @Test func nothingMoreIsSentForAnErasedSessionButVerifyStillAnswers() throws {
        let after = try sentSession().and([.erased], at: 200)
        #expect(after.state.timers.map(\.name) == ["expiry"])  // no step timer: no fallback message
        #expect(try after.when(.timeOutStep(token: 2), at: 20_000).events.isEmpty)
        #expect(try after.when(.resend, at: 300).events.isEmpty)
        #expect(!after.state.awaitsHandOff(token: 1, now: 300))
        let failed = try after.when(.recordReceipt(channel: .sms, outcome: .failed, detail: nil), at: 300)
        #expect(failed.events.map(\.type) == ["delivery_failed"])  // recorded, not escalated
        #expect(try after.when(.verify(code: "123456"), at: 400).verifyResult == .verified)
        #expect(throws: Rejection.conflict("session 's1' exists and was erased")) {
            try after.when(.issue(request()), at: 500)
        }
    }
}
