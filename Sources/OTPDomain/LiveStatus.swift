/// One message of the live status feed (SUBSCRIBE): where a session stands after an event, and what happens next
/// if nothing else does. No code and no destination: only what a waiting user's screen shows ("sent by SMS;
/// e-mail in 12 s").
public struct LiveStatus: Sendable, Hashable {
    /// The caller's session id.
    public var session: String
    /// The status as STATUS reports it at `at`.
    public var status: SessionStatus
    /// The stream version this message describes.
    public var version: Int
    /// The type of the event that caused it (`issued`, `sent`, `escalated`, ...).
    public var type: String
    /// The current step's channel.
    public var channel: DeliveryChannel?
    /// The current 1-based step.
    public var step: Int?
    /// Where the session goes when the current step's wait ends: the next step's channel, or nil when the wait
    /// ends the session (the last step) or there is no wait.
    public var nextChannel: DeliveryChannel?
    /// When the current step's wait ends (epoch ms), or nil when it does not wait (no timeout, its receipt has
    /// come, or the session has ended).
    public var nextAt: Int64?
    /// When the event was appended (epoch ms, database clock).
    public var at: Int64

    /// The message for a state folded up to an event of type `type` appended at `at`; nil when the state has no
    /// session (a stream that holds no `issued`).
    public init?(_ state: SessionState, type: String, at: Int64) {
        guard let issued = state.issued else { return nil }
        session = issued.session
        status = state.effectiveStatus(now: at)
        version = state.version
        self.type = type
        channel = state.currentStep?.channel
        step = state.currentStep == nil ? nil : state.step
        self.at = at
        let wait = state.timers.first { $0.name == "step" }
        nextAt = wait?.dueAt
        let steps = issued.plan.steps
        nextChannel = wait != nil && state.step < steps.count ? steps[state.step].channel : nil
    }

    /// The JSON object the feed sends: every key always present, null where there is no value.
    public var json: String {
        func text(_ s: String?) -> String { s.map(JSONText.quoted) ?? "null" }
        func number(_ n: (some BinaryInteger)?) -> String { n.map { "\($0)" } ?? "null" }
        return "{\"session\":\(text(session)),\"status\":\(text(status.rawValue)),\"version\":\(version),"
            + "\"type\":\(text(type)),\"channel\":\(text(channel?.rawValue)),\"step\":\(number(step)),"
            + "\"next_channel\":\(text(nextChannel?.rawValue)),\"next_at\":\(number(nextAt)),\"at\":\(at)}"
    }
}
