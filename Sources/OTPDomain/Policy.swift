/// One step of a fallback flow: send on a channel, then wait for a receipt.
public struct Step: Sendable, Hashable, Codable {
    /// The keys as stored (snake_case).
    enum CodingKeys: String, CodingKey {
        case channel
        case timeoutMs = "timeout_ms"
        case until
        case auto
    }
    /// The channel of this step.
    public var channel: DeliveryChannel
    /// How long to wait for `until` after the provider accepted the message; nil means no wait. With `auto`,
    /// the longest wait (`max`), used when the `sent` event records none.
    public var timeoutMs: Int64?
    /// The receipt that ends the wait.
    public var until: Until
    /// `timeout = "auto"`: the wait is chosen at each hand-off from how fast the route delivers.
    public var auto: AutoTimeout?

    /// Creates a step.
    public init(channel: DeliveryChannel, timeoutMs: Int64? = nil, until: Until = .delivered, auto: AutoTimeout? = nil)
    {
        self.channel = channel
        self.timeoutMs = auto?.maxMs ?? timeoutMs
        self.until = until
        self.auto = auto
    }
}

/// An adaptive step timeout: the route's live p95 of send → receipt, times 1.25, within `[min, max]`.
public struct AutoTimeout: Sendable, Hashable, Codable {
    enum CodingKeys: String, CodingKey {
        case minMs = "min_ms"
        case maxMs = "max_ms"
    }
    /// The shortest wait.
    public var minMs: Int64
    /// The longest wait, and the wait without enough samples.
    public var maxMs: Int64
    /// Samples a p95 needs to be used.
    public static let minimumSamples = 50

    /// Creates the bounds.
    public init(minMs: Int64 = 10_000, maxMs: Int64 = 120_000) {
        self.minMs = minMs
        self.maxMs = maxMs
    }

    /// The wait for a route, and its basis as the `sent` event records it.
    public func wait(for route: RouteLatency?) -> (ms: Int64, basis: String) {
        guard let route, route.samples >= Self.minimumSamples else { return (maxMs, "too few samples") }
        let chosen = min(max(route.p95Ms.saturatingAdd(route.p95Ms / 4), minMs), maxMs)
        return (chosen, "p95 \(route.p95Ms) ms of \(route.samples) in 1 h")
    }
}

/// How fast a route (a channel to a country) delivered recently: the p95 of send → delivery receipt, and how
/// many deliveries it is computed from.
public struct RouteLatency: Sendable, Hashable {
    /// The 95th percentile, in milliseconds.
    public var p95Ms: Int64
    /// The deliveries counted.
    public var samples: Int

    /// Creates a figure.
    public init(p95Ms: Int64, samples: Int) {
        self.p95Ms = p95Ms
        self.samples = samples
    }
}

/// A weighted alternative step order, for experiments.
public struct Variant: Sendable, Hashable {
    /// The relative weight of this variant.
    public var weight: Int
    /// The channel order this variant uses.
    public var order: [DeliveryChannel]

    /// Creates a variant.
    public init(weight: Int, order: [DeliveryChannel]) {
        self.weight = weight
        self.order = order
    }
}

/// A named fallback flow and the requests it applies to.
public struct Policy: Sendable, Hashable {
    /// The policy's name.
    public var name: String
    /// The ordered steps.
    public var steps: [Step]
    /// E.164 country calling codes (`+44`) this policy is chosen for.
    public var matchCountry: [String]
    /// Carrier hints this policy is chosen for.
    public var matchCarrier: [String]
    /// Weighted alternative orders; empty means `steps` as written.
    public var variants: [Variant]

    /// Creates a policy.
    public init(
        name: String,
        steps: [Step],
        matchCountry: [String] = [],
        matchCarrier: [String] = [],
        variants: [Variant] = []
    ) {
        self.name = name
        self.steps = steps
        self.matchCountry = matchCountry
        self.matchCarrier = matchCarrier
        self.variants = variants
    }

