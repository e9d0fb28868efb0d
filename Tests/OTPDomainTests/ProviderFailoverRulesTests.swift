import OTPDomain
import Testing

/// Failover within a channel: a provider that fails a step hands it to the channel's next provider.
@Suite struct ProviderFailoverRules {
    static let plan = Plan(
        policy: "p",
        variant: nil,
        steps: [Step(channel: .sms, timeoutMs: 1000), Step(channel: .email)]
    )

    @Test func aHandedOnFailureKeepsTheStepAndRemembersTheProvider() throws {
        let g = try issuedSession(plan: Self.plan)
        let d = try g.when(
            .recordProviderFailure(
                token: 1,
                reason: "HTTP 500",
                permanent: false,
                provider: "twilio_us",
                messageId: "m_1",
                nextProvider: "webhook_eu"
            ),
            at: 10
        )
        #expect(
            d.events == [
                .deliveryFailed(
                    .init(
                        step: 1,
                        channel: .sms,
                        reason: "HTTP 500",
                        permanent: false,
                        late: false,
                        token: 1,
                        provider: "twilio_us",
                        messageId: "m_1",
                        nextProvider: "webhook_eu"
                    )
                )
            ]
        )
        let s = g.and(d.events, at: 10).state
        #expect(s.step == 1)
        #expect(s.status == .pending)
        #expect(s.awaitsHandOff(token: 1, now: 20), "the same step's message still goes out, by the next provider")
        #expect(s.failedProviders(token: 1) == ["twilio_us"])
        // The next provider's hand-off is the step's `sent`.
        let sent = try g.and(d.events, at: 10).when(
            .recordHandOff(token: 1, messageId: "m_2", provider: "webhook_eu", providerRef: nil),
            at: 20
        )
        guard case .sent(let e) = sent.events.first else {
            Issue.record("no sent")
            return
        }
        #expect(e.provider == "webhook_eu")
        #expect(e.step == 1)
    }

    @Test func aProviderThatAlreadyFailedTheStepIsNotHandedItAgainAndTheSessionEscalates() throws {
        let g = try issuedSession(plan: Self.plan)
        let first = try g.when(
            .recordProviderFailure(token: 1, reason: "a", permanent: true, provider: "a", nextProvider: "b"),
            at: 10
        )
        let g2 = g.and(first.events, at: 10)
        let d = try g2.when(
            .recordProviderFailure(token: 1, reason: "b", permanent: true, provider: "b", nextProvider: "a"),
            at: 20
        )
        #expect(d.events.count == 2)
        guard case .deliveryFailed(let f) = d.events[0] else {
            Issue.record("no delivery_failed")
            return
        }
        #expect(f.nextProvider == nil)
        #expect(
            d.events[1] == .escalated(.init(from: 1, to: 2, fromChannel: .sms, toChannel: .email, reason: .failure))
        )
    }

    @Test func aHandOnRecordedTwiceIsRecordedOnce() throws {
        let g = try issuedSession(plan: Self.plan)
        let command = SessionCommand.recordProviderFailure(
            token: 1,
            reason: "HTTP 500",
            permanent: false,
            provider: "a",
            nextProvider: "b"
        )
        let first = try g.when(command, at: 10)
        #expect(first.events.count == 1)
        #expect(try g.and(first.events, at: 10).when(command, at: 20).events.isEmpty)
    }

    @Test func noFailoverPastTheSessionsExpiry() throws {
        let g = try issuedSession(plan: Self.plan)
        let late = g.state.expiresAt + 1
        let d = try g.when(
            .recordProviderFailure(token: 1, reason: "x", permanent: true, provider: "a", nextProvider: "b"),
            at: late
        )
        #expect(d.events.count == 1)
        guard case .deliveryFailed(let f) = d.events[0] else {
            Issue.record("no delivery_failed")
            return
        }
        #expect(f.nextProvider == nil)
    }

    @Test func aFailedReceiptForTheNextProvidersMessageStillCounts() throws {
        let g = try issuedSession(plan: Self.plan)
        let failover = try g.when(
            .recordProviderFailure(token: 1, reason: "x", permanent: true, provider: "a", nextProvider: "b"),
            at: 10
        )
        let g2 = g.and(failover.events, at: 10)
        let sent = try g2.when(.recordHandOff(token: 1, messageId: "m_2", provider: "b", providerRef: nil), at: 20)
        let g3 = g2.and(sent.events, at: 20)
        let receipt = try g3.when(
            .recordReceipt(channel: .sms, outcome: .failed, detail: "undelivered", token: 1),
            at: 30
        )
        #expect(receipt.events.contains { if case .escalated = $0 { true } else { false } })
    }
}
