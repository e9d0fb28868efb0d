import EventStore
import OTPDomain
import Postgres

/// What STATS groups by.
public enum StatsGrouping: String, Sendable, CaseIterable {
    case channel
    case country
    case policy
    /// The provider that handed each message over (`none` for a message no provider took).
    case provider
}

/// One STATS group: PROTOCOL.md's keys, in its order.
public struct StatsGroup: Sendable, Hashable, Encodable {
    /// The channel, the country (`+44`, `none`), or the policy (`login/2` for its second variant).
    public var group: String
    public var issued: Int64
    public var sent: Int64
    public var delivered: Int64
    public var failed: Int64
    public var escalated: Int64
    public var verified: Int64
    public var expired: Int64
    /// delivered ÷ sent, four decimals.
    public var deliveryRate: String
    /// verified ÷ issued, four decimals.
    public var conversionRate: String
    /// Send → first delivery receipt, median and 95th percentile; 0 without a sample.
    public var p50DeliveryMs: Int64
    public var p95DeliveryMs: Int64
    /// ISSUE → verified, median; 0 without a sample.
    public var p50VerifyMs: Int64
    /// What the group's priced messages cost, in millionths; nil when none is priced.
    public var costMicros: Int64? = nil

    /// `cost`: the priced messages' sum, four decimals; nil when none is priced.
    public var cost: String? { costMicros.map { Money(micros: $0).fourDecimals } }
    /// `cost_per_verification`: `cost` ÷ `verified`, four decimals; nil when either is missing.
    public var costPerVerification: String? {
        costMicros.flatMap { verified > 0 ? Money.fourDecimals($0, dividedBy: verified) : nil }
    }

    /// The keys in PROTOCOL.md's order with their values, for the RESP map and tables.
    public var fields: [(key: String, value: Field)] {
        [
            ("group", .text(group)), ("issued", .integer(issued)), ("sent", .integer(sent)),
            ("delivered", .integer(delivered)), ("failed", .integer(failed)), ("escalated", .integer(escalated)),
            ("verified", .integer(verified)), ("expired", .integer(expired)), ("delivery_rate", .text(deliveryRate)),
            ("conversion_rate", .text(conversionRate)), ("p50_delivery_ms", .integer(p50DeliveryMs)),
            ("p95_delivery_ms", .integer(p95DeliveryMs)), ("p50_verify_ms", .integer(p50VerifyMs)),
            ("cost", cost.map(Field.text) ?? .null),
            ("cost_per_verification", costPerVerification.map(Field.text) ?? .null),
        ]
    }

    /// Encodes the STATS keys in their order, `cost` and `cost_per_verification` as null when missing (the
    /// dashboard's JSON has every key STATS has).
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: Key.self)
        for (key, value) in fields {
            switch value {
            case .text(let t): try c.encode(t, forKey: Key(key))
            case .integer(let n): try c.encode(n, forKey: Key(key))
            case .null: try c.encodeNil(forKey: Key(key))
            }
        }
    }

    struct Key: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(_ s: String) { stringValue = s }
        init?(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    /// A value of a STATS field.
    public enum Field: Sendable {
        case text(String)
        case integer(Int64)
        /// No value (RESP's null; an empty cell).
        case null

        /// The value as a table cell shows it (empty for null).
        public var text: String {
            switch self {
            case .text(let t): t
            case .integer(let n): String(n)
            case .null: ""
            }
        }
    }
}

/// One hour of a tenant's traffic (the dashboard's last 24 hours).
public struct HourFigures: Sendable, Hashable, Codable {
    /// The hour's start, epoch ms.
    public var hour: Int64
    public var issued: Int64
    public var sent: Int64
    public var delivered: Int64
    public var failed: Int64
    public var verified: Int64
}

/// How many sessions went one way and ended one way.
public struct PathFigures: Sendable, Hashable, Codable {
    /// The channels in order, `sms>email`.
    public var path: String
    /// The session's status.
    public var status: String
    public var sessions: Int64
}

