/// Where a session stands, as STATUS reports it.
public enum SessionStatus: String, Sendable, Hashable, Codable {
    case pending
    case sent
    case delivered
    case verified
    case expired
    case locked
    case cancelled
    case exhausted

    /// Whether the session can still change: send, verify, escalate.
    public var isActive: Bool {
        switch self {
        case .pending, .sent, .delivered, .exhausted: true
        case .verified, .expired, .locked, .cancelled: false
        }
    }
}

/// A step that was started (its message queued) at a stream version.
public struct StartedStep: Sendable, Hashable {
    /// The 1-based step number.
    public var step: Int
    /// The step's channel.
    public var channel: DeliveryChannel
    /// The version of the event that started it; the message's token.
    public var version: Int
    /// Why it started: nil for the first step, else the escalation's reason.
    public var reason: EscalationReason?
    /// When its message was handed off.
    public var sentAt: Int64?
    /// The version of that `sent` event.
    public var sentVersion: Int?
    /// Whether its wait already ended in `timed_out`: a deadline fires once, even if the step comes back.
    public var timedOut = false
    /// The providers that failed its message and handed it to the next one (failover within the channel), in
    /// order: the dispatcher sends with the first provider not among them.
    public var failedProviders: [String] = []
}

/// The state of one OTP session, folded from its events.
public struct SessionState: Sendable, Hashable {
    /// The stream's last version (0 when the session does not exist).
    public var version = 0
    /// The `issued` event, or nil when the session does not exist.
    public var issued: SessionEvent.Issued?
    /// The session's status as recorded.
    public var status = SessionStatus.pending
    /// The current 1-based step.
    public var step = 1
    /// The version of the event that started the current step (the outbox token).
    public var stepStartedVersion = 0
    /// The version of the current step's `sent` event (the step timer's token), nil until handed off.
    public var sentVersion: Int?
    /// When the current step's message was handed to its provider.
    public var sentAt: Int64?
    /// The wait an adaptive current step chose at its hand-off (its `sent` event's `timeout_ms`); nil: the
    /// step's own timeout.
    public var stepWaitMs: Int64?
    /// When the current step's message was first reported delivered or opened.
    public var deliveredAt: Int64?
    /// Whether the current step's message was reported opened.
    public var opened = false
    /// When the code was verified.
    public var verifiedAt: Int64?
    /// When the session was issued.
    public var issuedAt: Int64 = 0
    /// When the code stops verifying.
    public var expiresAt: Int64 = 0
    /// Wrong codes still allowed.
    public var attemptsLeft = 0
    /// Every step started, in order (a repeated last step appears again).
    public var started: [StartedStep] = []
    /// Steps whose start was withdrawn by a late receipt, by token: a hand-off already under way is still recorded.
    public var withdrawn: [Int: StartedStep] = [:]
    /// Whether the session's personal data was erased (nothing more is sent; VERIFY still answers).
    public var erased = false
    /// Receipts already recorded, as "start version:outcome", for idempotency.
    public var receiptKeys: Set<String> = []

    /// An empty state: no such session.
    public init() {}

    /// Whether every step number the state holds names a step of its plan: a history edited by hand may fold
    /// into a state that does not, and deciding on it could index outside the plan.
    public var isConsistent: Bool {
        guard let steps = issued?.plan.steps, !steps.isEmpty else { return issued == nil }
        let range = 1...steps.count
        return range.contains(step) && started.allSatisfy { range.contains($0.step) }
            && withdrawn.values.allSatisfy { range.contains($0.step) }
    }

    /// The current step, or nil when the session does not exist.
    public var currentStep: Step? {
        guard let plan = issued?.plan, step >= 1, step <= plan.steps.count else { return nil }
        return plan.steps[step - 1]
    }

    /// The status a reader should see at `now`: an active session past its TTL reads `expired`.
    public func effectiveStatus(now: Int64) -> SessionStatus {
        (status.isActive && issued != nil && now >= expiresAt) ? .expired : status
    }

    /// Whether the current step's message is queued and not yet handed to a provider, and may still go out at
    /// `now` (a session past its TTL sends nothing, even before the expiry timer records `expired`).
    public func awaitsHandOff(token: Int, now: Int64) -> Bool {
        issued != nil && !erased && effectiveStatus(now: now).isActive && token == stepStartedVersion
            && sentVersion == nil
    }

    /// The providers that already failed the message of the step started at `token`, handing it on.
    public func failedProviders(token: Int) -> [String] {
        started.last { $0.version == token }?.failedProviders ?? []
    }

    /// The most recent start of a channel's message.
    func latestStart(of channel: DeliveryChannel) -> StartedStep? {
        started.last { $0.channel == channel }
    }

    /// The start a receipt names: the one at `token` when given (a withdrawn one too: its message may have
    /// gone out before the withdrawal; nil when there is none on `channel`), else the channel's latest (RESP's
    /// RECEIPT, and events recorded before receipts carried their token).
    func start(token: Int?, channel: DeliveryChannel) -> StartedStep? {
        guard let token else { return latestStart(of: channel) }
        let named = started.first { $0.version == token } ?? withdrawn[token]
        return named?.channel == channel ? named : nil
    }

    /// Whether the current step's wait already ended in `timed_out`.
    var currentStepTimedOut: Bool { started.last?.timedOut ?? false }

    /// Whether the current step's `until` receipt has come.
    var untilSatisfied: Bool {
        switch currentStep?.until {
        case .delivered: deliveredAt != nil
        case .opened: opened
        case .verified: status == .verified
        case nil: true
        }
    }
}