    /// The flow used when nothing is configured: SMS, then e-mail, then voice, then push.
    public static let builtInDefault = Policy(
        name: "default",
        steps: [
            Step(channel: .sms, timeoutMs: 15_000, until: .delivered),
            Step(channel: .email, timeoutMs: 30_000, until: .opened),
            Step(channel: .voice, timeoutMs: 45_000, until: .verified),
            Step(channel: .push),
        ]
    )
}

/// The steps chosen for one session.
public struct Plan: Sendable, Hashable, Codable {
    /// The policy the steps come from.
    public var policy: String
    /// The 1-based variant chosen, or nil when the policy has no variants.
    public var variant: Int?
    /// The planned steps, with effective timeouts, after skipping channels without a destination.
    public var steps: [Step]

    /// Creates a plan.
    public init(policy: String, variant: Int?, steps: [Step]) {
        self.policy = policy
        self.variant = variant
        self.steps = steps
    }
}

/// The configured policies and the rules that pick one for a request.
public struct PolicyBook: Sendable {
    /// A step that is not the last and has no timeout waits this long.
    public static let defaultStepTimeoutMs: Int64 = 30_000

    /// The policies in configuration order.
    public var policies: [Policy]

    /// Creates a book; with no policies the built-in default flow applies.
    public init(policies: [Policy]) {
        self.policies = policies.isEmpty ? [Policy.builtInDefault] : policies
    }

    /// Chooses the policy for a request: by name, else by country or carrier, else `default`.
    public func policy(named name: String?, destinations: [Destination], carrier: String?) throws(Rejection) -> Policy {
        if let name {
            guard let p = policies.first(where: { $0.name == name }) else {
                throw .badArgument("unknown policy '\(Validation.printable(name))'")
            }
            return p
        }
        let phone =
            destinations.first(where: { $0.channel == .sms })?.address
            ?? destinations.first(where: { $0.channel == .voice })?.address
        for p in policies where !p.matchCountry.isEmpty || !p.matchCarrier.isEmpty {
            let countryFits =
                p.matchCountry.isEmpty || (phone.map { ph in p.matchCountry.contains { ph.hasPrefix($0) } } ?? false)
            let carrierFits =
                p.matchCarrier.isEmpty
                || (carrier.map { c in p.matchCarrier.contains { $0.lowercased() == c.lowercased() } } ?? false)
            if countryFits && carrierFits { return p }
        }
        if let p = policies.first(where: { $0.name == "default" }) { return p }
        throw .badArgument("no policy matches and no policy is named 'default'")
    }

    /// Plans a session: picks the policy and variant, applies the preference and skips channels without a destination.
    ///
    /// - Parameter pick: returns a uniform integer in `0..<n`; injected so planning stays pure.
    public func plan(
        policyName: String?,
        destinations: [Destination],
        prefer: [DeliveryChannel],
        carrier: String?,
        pick: (Int) -> Int
    ) throws(Rejection) -> Plan {
        let policy = try self.policy(named: policyName, destinations: destinations, carrier: carrier)
        var steps = policy.steps
        var variantNumber: Int?
        let total = policy.variants.reduce(0) { $0 + max(0, $1.weight) }
        if total > 0 {
            var r = pick(total)
            for (i, v) in policy.variants.enumerated() where v.weight > 0 {
                if r < v.weight {
                    variantNumber = i + 1
                    steps = v.order.compactMap { ch in policy.steps.first { $0.channel == ch } }
                    break
                }
                r -= v.weight
            }
        }
        if !prefer.isEmpty {
            let front = prefer.compactMap { ch in steps.first { $0.channel == ch } }
            steps = front + steps.filter { !prefer.contains($0.channel) }
        }
        let available = Set(destinations.map(\.channel))
        steps = steps.filter { available.contains($0.channel) }
        guard !steps.isEmpty else {
            throw .badArgument("no usable step: policy '\(policy.name)' has no channel with a destination")
        }
        for i in steps.indices.dropLast() where steps[i].timeoutMs == nil {
            steps[i].timeoutMs = Self.defaultStepTimeoutMs
        }
        return Plan(policy: policy.name, variant: variantNumber, steps: steps)
    }
}