/// The analysts' queries over the read models: STATS and the dashboard's figures.
public enum Analytics {
    /// STATS: the tenant's sessions issued in the last `since` seconds (by the database clock), grouped.
    ///
    /// Counted from the per-message rows, so SINCE is exact to the millisecond and the percentiles are exact:
    /// a session is `issued` once, in its first step's channel; sent, delivered, failed per message in the
    /// message's channel; escalated in the channel left; verified and expired in the channel of the step then
    /// current (PROTOCOL.md, "Precise answers").
    public static func stats(
        tenant: String,
        since seconds: Int64,
        by grouping: StatsGrouping,
        on conn: PGConnection
    ) throws -> [StatsGroup] {
        let group =
            switch grouping {
            case .channel: "channel"
            case .country: "country"
            case .policy: "CASE WHEN variant = 0 THEN policy ELSE policy || '/' || variant END"
            case .provider: "coalesce(provider, 'none')"
            }
        let rows = try conn.query(
            """
            WITH now AS (SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS ms)
            SELECT \(unescaped: group) AS grp,
                   count(*) FILTER (WHERE first_step) AS issued,
                   count(sent_ms) AS sent,
                   count(delivered_ms) AS delivered,
                   count(*) FILTER (WHERE failed) AS failed,
                   count(*) FILTER (WHERE escalated) AS escalated,
                   count(verified_ms) AS verified,
                   count(*) FILTER (WHERE expired) AS expired,
                   coalesce(percentile_disc(0.5) WITHIN GROUP (ORDER BY GREATEST(delivered_ms - sent_ms, 0))
                                FILTER (WHERE delivered_ms IS NOT NULL AND sent_ms IS NOT NULL), 0)
                       AS p50_delivery_ms,
                   coalesce(percentile_disc(0.95) WITHIN GROUP (ORDER BY GREATEST(delivered_ms - sent_ms, 0))
                                FILTER (WHERE delivered_ms IS NOT NULL AND sent_ms IS NOT NULL), 0)
                       AS p95_delivery_ms,
                   coalesce(percentile_disc(0.5) WITHIN GROUP (ORDER BY verified_ms - issued_ms), 0)
                       AS p50_verify_ms,
                   sum(price_micros) AS cost_micros
            FROM projections.message_view, now
            WHERE tenant = \(tenant) AND issued_ms >= now.ms - \(seconds) * 1000
              AND (NOT withdrawn OR sent_ms IS NOT NULL)
            GROUP BY grp
            ORDER BY grp
            """
        ).rows
        return try rows.map { r in
            let issued = try r.decode("issued", as: Int64.self)
            let sent = try r.decode("sent", as: Int64.self)
            let delivered = try r.decode("delivered", as: Int64.self)
            let verified = try r.decode("verified", as: Int64.self)
            return StatsGroup(
                group: try r.decode("grp"),
                issued: issued,
                sent: sent,
                delivered: delivered,
                failed: try r.decode("failed"),
                escalated: try r.decode("escalated"),
                verified: verified,
                expired: try r.decode("expired"),
                deliveryRate: FourDecimals.ratio(delivered, sent),
                conversionRate: FourDecimals.ratio(verified, issued),
                p50DeliveryMs: try r.decode("p50_delivery_ms"),
                p95DeliveryMs: try r.decode("p95_delivery_ms"),
                p50VerifyMs: try r.decode("p50_verify_ms"),
                costMicros: try r.decodeIfPresent("cost_micros", as: Int64.self)
            )
        }
    }

    /// The tenant's last `hours` hours by hour of issue, oldest first, every hour present (zeros included).
    public static func hours(tenant: String, hours: Int, on conn: PGConnection) throws -> [HourFigures] {
        let rows = try conn.query(
            """
            WITH hours AS (
                SELECT generate_series(date_trunc('hour', now()) - (\(hours - 1) * interval '1 hour'),
                                       date_trunc('hour', now()), interval '1 hour') AS hour)
            SELECT (extract(epoch FROM h.hour) * 1000)::bigint AS hour,
                   coalesce(sum(s.issued), 0) AS issued, coalesce(sum(s.sent), 0) AS sent,
                   coalesce(sum(s.delivered), 0) AS delivered, coalesce(sum(s.failed), 0) AS failed,
                   coalesce(sum(s.verified), 0) AS verified
            FROM hours h LEFT JOIN projections.delivery_stats s ON s.hour = h.hour AND s.tenant = \(tenant)
            GROUP BY h.hour ORDER BY h.hour
            """
        ).rows
        return try rows.map { r in
            HourFigures(
                hour: try r.decode("hour"),
                issued: try r.decode("issued"),
                sent: try r.decode("sent"),
                delivered: try r.decode("delivered"),
                failed: try r.decode("failed"),
                verified: try r.decode("verified")
            )
        }
    }

