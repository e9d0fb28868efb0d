import OTPDomain
import Postgres

/// Pacing and abuse limits, checked and recorded inside a command's transaction.
///
/// Destinations are counted by a keyed hash of their address, so the limits keep no personal data. Limits on
/// one destination read its own rows (a handful: the limits bound them); ceilings over many destinations (a
/// country, a tenant) read bucketed counters, so a check costs the same at 10 sends a day or 10 million.
/// Sends are counted when a step starts. Limits refuse only what a caller asked for (ISSUE, RESEND); a step
/// the scheduler starts after a timeout or failure is recorded but never refused, so fallback is never
/// blocked half-way.
public struct Pacing: Sendable {
    let limits: Limits
    let secrets: Secrets

    /// Creates the limits' checker.
    public init(limits: Limits, secrets: Secrets) {
        self.limits = limits
        self.secrets = secrets
    }

    static let tenMinutes: Int64 = 600_000
    static let day: Int64 = 86_400_000
    static let minute: Int64 = 60_000

    /// A destination's key in the pacing tables: a keyed hash of the tenant and the address, so one tenant's
    /// traffic never counts against, blocks or reveals anything of the same person at another tenant.
    /// E-mail addresses are keyed lower-cased, so `User@Example.com` and `user@example.com` are one person to the
    /// limits and to erasure (phone numbers are E.164 already; device tokens are case-sensitive).
    func key(_ tenant: String, _ address: String) -> String {
        secrets.fingerprint(["destination", tenant, address.contains("@") ? address.lowercased() : address])
    }

    /// A ceiling over many destinations (a country, a tenant), counted in time buckets split into shards.
    struct Ceiling {
        var scope: String
        var bucketMs: Int64
        var windowMs: Int64
        var limit: Int

        static let shards = 8

        /// The sends counted at `now`: the current bucket and every bucket that overlaps the window before it
        /// (so the window counted is between `windowMs` and `windowMs + bucketMs` long, never shorter).
        /// Counted with what `counts` holds for this transaction and has not written yet.
        func count(now: Int64, counts: PendingCounts, on conn: PGConnection) throws -> Int {
            let from = (now - windowMs) - (now - windowMs) % bucketMs
            let stored = try conn.query(
                """
                SELECT coalesce(sum(n), 0)::bigint FROM pacing_counts WHERE scope = \(scope) AND bucket_ms >= \(from)
                """
            ).rows[0].decode(0, as: Int.self)
            return stored + counts.count(scope: scope, from: from)
        }

        /// Counts one send (or `amount`) against each ceiling in its current bucket; `counts` writes it with the
        /// transaction.
        static func record(_ ceilings: [Ceiling], now: Int64, counts: PendingCounts, amount: Int = 1) {
            for c in ceilings { counts.add(scope: c.scope, bucketMs: now - now % c.bucketMs, amount: amount) }
        }
    }

    /// A tenant's sends-per-minute ceiling for a phone number's country code (10 s buckets).
    func country(of phone: String, tenant: String) -> Ceiling {
        Ceiling(
            scope: "country:\(tenant):" + CountryCode.of(phone),
            bucketMs: 10_000,
            windowMs: Self.minute,
            limit: limits.prefixSendsPerMinute
        )
    }

    /// A tenant's spend over a day, in millionths (1 h buckets); nil without `spend_per_day`.
    func tenantSpend(_ tenant: String) -> Ceiling? {
        limits.spendPerDay.map {
            Ceiling(scope: "spend_day:" + tenant, bucketMs: 3_600_000, windowMs: Self.day, limit: Int($0.micros))
        }
    }

    /// A tenant's spend on a country calling code over an hour, in millionths (5 min buckets); nil without
    /// `prefix_spend_per_hour`.
    func countrySpend(_ country: String, tenant: String) -> Ceiling? {
        limits.prefixSpendPerHour.map {
            Ceiling(
                scope: "spend_hour:\(tenant):" + country,
                bucketMs: 300_000,
                windowMs: 3_600_000,
                limit: Int($0.micros)
            )
        }
    }

