/// The OTP session as a pure state machine: `decide` turns a command into events, `evolve` folds them.
public enum SessionDecider {
    /// Accepted TTLs in seconds.
    public static let ttlRange = 30...3600
    /// Accepted code lengths.
    public static let digitsRange = 4...10
    /// Accepted attempt limits.
    public static let maxAttemptsRange = 1...10

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
            s.expiresAt = at + i.ttlMs
            s.attemptsLeft = i.maxAttempts
            if let first = i.plan.steps.first {
                s.started = [StartedStep(step: 1, channel: first.channel, version: s.version, reason: nil)]
            }
        case .sent(let e):
            if let token = s.withdrawn.first(where: { $0.value.step == e.step && $0.value.sentAt == nil })?.key,
                e.step != s.step || s.sentVersion != nil
            {
                s.withdrawn[token]?.sentAt = at
            } else if e.step == s.step && s.sentVersion == nil {
                s.sentVersion = s.version
                s.sentAt = at
                if !s.started.isEmpty {
                    s.started[s.started.count - 1].sentAt = at
                    s.started[s.started.count - 1].sentVersion = s.version
                }
                if s.status == .pending { s.status = .sent }
            }
        case .delivered(let r), .opened(let r):
            let outcome: ReceiptOutcome = if case .opened = event { .opened } else { .delivered }
            if let start = s.latestStart(of: r.channel) {
                s.receiptKeys.insert(receiptKey(start, outcome))
            }
            if !r.late {
                if s.status == .pending || s.status == .sent { s.status = .delivered }
                if s.deliveredAt == nil { s.deliveredAt = at }
                if outcome == .opened { s.opened = true }
            }
        case .deliveryFailed(let f):
            if let start = s.latestStart(of: f.channel) {
                s.receiptKeys.insert(receiptKey(start, .failed))
            }
        case .timedOut:
            break
        case .escalated(let e):
            s.step = e.to
            s.stepStartedVersion = s.version
            s.sentVersion = nil
            s.sentAt = nil
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
        }
        return s
    }

    /// Decides what a command does to a session: the events to append, or why it is refused.
    public static func decide(
        _ command: SessionCommand,
        state s: SessionState,
        context: DecisionContext
    ) throws(Rejection) -> Decision {
        if case .issue(let request, let plan) = command {
            return try issue(request, plan: plan, state: s, context: context)
        }
        guard let issued = s.issued, let current = s.currentStep else { throw .notFound }
        let now = context.now

        switch command {
        case .issue:
            return Decision(events: [])  // handled above

        case .verify(let code):
            switch s.status {
            case .cancelled: return Decision(events: [], verifyResult: .cancelled)
            case .locked: return Decision(events: [], verifyResult: .locked)
            case .verified:
                let right = matches(code, issued: issued, context: context)
                return Decision(events: [], verifyResult: right ? .alreadyVerified : .mismatch)
            case .expired: return Decision(events: [], verifyResult: .expired)
            case .pending, .sent, .delivered, .exhausted: break
            }
            if now >= s.expiresAt { return Decision(events: [.expired], verifyResult: .expired) }
            if matches(code, issued: issued, context: context) {
                return Decision(
                    events: [.verified(.init(step: s.step, channel: current.channel))],
                    verifyResult: .verified
                )
            }
            let left = max(0, s.attemptsLeft - 1)
            if left == 0 {
                return Decision(events: [.verificationFailed(.init(attemptsLeft: 0)), .locked], verifyResult: .locked)
            }
            return Decision(events: [.verificationFailed(.init(attemptsLeft: left))], verifyResult: .mismatch)

        case .resend:
            guard s.status.isActive else { return Decision(events: []) }
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
                throw .rateLimited(retryAfterSeconds: seconds(context.minGapMs))
            }
            let wait = context.minGapMs - (now - sentAt)
            if wait > 0 { throw .rateLimited(retryAfterSeconds: seconds(wait)) }
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

        case .recordReceipt(let channel, let outcome, let detail):
            guard let start = s.latestStart(of: channel) else {
                throw .badArgument("no message was sent on channel \(channel.rawValue) for this session")
            }
            if s.receiptKeys.contains(receiptKey(start, outcome)) { return Decision(events: []) }
            let late = start.version != s.stepStartedVersion
            let receipt = SessionEvent.Receipt(step: start.step, channel: channel, detail: detail, late: late)
            // A late delivery for the step just left on a timeout, before the next message went out: no second send.
            var withdrawal: [SessionEvent] = []
            if late, s.status == .pending, s.sentVersion == nil, s.started.count >= 2,
                s.started[s.started.count - 1].reason == .timeout,
                s.started[s.started.count - 2].version == start.version,
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
                            late: late
                        )
                    )
                ]
                if !late && s.status.isActive && s.status != .exhausted && now < s.expiresAt {
                    events.append(escalation(from: s, reason: .failure))
                }
                return Decision(events: events)
            }

        case .cancel:
            guard s.status.isActive else { return Decision(events: []) }
            return Decision(events: [now >= s.expiresAt ? .expired : .cancelled])

        case .recordHandOff(let token, let messageId, let provider, let providerRef):
            if let gone = s.withdrawn[token], gone.sentAt == nil {
                // The provider already had it when the escalation was withdrawn: the send is recorded, the step stays.
                return Decision(events: [
                    .sent(
                        .init(
                            step: gone.step,
                            channel: gone.channel,
                            messageId: messageId,
                            provider: provider,
                            providerRef: providerRef
                        )
                    )
                ])
            }
            guard token == s.stepStartedVersion, s.sentVersion == nil else { return Decision(events: []) }
            return Decision(events: [
                .sent(
                    .init(
                        step: s.step,
                        channel: current.channel,
                        messageId: messageId,
                        provider: provider,
                        providerRef: providerRef
                    )
                )
            ])

        case .recordProviderFailure(let token, let reason, let permanent):
            guard token == s.stepStartedVersion, s.sentVersion == nil else { return Decision(events: []) }
            var events: [SessionEvent] = [
                .deliveryFailed(
                    .init(
                        step: s.step,
                        channel: current.channel,
                        reason: reason,
                        permanent: permanent,
                        late: false
                    )
                )
            ]
            if s.status.isActive && s.status != .exhausted && now < s.expiresAt {
                events.append(escalation(from: s, reason: .failure))
            }
            return Decision(events: events)

        case .timeOutStep(let token):
            guard token == s.sentVersion, s.status == .sent || s.status == .delivered, !s.untilSatisfied,
                let timeout = current.timeoutMs, let sentAt = s.sentAt, now >= sentAt + timeout,
                now < s.expiresAt
            else { return Decision(events: []) }
            return Decision(events: [
                .timedOut(.init(step: s.step, waitedMs: now - sentAt)), escalation(from: s, reason: .timeout),
            ])

        case .expire:
            guard s.status.isActive, now >= s.expiresAt else { return Decision(events: []) }
            return Decision(events: [.expired])
        }
    }

    private static func issue(
        _ request: IssueRequest,
        plan: Plan,
        state s: SessionState,
        context: DecisionContext
    ) throws(Rejection) -> Decision {
        if let existing = s.issued {
            guard existing.fingerprint == request.fingerprint else {
                throw .conflict("session '\(request.session)' exists with other arguments")
            }
            return Decision(events: [])
        }
        guard ttlRange.contains(request.ttlSeconds) else { throw .badArgument("TTL must be 30 to 3600 seconds") }
        guard digitsRange.contains(request.digits) else { throw .badArgument("DIGITS must be 4 to 10") }
        guard maxAttemptsRange.contains(request.maxAttempts) else { throw .badArgument("MAXATTEMPTS must be 1 to 10") }
        guard !plan.steps.isEmpty else { throw .badArgument("no usable step") }
        let seed = context.codes.newSeed()
        let code = context.codes.code(seed: seed, digits: request.digits, stream: context.stream)
        let digest = Hex.encode(context.codes.digest(code: code, stream: context.stream))
        return Decision(events: [
            .issued(
                .init(
                    session: request.session,
                    plan: plan,
                    ttlMs: Int64(request.ttlSeconds) * 1000,
                    digits: request.digits,
                    maxAttempts: request.maxAttempts,
                    locale: request.locale,
                    app: request.app,
                    carrier: request.carrier,
                    destinations: request.destinations,
                    codeSeed: seed,
                    codeDigest: digest,
                    fingerprint: request.fingerprint
                )
            )
        ])
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

    /// Compares a code with the session's digest in constant time.
    private static func matches(_ code: String, issued: SessionEvent.Issued, context: DecisionContext) -> Bool {
        let given = Hex.encode(context.codes.digest(code: code, stream: context.stream))
        return ConstantTime.equals(Array(given.utf8), Array(issued.codeDigest.utf8))
    }

    private static func receiptKey(_ start: StartedStep, _ outcome: ReceiptOutcome) -> String {
        "\(start.version):\(outcome.rawValue)"
    }

    private static func seconds(_ ms: Int64) -> Int { Int(max(1, (ms + 999) / 1000)) }
}

