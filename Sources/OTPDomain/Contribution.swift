/// What sessions add to the aggregate read models (`delivery_stats`, `delivery_latency`, `fallback_paths`).
///
/// A session's share is a function of its summary alone; when an event changes the summary the projector adds
/// the new share and subtracts the old one, so the aggregates always equal the sum over the sessions'
/// summaries, however events arrive (late receipts, duplicates, withdrawn escalations).
public struct Contribution: Sendable, Equatable {
    /// Counters per hour × tenant × channel × country × policy(variant).
    public var stats: [StatsKey: StatsCounts] = [:]
    /// Latency histogram counts per group, kind and bucket.
    public var latency: [LatencyKey: Int64] = [:]
    /// Sessions per hour × tenant × policy(variant) × path × status.
    public var paths: [PathKey: Int64] = [:]

    /// Nothing.
    public init() {}

    /// Whether it adds nothing anywhere.
    public var isEmpty: Bool {
        stats.values.allSatisfy { $0 == StatsCounts() } && latency.values.allSatisfy { $0 == 0 }
            && paths.values.allSatisfy { $0 == 0 }
    }

    /// Adds a session's share `sign` times: +1 for its new summary, -1 for the one it replaces.
    public mutating func add(_ s: SessionSummary, sign: Int64) {
        guard s.isIssued else { return }
        let hour = s.issuedAt - s.issuedAt % 3_600_000
        let country = s.country ?? StatsKey.noCountry
        let variant = s.variant ?? 0
        var firstCounted = false
        for m in s.messages where m.counts {
            let key = StatsKey(
                hourMs: hour,
                tenant: s.stream.tenant,
                channel: m.channel,
                country: country,
                policy: s.policy,
                variant: variant
            )
            var c = StatsCounts()
            if !firstCounted {
                c.issued = 1
                firstCounted = true
            }
            if m.sentAt != nil { c.sent = 1 }
            if m.deliveredAt != nil { c.delivered = 1 }
            if m.failed { c.failed = 1 }
            if m.openedAt != nil { c.opened = 1 }
            if m.escalated { c.escalated = 1 }
            if m.verifiedAt != nil { c.verified = 1 }
            if m.expired { c.expired = 1 }
            stats[key, default: StatsCounts()].add(c, times: sign)
            if let ms = m.deliveryMs {
                latency[LatencyKey(group: key, kind: .delivery, leMs: LatencyBuckets.upperBound(of: ms)), default: 0] +=
                    sign
            }
            if let verifiedAt = m.verifiedAt {
                let ms = max(0, verifiedAt - s.issuedAt)
                latency[LatencyKey(group: key, kind: .verify, leMs: LatencyBuckets.upperBound(of: ms)), default: 0] +=
                    sign
            }
        }
        let path = PathKey(
            hourMs: hour,
            tenant: s.stream.tenant,
            policy: s.policy,
            variant: variant,
            path: s.path.map(\.rawValue).joined(separator: ">"),
            status: s.status
        )
        paths[path, default: 0] += sign
    }

    /// The share of `after` minus the share of `before` (nil: a session new to the read models).
    public static func change(from before: SessionSummary?, to after: SessionSummary) -> Contribution {
        var c = Contribution()
        if let before { c.add(before, sign: -1) }
        c.add(after, sign: 1)
        return c
    }

    /// Adds another contribution.
    public mutating func add(_ other: Contribution) {
        for (k, v) in other.stats { stats[k, default: StatsCounts()].add(v, times: 1) }
        for (k, v) in other.latency { latency[k, default: 0] += v }
        for (k, v) in other.paths { paths[k, default: 0] += v }
    }
}

/// A group of `delivery_stats`: the hour the session was issued in, its tenant, the message's channel, the
/// country, the policy and its variant (0 without variants).
public struct StatsKey: Sendable, Hashable {
    /// The country of a session without a phone number.
    public static let noCountry = "none"
    /// The start of the hour (epoch ms) the session was issued in.
    public var hourMs: Int64
    /// Its tenant.
    public var tenant: String
    /// The message's channel.
    public var channel: DeliveryChannel
    /// The country calling code, or `none`.
    public var country: String
    /// The policy.
    public var policy: String
    /// The 1-based variant, 0 without variants.
    public var variant: Int