    /// A tenant's daily send budget (1 h buckets).
    func tenant(_ tenant: String) -> Ceiling {
        Ceiling(scope: "tenant:" + tenant, bucketMs: 3_600_000, windowMs: Self.day, limit: limits.tenantSendsPerDay)
    }

    /// What `decide` needs to know from the pacing counters before it runs `command` on `state`: whether a new
    /// session's phone number is in a country over its sends-per-minute ceiling (a repeated ISSUE of an existing
    /// session is answered as it was, so it needs nothing).
    func facts(
        for command: SessionCommand,
        state: SessionState,
        tenant: String,
        now: Int64,
        counts: PendingCounts,
        on conn: PGConnection
    ) throws
        -> DecisionContext.Facts
    {
        guard case .issue(let request) = command, state.issued == nil,
            let phone = request.destinations.first(where: { $0.channel.isTelephony })?.address
        else { return DecisionContext.Facts() }
        let ceiling = country(of: phone, tenant: tenant)
        let spend = countrySpend(CountryCode.of(phone), tenant: tenant)
        return DecisionContext.Facts(
            countryOverCeiling: try ceiling.count(now: now, counts: counts, on: conn) >= ceiling.limit,
            countryOverBudget: try spend.map { try $0.count(now: now, counts: counts, on: conn) >= $0.limit } ?? false
        )
    }

    /// Whether an event is checked or counted against its destinations.
    static func touchesDestinations(_ event: SessionEvent) -> Bool {
        switch event {
        case .issued, .escalated, .verificationFailed, .verified, .erased: true
        default: false
        }
    }

    /// Checks the limits a command's events touch, then records them; throws `Rejection.rateLimited`.
    func apply(
        _ command: SessionCommand,
        events: [SessionEvent],
        after: SessionState,
        stream: StreamID,
        now: Int64,
        counts: PendingCounts,
        on conn: PGConnection
    ) throws {
        // A test session is left out: it sends nothing, so it neither counts nor is limited.
        guard let issued = after.issued, !issued.test else { return }
        let tenant = stream.tenant
        // A message's price counts when its provider took it, against the tenant's day and its country's hour.
        for case .sent(let e) in events {
            guard let price = e.price.flatMap(Money.init(decimal:)), price.micros > 0 else { continue }
            let ceilings = [tenantSpend(tenant), issued.country.flatMap { countrySpend($0, tenant: tenant) }]
            Ceiling.record(ceilings.compactMap { $0 }, now: now, counts: counts, amount: Int(price.micros))
        }
        guard events.contains(where: Self.touchesDestinations) else { return }
        // One transaction at a time per destination: each limit is a read then a write, so concurrent commands
        // for one address must not both read the count before either writes it. Keys in order: no deadlock.
        let keys = Set(issued.destinations.map { key(tenant, $0.address) }).sorted()
        if !keys.isEmpty {
            // One statement for all of them, taken in key order.
            try conn.query(
                PGQuery(
                    unsafeSQL: """
                        SELECT pg_advisory_xact_lock(hashtextextended(k, 0))
                        FROM (VALUES \(Self.keyRows(keys.count))) AS v(k, n) ORDER BY n
                        """,
                    parameters: keys.map(\.pgText)
                )
            )
        }
        let asked: Bool =
            switch command {
            case .issue, .resend: true
            default: false
            }
        for event in events {
            switch event {
            case .issued(let i):
                try startSession(Set(i.destinations.map { key(tenant, $0.address) }).sorted(), stream, now, conn)
                try checkTenant(tenant, now: now, counts: counts, on: conn)
                if let first = i.plan.steps.first {
                    try recordSend(first.channel, issued, tenant, asked, now, counts, conn)
                }
            case .escalated(let e):
                try recordSend(e.toChannel, issued, tenant, asked, now, counts, conn)
            case .verificationFailed where !keys.isEmpty:
                // Every destination's count in one statement, in key order (the keys' locks are held).
                try conn.query(
                    PGQuery(
                        unsafeSQL: """
                            INSERT INTO destination_failures (destination_key, consecutive)
                            SELECT k, 1 FROM (VALUES \(Self.keyRows(keys.count))) AS d(k, n) ORDER BY n
                            ON CONFLICT (destination_key) DO UPDATE SET consecutive = destination_failures.consecutive + 1
                            """,
                        parameters: keys.map(\.pgText)
                    )
                )
            case .verified where !keys.isEmpty:
                try conn.query(
                    PGQuery(
                        unsafeSQL: """
                            DELETE FROM destination_failures
                            WHERE destination_key IN (SELECT k FROM (VALUES \(Self.keyRows(keys.count))) AS d(k, n))
                            """,
                        parameters: keys.map(\.pgText)
                    )
                )
            case .erased:
                try conn.query("DELETE FROM destination_sessions WHERE stream_id = \(stream.text)")
            default:
                break
            }
        }
    }

