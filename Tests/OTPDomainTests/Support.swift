import OTPDomain

/// A deterministic code book: the code is the seed's digits.
struct FixedCodes: CodeBook {
    var code = "123456"
    func newSeed() -> String { "seed-\(code)" }
    func code(seed: String, digits: Int, stream: StreamID) -> String { String(seed.dropFirst(5).prefix(digits)) }
    func digest(code: String, stream: StreamID) -> String { "\(stream)|\(code)" }
    func matches(code: String, digest: String, stream: StreamID) -> Bool {
        self.digest(code: code, stream: stream) == digest
    }
}

/// Given some events, when a command, then events or a rejection: the shape of every domain test.
struct Given {
    var events: [(event: SessionEvent, at: Int64)]
    var state: SessionState { SessionDecider.fold(events) }

    init(_ events: [(SessionEvent, Int64)] = []) { self.events = events.map { (event: $0.0, at: $0.1) } }

    func when(
        _ command: SessionCommand,
        at now: Int64,
        minGapMs: Int64 = 30_000,
        plan: Plan = defaultPlan,
        facts: DecisionContext.Facts = .init()
    ) throws(Rejection) -> Decision {
        try SessionDecider.decide(
            command,
            state: state,
            context: context(now, minGapMs: minGapMs, plan: plan, facts: facts)
        )
    }

    /// The state after the command's events, recorded at `now`.
    func then(_ command: SessionCommand, at now: Int64) throws(Rejection) -> SessionState {
        let d = try when(command, at: now)
        return SessionDecider.fold(d.events.map { ($0, now) }, from: state)
    }

    func and(_ more: [SessionEvent], at: Int64) -> Given {
        Given(events.map { ($0.event, $0.at) } + more.map { ($0, at) })
    }
}

/// A context whose only policy is `plan`'s (so ISSUE plans exactly those steps).
func context(
    _ now: Int64,
    minGapMs: Int64 = 30_000,
    plan: Plan = defaultPlan,
    facts: DecisionContext.Facts = .init()
) -> DecisionContext {
    DecisionContext(
        now: now,
        stream: StreamID(tenant: "default", session: "s1"),
        codes: FixedCodes(),
        policies: PolicyBook(policies: [Policy(name: plan.policy, steps: plan.steps)]),
        pick: { _ in 0 },
        minGapMs: minGapMs,
        facts: facts
    )
}

let defaultPlan = Plan(
    policy: "default",
    variant: nil,
    steps: [
        Step(channel: .sms, timeoutMs: 15_000, until: .delivered),
        Step(channel: .email, timeoutMs: 30_000, until: .opened),
        Step(channel: .voice, timeoutMs: 45_000, until: .verified),
        Step(channel: .push),
    ]
)

let allDestinations = [
    Destination(channel: .sms, address: "+15551234567"),
    Destination(channel: .email, address: "a@example.com"),
    Destination(channel: .voice, address: "+15551234567"),
    Destination(channel: .push, address: "device-token-1"),
]

func request(
    _ session: String = "s1",
    fingerprint: String = "fp1",
    ttl: Int = 600,
    maxAttempts: Int = 5
) -> IssueRequest {
    IssueRequest(
        session: session,
        destinations: allDestinations,
        ttlSeconds: ttl,
        maxAttempts: maxAttempts,
        fingerprint: fingerprint
    )
}

/// The events of a freshly issued session at t=0.
func issuedSession(plan: Plan = defaultPlan, ttl: Int = 600, maxAttempts: Int = 5) throws -> Given {
    var r = request(ttl: ttl, maxAttempts: maxAttempts)
    r.policy = plan.policy
    let d = try Given().when(.issue(r), at: 0, plan: plan)
    return Given(d.events.map { ($0, 0) })
}

/// Issued and handed off on step 1 at t=100.
func sentSession(plan: Plan = defaultPlan, ttl: Int = 600, maxAttempts: Int = 5) throws -> Given {
    let g = try issuedSession(plan: plan, ttl: ttl, maxAttempts: maxAttempts)
    let d = try g.when(.recordHandOff(token: 1, messageId: "m1", provider: "log", providerRef: nil), at: 100)
    return g.and(d.events, at: 100)
}

extension SessionEvent {
    var isEscalated: Bool { if case .escalated = self { true } else { false } }
}
