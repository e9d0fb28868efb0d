import Logging
import OTPDomain
import Postgres
import ServiceLifecycle
import Synchronization

/// How fast each route (channel × country calling code) delivered over the last hour, kept in memory for
/// adaptive step timeouts: the p95 of send → delivery receipt from the projector's latency histograms
/// (`projections.delivery_latency`), refreshed every `interval` by one query, so choosing a wait never queries.
///
/// The histograms are hourly, so "the last hour" is the buckets of the current hour and the one before it (60 to
/// 120 minutes of deliveries), and the p95 is a bucket's upper bound (buckets are about 19 % apart).
public final class RouteLatencies: Service, Sendable {
    private let figures = Mutex<[String: RouteLatency]>([:])
    let pool: PGPool
    let interval: Duration
    let logger: Logger

    /// Creates the book; it is empty (every adaptive step waits its `max`) until the first refresh.
    public init(pool: PGPool, interval: Duration = .seconds(10), logger: Logger) {
        self.pool = pool
        self.interval = interval
        self.logger = logger
    }

    /// The latest figure for a channel to a country (`+44`, or `none` without a phone number).
    public func latency(_ channel: DeliveryChannel, _ country: String) -> RouteLatency? {
        figures.withLock { $0["\(channel.rawValue) \(country)"] }
    }

    /// Runs until graceful shutdown.
    public func run() async throws {
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            do { try await refresh() } catch {
                logger.warning("route latencies: cannot read the histograms", metadata: ["error": "\(error)"])
            }
            let pause = interval
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: pause) }
        }
    }

    /// Reads the histograms once.
    public func refresh() async throws {
        let rows = try await pool.withConnection { conn in
            try conn.query(
                """
                SELECT channel, country, le_ms, sum(count)::bigint AS n FROM projections.delivery_latency
                WHERE kind = 'delivery' AND hour >= date_trunc('hour', now() - interval '1 hour')
                GROUP BY channel, country, le_ms ORDER BY channel, country, le_ms
                """
            ).rows.map { row in
                (
                    key: "\(try row.decode("channel", as: String.self)) \(try row.decode("country", as: String.self))",
                    le: try row.decode("le_ms", as: Int64.self), n: try row.decode("n", as: Int64.self)
                )
            }
        }
        var buckets: [String: [(le: Int64, n: Int64)]] = [:]
        for r in rows { buckets[r.key, default: []].append((r.le, r.n)) }
        let next = buckets.mapValues(Self.p95)
        figures.withLock { $0 = next }
    }

    /// The p95 of a histogram given as (upper bound, count) in ascending bounds.
    static func p95(_ buckets: [(le: Int64, n: Int64)]) -> RouteLatency {
        let total = buckets.reduce(0) { $0 + $1.n }
        let rank = (total * 95 + 99) / 100
        var seen: Int64 = 0
        for b in buckets {
            seen += b.n
            if seen >= rank { return RouteLatency(p95Ms: b.le, samples: Int(total)) }
        }
        return RouteLatency(p95Ms: buckets.last?.le ?? 0, samples: Int(total))
    }
}