    /// Records a new session's start and index row for each destination key and checks the limits a new session
    /// meets, in one statement: the reads see the rows as they were before it (a statement's own inserts are not
    /// visible to it), and a refusal rolls the inserts back with the rest of the command.
    private func startSession(_ keys: [String], _ stream: StreamID, _ now: Int64, _ conn: PGConnection) throws {
        guard !keys.isEmpty else { return }
        let found = try conn.query(
            PGQuery(
                unsafeSQL: """
                    WITH d(k, n) AS (VALUES \(Self.keyRows(keys.count, from: 4))),
                         starts AS (INSERT INTO session_starts (destination_key, at_ms) SELECT k, $1::bigint FROM d),
                         indexed AS (INSERT INTO destination_sessions (destination_key, stream_id)
                                     SELECT k, $2::text FROM d ON CONFLICT DO NOTHING)
                    SELECT coalesce((SELECT consecutive FROM destination_failures f WHERE f.destination_key = d.k), 0)
                             AS failures,
                           coalesce((SELECT string_agg(s.at_ms::text, ',' ORDER BY s.at_ms) FROM session_starts s
                                     WHERE s.destination_key = d.k AND s.at_ms > $3::bigint), '') AS starts
                    FROM d ORDER BY d.n
                    """,
                parameters: [now.pgText, stream.text.pgText, (now - Self.day).pgText] + keys.map(\.pgText)
            )
        ).rows
        for row in found {
            if try row.decode("failures", as: Int.self) >= limits.consecutiveFailuresPerDestination {
                throw Rejection.rateLimited(retryAfterSeconds: 3600)  // until an operator clears it
            }
            let starts = try row.decode("starts", as: String.self).split(separator: ",").compactMap { Int64($0) }
            try Self.refuseWhenFull(starts, limit: limits.sessionsPerDestinationDay, span: Self.day, now: now)
        }
    }

    private func checkTenant(_ tenant: String, now: Int64, counts: PendingCounts, on conn: PGConnection) throws {
        for budget in [self.tenant(tenant), tenantSpend(tenant)].compactMap({ $0 })
        where try budget.count(now: now, counts: counts, on: conn) >= budget.limit {
            throw Rejection.rateLimited(retryAfterSeconds: 3600)
        }
    }

