/// The OTP session as a pure state machine: `decide` turns a command into events, `evolve` folds them.
public enum SessionDecider {
    /// Folds a list of events (recorded at the given times) into a state.
    public static func fold(
        _ events: [(event: SessionEvent, at: Int64)],
        from state: SessionState = SessionState()
    ) -> SessionState {
        events.reduce(state) { evolve($0, $1.event, at: $1.at) }
    }

    /// Applies one event recorded at `at` (epoch ms) to a state.
    public static func evolve(_ state: SessionState, _ event: SessionEvent, at: Int64) -> SessionState {
        var s = state
        s.version += 1
        switch event {
        case .issued(let i):
            s.issued = i
            s.status = .pending
            s.step = 1
            s.stepStartedVersion = s.version
            s.issuedAt = at
            s.expiresAt = at.saturatingAdd(i.ttlMs)
            s.attemptsLeft = i.maxAttempts
            if let first = i.plan.steps.first {
                s.started = [StartedStep(step: 1, channel: first.channel, version: s.version, reason: nil)]
            }
        case .sent(let e):
            let token = e.token ?? legacyStartToken(of: e, in: s)
            if let token, s.withdrawn[token] != nil {
                if s.withdrawn[token]?.sentAt == nil { s.withdrawn[token]?.sentAt = at }
            } else if token == s.stepStartedVersion && s.sentVersion == nil {
                s.sentVersion = s.version
                s.sentAt = at
                s.stepWaitMs = e.timeoutMs
                if !s.started.isEmpty {
                    s.started[s.started.count - 1].sentAt = at
                    s.started[s.started.count - 1].sentVersion = s.version
                }
                if s.status == .pending { s.status = .sent }
            }
        case .delivered(let r), .opened(let r):
            let outcome: ReceiptOutcome = if case .opened = event { .opened } else { .delivered }
            if let start = s.start(token: r.token, channel: r.channel) {
                s.receiptKeys.insert(receiptKey(start, outcome))
            }
            if !r.late {
                if s.status == .pending || s.status == .sent { s.status = .delivered }
                if s.deliveredAt == nil { s.deliveredAt = at }
                if outcome == .opened { s.opened = true }
            }
        case .deliveryFailed(let f):
            if f.nextProvider != nil, let provider = f.provider {
                // Handed on within the channel: the step stays, and its next message may still fail by receipt.
                if let i = s.started.lastIndex(where: { $0.version == f.token }) {
                    s.started[i].failedProviders.append(provider)
                }
            } else if let start = s.start(token: f.token, channel: f.channel) {
                s.receiptKeys.insert(receiptKey(start, .failed))
            }
        case .timedOut:
            if !s.started.isEmpty { s.started[s.started.count - 1].timedOut = true }
        case .escalated(let e):
            s.step = e.to
            s.stepStartedVersion = s.version
            s.sentVersion = nil
            s.sentAt = nil
            s.stepWaitMs = nil
            s.deliveredAt = nil
            s.opened = false
            s.status = .pending
            s.started.append(StartedStep(step: e.to, channel: e.toChannel, version: s.version, reason: e.reason))
        case .escalationWithdrawn(let w):
            if s.started.count >= 2 {
                let gone = s.started.removeLast()
                s.withdrawn[gone.version] = gone
                let back = s.started[s.started.count - 1]
                s.step = back.step
                s.stepStartedVersion = back.version
                s.sentVersion = back.sentVersion
                s.sentAt = back.sentAt
                s.stepWaitMs = nil
            } else {
                s.step = w.to
            }
            s.status = .delivered
            s.deliveredAt = at
            s.opened = w.outcome == .opened
        case .verificationFailed(let f):
            s.attemptsLeft = f.attemptsLeft
        case .verified:
            s.status = .verified
            s.verifiedAt = at
        case .locked:
            s.status = .locked
            s.attemptsLeft = 0
        case .expired:
            s.status = .expired
        case .cancelled:
            s.status = .cancelled
        case .exhausted:
            s.status = .exhausted
        case .erased:
            // What the destroyed key sealed is gone from the state too (a fold after erasure never had it).
            s.erased = true
            s.issued?.destinations = []
            s.issued?.codeSeed = ""
            s.issued?.fingerprint = ""
        }
        return s
    }

    /// The start a `sent` recorded without its token belongs to, guessed by step number as otpd did before
    /// it recorded the token: a withdrawn start of that step still awaiting its hand-off, else the current one.
    private static func legacyStartToken(of e: SessionEvent.Sent, in s: SessionState) -> Int? {
        if let withdrawn = s.withdrawn.first(where: { $0.value.step == e.step && $0.value.sentAt == nil })?.key,
            e.step != s.step || s.sentVersion != nil
        {
            return withdrawn
        }
        return e.step == s.step && s.sentVersion == nil ? s.stepStartedVersion : nil
    }