/// Constant-time comparison of byte strings.
public enum ConstantTime {
    /// Whether `a` equals `b`, taking time that depends only on the lengths.
    public static func equals(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        var diff = UInt8(a.count == b.count ? 0 : 1)
        let n = max(a.count, b.count)
        for i in 0..<n {
            let x = i < a.count ? a[i] : 0
            let y = i < b.count ? b[i] : 0
            diff |= x ^ y
        }
        return diff == 0
    }
}

/// Lowercase hexadecimal encoding.
public enum Hex {
    private static let digits = Array("0123456789abcdef".utf8)

    /// The bytes as lowercase hex.
    public static func encode(_ bytes: [UInt8]) -> String {
        var out = [UInt8]()
        out.reserveCapacity(bytes.count * 2)
        for b in bytes {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 0x0F)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// The bytes of a hex string, or nil when it is not hex.
    public static func decode(_ text: String) -> [UInt8]? {
        let u = Array(text.utf8)
        guard u.count % 2 == 0 else { return nil }
        var out = [UInt8]()
        out.reserveCapacity(u.count / 2)
        var i = 0
        while i < u.count {
            guard let hi = nibble(u[i]), let lo = nibble(u[i + 1]) else { return nil }
            out.append(hi << 4 | lo)
            i += 2
        }
        return out
    }

    private static func nibble(_ c: UInt8) -> UInt8? {
        switch c {
        case 0x30...0x39: c - 0x30
        case 0x61...0x66: c - 0x61 + 10
        case 0x41...0x46: c - 0x41 + 10
        default: nil
        }
    }
}