    private func recordSend(
        _ channel: DeliveryChannel,
        _ issued: SessionEvent.Issued,
        _ tenant: String,
        _ asked: Bool,
        _ now: Int64,
        _ counts: PendingCounts,
        _ conn: PGConnection
    ) throws {
        guard let address = issued.destinations.first(where: { $0.channel == channel })?.address else { return }
        let k = key(tenant, address)
        if asked {
            // One statement records the send and reads what both limits need (the sends in the last ten minutes,
            // and this channel's latest one) as they were before it; a refusal rolls the insert back.
            let reach = max(Self.tenMinutes, limits.minGapPerChannelMs)
            let recent = try conn.query(
                """
                WITH sent AS (INSERT INTO sends (destination_key, channel, at_ms) VALUES (\(k), \(channel.rawValue), \(now)))
                SELECT at_ms, channel FROM sends WHERE destination_key = \(k) AND at_ms > \(now - reach) ORDER BY at_ms
                """
            ).rows.map {
                (at: try $0.decode("at_ms", as: Int64.self), channel: try $0.decode("channel", as: String.self))
            }
            try Self.refuseWhenFull(
                recent.filter { $0.at > now - Self.tenMinutes }.map(\.at),
                limit: limits.sendsPerDestination10m,
                span: Self.tenMinutes,
                now: now
            )
            if let last = recent.last(where: { $0.channel == channel.rawValue })?.at,
                now - last < limits.minGapPerChannelMs
            {
                throw Rejection.rateLimited(afterMs: last + limits.minGapPerChannelMs - now)
            }
        } else {
            try conn.query(
                "INSERT INTO sends (destination_key, channel, at_ms) VALUES (\(k), \(channel.rawValue), \(now))"
            )
        }
        Ceiling.record(
            channel.isTelephony ? [country(of: address, tenant: tenant), self.tenant(tenant)] : [self.tenant(tenant)],
            now: now,
            counts: counts
        )
    }

    /// The rows of a VALUES list of `count` keys as text parameters from `$from` on, each with its ordinal:
    /// `($1::text, 0), ($2::text, 1), …` (the keys are passed sorted, so `n` orders them).
    private static func keyRows(_ count: Int, from first: Int = 1) -> String {
        (0..<count).map { "($\(first + $0)::text, \($0))" }.joined(separator: ", ")
    }

    /// Refuses when `times` (oldest first, all inside the window) already hold `limit` events; the retry comes
    /// when the one that would make room leaves the window.
    private static func refuseWhenFull(_ times: [Int64], limit: Int, span: Int64, now: Int64) throws {
        guard times.count >= limit else { return }
        let oldest = times[times.count - limit]
        throw Rejection.rateLimited(afterMs: oldest + span - now)
    }

    /// Deletes up to `batch` rows of each pacing table that no window reaches any more; returns how many.
    func prune(now: Int64, batch: Int, on conn: PGConnection) throws -> Int {
        // No window is longer than a day; a tenant's buckets reach back one bucket (an hour) further.
        let dayAgo = now - Self.day
        let bucketsAgo = dayAgo - 3_600_000
        var deleted = 0
        for q: PGQuery in [
            "DELETE FROM sends WHERE ctid IN (SELECT ctid FROM sends WHERE at_ms < \(dayAgo) LIMIT \(batch))",
            "DELETE FROM session_starts WHERE ctid IN (SELECT ctid FROM session_starts WHERE at_ms < \(dayAgo) LIMIT \(batch))",
            """
            DELETE FROM pacing_counts WHERE (scope, bucket_ms, shard) IN (
                SELECT scope, bucket_ms, shard FROM pacing_counts WHERE bucket_ms < \(bucketsAgo) LIMIT \(batch))
            """,
        ] {
            deleted += try conn.query(q).affectedRows
        }
        return deleted
    }

}

extension Pacing {
    /// The sessions a tenant's destination has (by its keyed hash), oldest first.
    func sessions(of address: String, tenant: String, on conn: PGConnection) throws -> [StreamID] {
        try conn.query(
            "SELECT stream_id FROM destination_sessions WHERE destination_key = \(key(tenant, address)) ORDER BY stream_id"
        ).rows.compactMap { StreamID(text: try $0.decode("stream_id", as: String.self)) }
    }

    /// Deletes every row the pacing tables keep of a tenant's destination, so nothing keyed by its address is
    /// left to confirm a guess with, unless it has sessions besides `erased`: then it deletes nothing and returns
    /// them. It holds the destination's lock, which ISSUE takes too, so no session can start in between.
    /// Run it in a transaction.
    func forget(
        _ address: String,
        tenant: String,
        except erased: Set<StreamID>,
        on conn: PGConnection
    ) throws
        -> [StreamID]
    {
        let k = key(tenant, address)
        try conn.query("SELECT pg_advisory_xact_lock(hashtextextended(\(k), 0))")
        let left = try sessions(of: address, tenant: tenant, on: conn).filter { !erased.contains($0) }
        guard left.isEmpty else { return left }
        for table in ["sends", "session_starts", "destination_failures", "destination_sessions"] {
            try conn.query(PGQuery(unsafeSQL: "DELETE FROM \(table) WHERE destination_key = $1", parameters: [k]))
        }
        return []
    }
}