    /// Decides what a command does to a session: the events to append, or why it is refused.
    public static func decide(
        _ command: SessionCommand,
        state s: SessionState,
        context: DecisionContext
    ) throws(Rejection) -> Decision {
        switch command {
        case .issue(let request): try issue(request, state: s, context: context)
        case .verify(let code): try verify(code, state: s, context: context)
        case .resend: try resend(state: s, context: context)
        case .recordReceipt(let channel, let outcome, let detail, let token):
            try recordReceipt(channel, outcome, detail: detail, token: token, state: s, context: context)
        case .cancel: try cancel(state: s, context: context)
        case .recordHandOff(let token, let messageId, let provider, let providerRef, let locale, let price):
            try recordHandOff(
                token,
                messageId: messageId,
                provider: provider,
                providerRef: providerRef,
                locale: locale,
                price: price,
                state: s,
                context: context
            )
        case .recordProviderFailure(let token, let reason, let permanent, let provider, let messageId, let next):
            try recordProviderFailure(
                token,
                reason: reason,
                permanent: permanent,
                provider: provider,
                messageId: messageId,
                nextProvider: next,
                state: s,
                context: context
            )
        case .timeOutStep(let token): try timeOutStep(token, state: s, context: context)
        case .expire: try expire(state: s, context: context)
        case .erase: try erase(state: s)
        }
    }

    // MARK: - One function per command

    private static func issue(
        _ request: IssueRequest,
        state s: SessionState,
        context: DecisionContext
    ) throws(Rejection) -> Decision {
        if let existing = s.issued {
            // An erased session's fingerprint was sealed under the destroyed key: no request can match it.
            guard !s.erased else { throw .conflict("session '\(request.session)' exists and was erased") }
            guard existing.fingerprint == request.fingerprint else {
                throw .conflict("session '\(request.session)' exists with other arguments")
            }
            return Decision(events: [])  // a repeated ISSUE is answered as it was
        }
        let ttl = try IntegerOption.ttl.check(request.ttlSeconds)
        let testCode = try context.testDestinations.code(for: request.destinations)
        let digits: Int
        if let testCode { digits = testCode.count } else { digits = try IntegerOption.digits.check(request.digits) }
        let maxAttempts = try IntegerOption.maxAttempts.check(request.maxAttempts)
        var plan = try context.policies.plan(
            policyName: request.policy,
            destinations: request.destinations,
            prefer: request.prefer,
            carrier: request.carrier,
            pick: context.pick
        )
        var skipped: [DeliveryChannel] = []
        var skipReason: String?
        let facts = context.facts
        if (facts.countryOverCeiling || facts.countryOverBudget) && testCode == nil {
            // Against SMS pumping: no SMS or voice for a country over its ceiling or its spend, where another
            // channel remains; the session records what it lost and why.
            skipped = plan.steps.map(\.channel).filter(\.isTelephony)
            plan.steps.removeAll { $0.channel.isTelephony }
            guard !plan.steps.isEmpty else {
                throw .rateLimited(retryAfterSeconds: facts.countryOverBudget ? 300 : 60)
            }
            if !skipped.isEmpty { skipReason = facts.countryOverBudget ? "budget" : "prefix_ceiling" }
        }
        // A test session's code is the configured one; it has no seed, since nothing is ever rendered.
        let seed = testCode == nil ? context.codes.newSeed() : ""
        let code = testCode ?? context.codes.code(seed: seed, digits: digits, stream: context.stream)
        return Decision(events: [
            .issued(
                .init(
                    session: request.session,
                    plan: plan,
                    ttlMs: Int64(ttl) * 1000,
                    digits: digits,
                    maxAttempts: maxAttempts,
                    locale: request.locale,
                    app: request.app,
                    carrier: request.carrier,
                    destinations: request.destinations,
                    codeSeed: seed,
                    codeDigest: context.codes.digest(code: code, stream: context.stream),
                    fingerprint: request.fingerprint,
                    country: request.destinations.first(where: \.channel.isTelephony).map {
                        CountryCode.of($0.address)
                    },
                    test: testCode != nil,
                    skipped: skipped,
                    skipReason: skipReason
                )
            )
        ])
    }