    /// The tenant's fallback paths of sessions issued in the last `since` seconds, the most taken first.
    public static func paths(tenant: String, since seconds: Int64, on conn: PGConnection) throws -> [PathFigures] {
        let rows = try conn.query(
            """
            SELECT array_to_string(channels, '>') AS path, status, count(*) AS sessions
            FROM projections.session_view
            WHERE tenant = \(tenant)
              AND issued_ms >= (extract(epoch FROM clock_timestamp()) * 1000)::bigint - \(seconds) * 1000
            GROUP BY path, status
            ORDER BY sessions DESC, path, status
            """
        ).rows
        return try rows.map { r in
            PathFigures(path: try r.decode("path"), status: try r.decode("status"), sessions: try r.decode("sessions"))
        }
    }
}

/// STATS' arguments: `[SINCE seconds] [BY channel|country|policy|provider]`, in either order, names case-insensitive.
public struct StatsQuery: Sendable, Hashable {
    /// Sessions issued in the last this many seconds.
    public var since: Int64 = 3_600
    /// The grouping.
    public var by = StatsGrouping.channel

    /// The longest SINCE: ten years.
    public static let maxSince: Int64 = 315_360_000

    /// The defaults: `SINCE 3600 BY channel`.
    public init(since: Int64 = 3_600, by: StatsGrouping = .channel) {
        self.since = since
        self.by = by
    }

    /// Parses STATS' arguments (the command name removed).
    public static func parse(_ args: [String]) throws(Rejection) -> StatsQuery {
        var q = StatsQuery()
        var seen: Set<String> = []
        var i = 0
        while i < args.count {
            let name = args[i].uppercased()
            guard name == "SINCE" || name == "BY" else {
                throw .badArgument("unknown STATS option '\(Validation.printable(args[i]))' (SINCE seconds, BY group)")
            }
            guard seen.insert(name).inserted else { throw .badArgument("\(name) given twice") }
            guard i + 1 < args.count else { throw .badArgument("\(name) needs a value") }
            let value = args[i + 1]
            if name == "SINCE" {
                guard let s = Int64(value), (1...maxSince).contains(s) else {
                    throw .badArgument("SINCE must be a whole number of seconds from 1 to \(maxSince)")
                }
                q.since = s
            } else {
                guard let g = StatsGrouping(rawValue: value.lowercased()) else {
                    throw .badArgument("BY must be channel, country, policy or provider")
                }
                q.by = g
            }
            i += 2
        }
        return q
    }
}

/// The analysts' queries on a pool, for the server's STATS and dashboard.
public struct AnalyticsQueries: Sendable {
    let pool: PGPool

    /// Creates the queries on `pool`.
    public init(pool: PGPool) { self.pool = pool }

    /// STATS for a tenant.
    public func stats(_ q: StatsQuery, tenant: String) async throws -> [StatsGroup] {
        try await pool.withConnection { try Analytics.stats(tenant: tenant, since: q.since, by: q.by, on: $0) }
    }

    /// The dashboard's figures for a tenant: STATS SINCE 86400 BY channel, the last 24 hours, the paths.
    public func dashboard(tenant: String) async throws -> DashboardFigures {
        try await pool.withConnection { conn in
            try conn.transaction { conn in
                // One snapshot for all three, so the page's figures agree with each other.
                try conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                return DashboardFigures(
                    channels: try Analytics.stats(tenant: tenant, since: 86_400, by: .channel, on: conn),
                    hours: try Analytics.hours(tenant: tenant, hours: 24, on: conn),
                    paths: try Analytics.paths(tenant: tenant, since: 86_400, on: conn),
                    generatedAt: try EventStore.now(on: conn)
                )
            }
        }
    }
}

/// What `/dashboard` and `/dashboard.json` show: the last 24 hours of one tenant.
public struct DashboardFigures: Sendable, Hashable, Encodable {
    /// `STATS SINCE 86400 BY channel`.
    public var channels: [StatsGroup]
    /// The last 24 hours by hour of issue, oldest first.
    public var hours: [HourFigures]
    /// The fallback paths and how they ended, the most taken first.
    public var paths: [PathFigures]
    /// When the figures were read (epoch ms).
    public var generatedAt: Int64
}