/// Operator actions on the pacing tables.
public enum PacingAdmin {
    /// Lifts the block on a tenant's destination after consecutive failed verifications: deletes its count,
    /// keyed by the HMAC under `secrets` (the same key otpd uses). Returns the count it had, or nil when none
    /// was recorded.
    public static func clearFailures(
        address: String,
        tenant: String,
        secrets: Secrets,
        on conn: PGConnection
    ) throws -> Int? {
        let key = Pacing(limits: Limits(), secrets: secrets).key(tenant, address)
        return try conn.query("DELETE FROM destination_failures WHERE destination_key = \(key) RETURNING consecutive")
            .rows.first?.decode("consecutive", as: Int.self)
    }
}

/// The ceiling counters a transaction's commands have counted and not yet written: one command's own while it
/// runs, and those of the commands before it that were kept. Written in one statement just before COMMIT.
///
/// Written at the end and in key order, every transaction takes the counters' row locks in the same order, for
/// the shortest time: shared transactions of many commands never deadlock on a counter, however their commands
/// interleave. Used on one connection's thread only.
final class PendingCounts {
    private struct Key: Hashable {
        var scope: String
        var bucketMs: Int64
    }

    private var kept: [Key: Int] = [:]
    private var current: [Key: Int] = [:]

    /// Runs one command in a transaction of its own, its counts written just before COMMIT.
    static func transaction<T>(on conn: PGConnection, _ body: (PendingCounts) throws -> T) throws -> T {
        try conn.transaction { conn in
            let counts = PendingCounts()
            let value = try body(counts)
            counts.keep()
            try counts.write(on: conn)
            return value
        }
    }

    /// Counts `amount` more (one send, or a price in millionths) in `scope`'s bucket, for the command running now.
    func add(scope: String, bucketMs: Int64, amount: Int = 1) {
        current[Key(scope: scope, bucketMs: bucketMs), default: 0] += amount
    }

    /// What this transaction has counted in `scope` from bucket `from` on.
    func count(scope: String, from: Int64) -> Int {
        var n = 0
        for (key, value) in kept where key.scope == scope && key.bucketMs >= from { n += value }
        for (key, value) in current where key.scope == scope && key.bucketMs >= from { n += value }
        return n
    }

    /// The command running now is kept: its counts will be written.
    func keep() {
        kept.merge(current, uniquingKeysWith: +)
        current.removeAll(keepingCapacity: true)
    }

    /// The command running now was rolled back: its counts go with it.
    func drop() {
        current.removeAll(keepingCapacity: true)
    }

    /// Writes the kept counts in one statement, in key order, into one shard of each bucket (chosen at random
    /// per transaction, so concurrent instances' transactions rarely wait on the same row).
    func write(on conn: PGConnection) throws {
        guard !kept.isEmpty else { return }
        var rows = JSONRows()
        for (key, n) in kept {
            rows.row { r in
                r.field("scope", key.scope)
                r.field("bucket_ms", key.bucketMs)
                r.field("n", n)
            }
        }
        try conn.query(
            """
            INSERT INTO pacing_counts (scope, bucket_ms, shard, n)
            SELECT scope, bucket_ms, \(Int.random(in: 0..<Pacing.Ceiling.shards))::smallint, n
            FROM json_to_recordset(\(rows.text)::json) AS r(scope text, bucket_ms bigint, n bigint)
            ORDER BY scope, bucket_ms
            ON CONFLICT (scope, bucket_ms, shard) DO UPDATE SET n = pacing_counts.n + excluded.n
            """
        )
        kept.removeAll()
    }
}