    /// Creates a key.
    public init(hourMs: Int64, tenant: String, channel: DeliveryChannel, country: String, policy: String, variant: Int)
    {
        self.hourMs = hourMs
        self.tenant = tenant
        self.channel = channel
        self.country = country
        self.policy = policy
        self.variant = variant
    }
}

/// The counters of one group.
public struct StatsCounts: Sendable, Hashable {
    /// Sessions whose first step is on this channel.
    public var issued: Int64 = 0
    /// Messages a provider accepted.
    public var sent: Int64 = 0
    /// Messages reported delivered or opened.
    public var delivered: Int64 = 0
    /// Messages refused by the provider or reported failed.
    public var failed: Int64 = 0
    /// Messages reported opened.
    public var opened: Int64 = 0
    /// Steps left for another.
    public var escalated: Int64 = 0
    /// Codes verified while a step on this channel was current.
    public var verified: Int64 = 0
    /// Sessions that expired on a step on this channel.
    public var expired: Int64 = 0

    /// Zero everywhere.
    public init() {}

    /// Adds `other` `times` times.
    public mutating func add(_ other: StatsCounts, times: Int64) {
        issued += other.issued * times
        sent += other.sent * times
        delivered += other.delivered * times
        failed += other.failed * times
        opened += other.opened * times
        escalated += other.escalated * times
        verified += other.verified * times
        expired += other.expired * times
    }
}

/// The latencies the read models keep histograms of.
public enum LatencyKind: String, Sendable, Hashable, CaseIterable {
    /// From the provider's acceptance to the first delivery (or open) receipt.
    case delivery
    /// From ISSUE to the verified code.
    case verify
}

/// One histogram bucket of one group.
public struct LatencyKey: Sendable, Hashable {
    /// The group.
    public var group: StatsKey
    /// What is measured.
    public var kind: LatencyKind
    /// The bucket's inclusive upper bound in milliseconds (`LatencyBuckets.bounds`).
    public var leMs: Int64

    /// Creates a key.
    public init(group: StatsKey, kind: LatencyKind, leMs: Int64) {
        self.group = group
        self.kind = kind
        self.leMs = leMs
    }
}

/// Fixed log-scale latency buckets: each bound about 19 % (2^¼) above the one before, from 1 ms to 70 minutes,
/// then one bucket for everything longer. The same in every hour and every group, so histograms add up.
public enum LatencyBuckets {
    /// The last bucket's bound: every latency fits under it.
    public static let overflow = Int64.max

    /// The inclusive upper bounds in milliseconds, ascending, ending with `overflow`.
    public static let bounds: [Int64] = {
        var b: [Int64] = []
        var x = 1.0
        while x <= 4_194_305 {  // 2^22 ms, about 70 minutes
            let v = Int64(x.rounded(.up))
            if b.last != v { b.append(v) }
            x *= 1.189_207_115_002_721  // 2^(1/4)
        }
        return b + [overflow]
    }()

    /// The bound of the bucket `ms` falls in.
    public static func upperBound(of ms: Int64) -> Int64 {
        var lo = 0
        var hi = bounds.count - 1
        while lo < hi {
            let mid = (lo + hi) / 2
            if bounds[mid] >= ms { hi = mid } else { lo = mid + 1 }
        }
        return bounds[lo]
    }
}

/// A group of `fallback_paths`: the hour issued, the tenant, the policy(variant), the channels gone through and
/// the status the session is in.
public struct PathKey: Sendable, Hashable {
    /// The start of the hour (epoch ms) the session was issued in.
    public var hourMs: Int64
    /// Its tenant.
    public var tenant: String
    /// The policy.
    public var policy: String
    /// The 1-based variant, 0 without variants.
    public var variant: Int
    /// The channels in order, `sms>email`.
    public var path: String
    /// The session's status: how it ended, or where it stands.
    public var status: SessionStatus

    /// Creates a key.
    public init(hourMs: Int64, tenant: String, policy: String, variant: Int, path: String, status: SessionStatus) {
        self.hourMs = hourMs
        self.tenant = tenant
        self.policy = policy
        self.variant = variant
        self.path = path
        self.status = status
    }
}