    private static func verify(
        _ code: String,
        state s: SessionState,
        context: DecisionContext
    ) throws(Rejection) -> Decision {
        let (issued, current) = try existing(s)
        switch s.status {
        case .cancelled: return Decision(events: [], verifyResult: .cancelled)
        case .locked: return Decision(events: [], verifyResult: .locked)
        case .verified:
            let right = matches(code, issued: issued, context: context)
            return Decision(events: [], verifyResult: right ? .alreadyVerified : .mismatch)
        case .expired: return Decision(events: [], verifyResult: .expired)
        case .pending, .sent, .delivered, .exhausted: break
        }
        if context.now >= s.expiresAt { return Decision(events: [.expired], verifyResult: .expired) }
        if matches(code, issued: issued, context: context) {
            return Decision(events: [.verified(.init(step: s.step, channel: current.channel))], verifyResult: .verified)
        }
        let left = max(0, s.attemptsLeft - 1)
        if left == 0 {
            return Decision(events: [.verificationFailed(.init(attemptsLeft: 0)), .locked], verifyResult: .locked)
        }
        return Decision(events: [.verificationFailed(.init(attemptsLeft: left))], verifyResult: .mismatch)
    }

    private static func resend(state s: SessionState, context: DecisionContext) throws(Rejection) -> Decision {
        let (issued, current) = try existing(s)
        let now = context.now
        guard s.status.isActive, !s.erased else { return Decision(events: []) }
        if now >= s.expiresAt { return Decision(events: [.expired]) }
        let steps = issued.plan.steps
        if s.step < steps.count {
            return Decision(events: [
                .escalated(
                    .init(
                        from: s.step,
                        to: s.step + 1,
                        fromChannel: current.channel,
                        toChannel: steps[s.step].channel,
                        reason: .resend
                    )
                )
            ])
        }
        // The last step repeats, but only once its message went out and the channel's gap has passed.
        guard let sentAt = s.sentAt else {
            throw .rateLimited(afterMs: context.minGapMs)
        }
        let wait = context.minGapMs.saturatingSubtract(now.saturatingSubtract(sentAt))
        if wait > 0 { throw .rateLimited(afterMs: wait) }
        return Decision(events: [
            .escalated(
                .init(
                    from: s.step,
                    to: s.step,
                    fromChannel: current.channel,
                    toChannel: current.channel,
                    reason: .resend
                )
            )
        ])
    }

    private static func recordReceipt(
        _ channel: DeliveryChannel,
        _ outcome: ReceiptOutcome,
        detail: String?,
        token: Int?,
        state s: SessionState,
        context: DecisionContext
    ) throws(Rejection) -> Decision {
        let (issued, _) = try existing(s)
        let now = context.now
        guard let start = s.start(token: token, channel: channel) else {
            throw .badArgument("no message was sent on channel \(channel.rawValue) for this session")
        }
        if s.receiptKeys.contains(receiptKey(start, outcome)) { return Decision(events: []) }
        let late = start.version != s.stepStartedVersion
        let receipt = SessionEvent.Receipt(
            step: start.step,
            channel: channel,
            detail: detail,
            late: late,
            token: start.version
        )
        // A late delivery for the step just left on a timeout, before the next message went out: no second send.
        var withdrawal: [SessionEvent] = []
        if late, s.status == .pending, s.sentVersion == nil, s.started.count >= 2,
            s.started[s.started.count - 1].reason == .timeout,
            s.started[s.started.count - 2].version == start.version,
            outcome.satisfies(issued.plan.steps[start.step - 1].until),
            now < s.expiresAt
        {
            withdrawal = [
                .escalationWithdrawn(.init(from: s.step, to: start.step, channel: channel, outcome: outcome))
            ]
        }
        switch outcome {
        case .delivered: return Decision(events: [.delivered(receipt)] + withdrawal)
        case .opened: return Decision(events: [.opened(receipt)] + withdrawal)
        case .failed:
            var events: [SessionEvent] = [
                .deliveryFailed(
                    .init(
                        step: start.step,
                        channel: channel,
                        reason: detail ?? "failed receipt",
                        permanent: true,
                        late: late,
                        token: start.version
                    )
                )
            ]
            if !late && s.status.isActive && s.status != .exhausted && !s.erased && now < s.expiresAt {
                events.append(escalation(from: s, reason: .failure))
            }
            return Decision(events: events)
        }
    }

    private static func cancel(state s: SessionState, context: DecisionContext) throws(Rejection) -> Decision {
        _ = try existing(s)
        guard s.status.isActive else { return Decision(events: []) }
        return Decision(events: [context.now >= s.expiresAt ? .expired : .cancelled])
    }

