/// What the read models keep of one session, folded from its events: its route, its messages and how it
/// ended. No code and no personal data: the destinations are not in it, only the phone number's country code.
///
/// The projector folds each event into the session's summary and writes what the summary contributes to the
/// read models; a rebuild folds the whole log the same way. Counting is never done per event: `Contribution`
/// is a function of the summary alone, so a late receipt, a duplicate or a withdrawn escalation changes the
/// figures exactly as far as it changes the summary.
public struct SessionSummary: Sendable, Hashable {
    /// The session's stream.
    public var stream: StreamID
    /// The last version folded in.
    public var version = 0
    /// Whether its `issued` event was folded (a stream without one contributes nothing).
    public var isIssued = false
    /// The policy its plan came from.
    public var policy = ""
    /// The 1-based variant of the policy, or nil when the policy has none.
    public var variant: Int?
    /// The phone number's country calling code (`+44`), or nil without a phone number.
    public var country: String?
    /// The status as recorded.
    public var status = SessionStatus.pending
    /// When it was issued (database clock, epoch ms).
    public var issuedAt: Int64 = 0
    /// When the code was verified.
    public var verifiedAt: Int64?
    /// When it reached a status it cannot leave by itself (verified, expired, locked, cancelled, exhausted).
    public var endedAt: Int64?
    /// When its last event was appended.
    public var lastEventAt: Int64 = 0
    /// The start (version) of the current step.
    public var currentToken = 0
    /// Every step started, in order; a repeated last step appears again.
    public var messages: [MessageSummary] = []

    /// An empty summary of a stream.
    public init(stream: StreamID) { self.stream = stream }

    /// The channels the session went through, in order (a start withdrawn before its message went out is not).
    public var path: [DeliveryChannel] { messages.filter(\.counts).map(\.channel) }

    /// The message whose step was current when the code was verified.
    public var converted: MessageSummary? { messages.first { $0.verifiedAt != nil } }

    /// Folds one event, appended at `at` with `version`; an event at or below the summary's version was folded
    /// already and changes nothing.
    public mutating func apply(_ event: SessionEvent, version: Int, at: Int64) {
        guard version > self.version else { return }
        self.version = version
        lastEventAt = at
        switch event {
        case .issued(let i):
            // A test destination's session is left out of the read models: it is never issued for them.
            guard !i.test else { return }
            isIssued = true
            policy = i.plan.policy
            variant = i.plan.variant
            country = i.country
            status = .pending
            issuedAt = at
            currentToken = version
            messages =
                i.plan.steps.first.map { [MessageSummary(token: version, step: 1, channel: $0.channel, at: at)] }
                ?? []
        case .sent(let e):
            guard let m = index(token: e.token, channel: e.channel, step: e.step) else { return }
            if messages[m].sentAt == nil { messages[m].sentAt = at }
            messages[m].provider = e.provider
            if let price = e.price.flatMap(Money.init(decimal:)) { messages[m].price = price }
            if messages[m].token == currentToken && status == .pending { status = .sent }
        case .delivered(let r), .opened(let r):
            guard let m = index(token: r.token, channel: r.channel, step: nil) else { return }
            if messages[m].deliveredAt == nil { messages[m].deliveredAt = at }
            if case .opened = event, messages[m].openedAt == nil { messages[m].openedAt = at }
            if !r.late && (status == .pending || status == .sent) { status = .delivered }
        case .deliveryFailed(let f):
            // A provider that handed the step on did not fail the step's message: the next provider sends it.
            guard f.nextProvider == nil, let m = index(token: f.token, channel: f.channel, step: nil) else { return }
            messages[m].failed = true
            // The provider that failed it last: STATS BY provider counts the failure there.
            if messages[m].sentAt == nil, let provider = f.provider { messages[m].provider = provider }
        case .escalated(let e):
            if let m = currentIndex { messages[m].escalated = true }
            messages.append(MessageSummary(token: version, step: e.to, channel: e.toChannel, at: at))
            currentToken = version
            status = .pending
        case .escalationWithdrawn:
            // The session returns to the step before: the start is withdrawn, and so is the escalation from it.
            guard let last = currentIndex, last > 0 else { return }
            messages[last].withdrawn = true
            messages[last - 1].escalated = false
            currentToken = messages[last - 1].token
            status = .delivered
        case .verified:
            status = .verified
            verifiedAt = at
            if let m = currentIndex { messages[m].verifiedAt = at }
            endedAt = at
        case .expired:
            status = .expired
            if let m = currentIndex { messages[m].expired = true }
            endedAt = at
        case .locked:
            status = .locked
            endedAt = at
        case .cancelled:
            status = .cancelled
            endedAt = at
        case .exhausted:
            status = .exhausted
            endedAt = at
        case .timedOut, .verificationFailed, .erased:
            break  // the counts keep what the session did; erasure removes nothing the summary holds
        }
    }

    private var currentIndex: Int? { messages.lastIndex { $0.token == currentToken } }

    /// The message an event names: by its token; without one (events recorded before otpd kept it), the latest
    /// start of the channel (of the step, when the event names one).
    private func index(token: Int?, channel: DeliveryChannel, step: Int?) -> Int? {
        if let token { return messages.lastIndex { $0.token == token && $0.channel == channel } }
        return messages.lastIndex { $0.channel == channel && (step == nil || $0.step == step) }
    }
}

/// One step's start and what became of its message.
public struct MessageSummary: Sendable, Hashable {
    /// The version of the event that started the step (the message's token).
    public var token: Int
    /// The 1-based step.
    public var step: Int
    /// Its channel.
    public var channel: DeliveryChannel
    /// When the step started.
    public var startedAt: Int64
    /// When the provider accepted the message.
    public var sentAt: Int64?
    /// The first delivered or opened receipt (an open implies a delivery).
    public var deliveredAt: Int64?
    /// The first opened receipt.
    public var openedAt: Int64?
    /// Whether the provider refused it or a receipt reported it failed.
    public var failed = false
    /// Whether the session left this step for another.
    public var escalated = false
    /// When the code was verified, on the message whose step was then current.
    public var verifiedAt: Int64?
    /// Whether the session expired on this step.
    public var expired = false
    /// Whether a late receipt withdrew this start (its message normally never went out).
    public var withdrawn = false
    /// The driver that handed it over.
    public var provider: String?
    /// What it cost (its `sent` event's price); nil when nothing priced it.
    public var price: Money?

    /// Creates a message started at `at`.
    public init(token: Int, step: Int, channel: DeliveryChannel, at: Int64) {
        self.token = token
        self.step = step
        self.channel = channel
        startedAt = at
    }

    /// Whether it counts as a message: every start but one withdrawn before its message went out.
    public var counts: Bool { !withdrawn || sentAt != nil }

    /// Send → first delivery, when both are known (a receipt that beat the record of `sent` counts as 0).
    public var deliveryMs: Int64? {
        guard let sentAt, let deliveredAt else { return nil }
        return max(0, deliveredAt - sentAt)
    }
}