    private static func recordHandOff(
        _ token: Int,
        messageId: String,
        provider: String,
        providerRef: String?,
        locale: String?,
        price: MessagePrice?,
        state s: SessionState,
        context: DecisionContext
    ) throws(Rejection) -> Decision {
        let (issued, current) = try existing(s)
        let step: (number: Int, channel: DeliveryChannel)
        var wait: (ms: Int64, basis: String)?
        if let gone = s.withdrawn[token] {
            // The provider already had it when the escalation was withdrawn: the send is recorded, the step stays.
            guard gone.sentAt == nil else { return Decision(events: []) }
            step = (gone.step, gone.channel)
        } else {
            guard token == s.stepStartedVersion, s.sentVersion == nil else { return Decision(events: []) }
            step = (s.step, current.channel)
            // An adaptive step's wait is chosen now, from the route's recent deliveries, and recorded with why.
            wait = current.auto?.wait(for: context.routeLatency(current.channel, issued.country ?? "none"))
        }
        return Decision(events: [
            .sent(
                .init(
                    step: step.number,
                    channel: step.channel,
                    messageId: messageId,
                    provider: provider,
                    providerRef: providerRef,
                    token: token,
                    locale: locale,
                    timeoutMs: wait?.ms,
                    timeoutBasis: wait?.basis,
                    price: price
                )
            )
        ])
    }

    private static func recordProviderFailure(
        _ token: Int,
        reason: String,
        permanent: Bool,
        provider: String?,
        messageId: String?,
        nextProvider: String?,
        state s: SessionState,
        context: DecisionContext
    ) throws(Rejection) -> Decision {
        let (_, current) = try existing(s)
        guard token == s.stepStartedVersion, s.sentVersion == nil else { return Decision(events: []) }
        // A provider that already handed this step on is not recorded failing it twice (a record retried after
        // a commit whose outcome was unknown).
        if let provider, s.failedProviders(token: token).contains(provider) { return Decision(events: []) }
        let goesOn = s.status.isActive && s.status != .exhausted && !s.erased && context.now < s.expiresAt
        // The next provider takes the step only while the session could still send; and never one that already
        // failed this step (a history edited by hand could name one again).
        let next = nextProvider.flatMap { name in
            goesOn && provider != nil && !s.failedProviders(token: token).contains(name) && name != provider
                ? name : nil
        }
        var events: [SessionEvent] = [
            .deliveryFailed(
                .init(
                    step: s.step,
                    channel: current.channel,
                    reason: reason,
                    permanent: permanent,
                    late: false,
                    token: token,
                    provider: provider,
                    messageId: messageId,
                    nextProvider: next
                )
            )
        ]
        if next == nil && goesOn {
            events.append(escalation(from: s, reason: .failure))
        }
        return Decision(events: events)
    }

    private static func timeOutStep(
        _ token: Int,
        state s: SessionState,
        context: DecisionContext
    ) throws(Rejection) -> Decision {
        let (_, current) = try existing(s)
        let now = context.now
        guard token == s.sentVersion, s.status == .sent || s.status == .delivered, !s.untilSatisfied,
            !s.currentStepTimedOut, !s.erased,
            let timeout = s.stepWaitMs ?? current.timeoutMs, let sentAt = s.sentAt,
            now >= sentAt.saturatingAdd(timeout),
            now < s.expiresAt
        else { return Decision(events: []) }
        return Decision(events: [
            .timedOut(.init(step: s.step, waitedMs: now.saturatingSubtract(sentAt))),
            escalation(from: s, reason: .timeout),
        ])
    }

    private static func expire(state s: SessionState, context: DecisionContext) throws(Rejection) -> Decision {
        _ = try existing(s)
        guard s.status.isActive, context.now >= s.expiresAt else { return Decision(events: []) }
        return Decision(events: [.expired])
    }

    private static func erase(state s: SessionState) throws(Rejection) -> Decision {
        _ = try existing(s)
        return Decision(events: s.erased ? [] : [.erased])
    }

    // MARK: - Helpers

    /// The session's `issued` event and current step; every command but ISSUE needs an existing session.
    private static func existing(_ s: SessionState) throws(Rejection) -> (SessionEvent.Issued, Step) {
        guard let issued = s.issued, let current = s.currentStep else { throw .notFound }
        return (issued, current)
    }

    /// The next step's escalation, or `exhausted` after the last step.
    private static func escalation(from s: SessionState, reason: EscalationReason) -> SessionEvent {
        guard let steps = s.issued?.plan.steps, s.step < steps.count else { return .exhausted(.init(step: s.step)) }
        return .escalated(
            .init(
                from: s.step,
                to: s.step + 1,
                fromChannel: steps[s.step - 1].channel,
                toChannel: steps[s.step].channel,
                reason: reason
            )
        )
    }

    /// Whether a code is the session's (the code book compares in constant time).
    private static func matches(_ code: String, issued: SessionEvent.Issued, context: DecisionContext) -> Bool {
        context.codes.matches(code: code, digest: issued.codeDigest, stream: context.stream)
    }

    private static func receiptKey(_ start: StartedStep, _ outcome: ReceiptOutcome) -> String {
        "\(start.version):\(outcome.rawValue)"
    }

}
