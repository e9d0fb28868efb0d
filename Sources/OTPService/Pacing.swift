import OTPDomain
import Postgres

/// Pacing and abuse limits, checked and recorded inside a command's transaction.
///
/// Destinations are counted by a keyed hash of their address, so the limits keep no personal data. Sends are
/// counted when a step starts. Limits refuse only what a caller asked for (ISSUE, RESEND); a step the
/// scheduler starts after a timeout or failure is recorded but never refused, so fallback is never blocked
/// half-way.
struct Pacing: Sendable {
    let limits: Limits
    let secrets: Secrets

    static let tenMinutes: Int64 = 600_000
    static let day: Int64 = 86_400_000
    static let minute: Int64 = 60_000

    func key(_ address: String) -> String { secrets.fingerprint(["destination", address]) }

    /// The telephony channels to skip at ISSUE because the number's country is over its sends-per-minute ceiling.
    func pumpingChannels(_ destinations: [Destination], now: Int64, on conn: PGConnection) throws -> Set<Channel> {
        guard let phone = destinations.first(where: { $0.channel.isTelephony })?.address else { return [] }
        let country = CountryCode.of(phone)
        let count = try conn.query("""
            SELECT count(*) FROM sends WHERE country = \(country) AND at_ms > \(now - Self.minute)
            """).rows[0].decode(0, as: Int.self)
        guard count >= limits.prefixSendsPerMinute else { return [] }
        guard destinations.contains(where: { !$0.channel.isTelephony }) else {
            throw Rejection.rateLimited(retryAfterSeconds: 60)
        }
        return [.sms, .voice]
    }

    /// Checks the limits a command's events touch, then records them; throws `Rejection.rateLimited`.
    func apply(_ command: SessionCommand, events: [SessionEvent], after: SessionState, tenant: String, now: Int64,
               on conn: PGConnection) throws {
        guard let issued = after.issued else { return }
        let asked: Bool = switch command {
        case .issue, .resend: true
        default: false
        }
        for event in events {
            switch event {
            case .issued(let i):
                for d in i.destinations { try checkNewSession(key(d.address), now: now, on: conn) }
                try checkTenant(tenant, now: now, on: conn)
                for d in i.destinations {
                    try conn.query("INSERT INTO session_starts (destination_key, at_ms) VALUES (\(key(d.address)), \(now))")
                }
                if let first = i.plan.steps.first { try recordSend(first.channel, issued, tenant, asked, now, conn) }
            case .escalated(let e):
                try recordSend(e.toChannel, issued, tenant, asked, now, conn)
            case .verificationFailed:
                for d in issued.destinations {
                    try conn.query("""
                        INSERT INTO destination_failures (destination_key, consecutive) VALUES (\(key(d.address)), 1)
                        ON CONFLICT (destination_key) DO UPDATE SET consecutive = destination_failures.consecutive + 1
                        """)
                }
            case .verified:
                for d in issued.destinations {
                    try conn.query("DELETE FROM destination_failures WHERE destination_key = \(key(d.address))")
                }
            default:
                break
            }
        }
    }

    private func checkNewSession(_ key: String, now: Int64, on conn: PGConnection) throws {
        let failures = try conn.query("SELECT consecutive FROM destination_failures WHERE destination_key = \(key)")
            .rows.first?.decode(0, as: Int.self) ?? 0
        if failures >= limits.consecutiveFailuresPerDestination {
            throw Rejection.rateLimited(retryAfterSeconds: 3600)  // until an operator clears it
        }
        try window(limit: limits.sessionsPerDestinationDay, span: Self.day, now: now, on: conn, """
            SELECT at_ms FROM session_starts WHERE destination_key = \(key) AND at_ms > \(now - Self.day)
            ORDER BY at_ms
            """)
    }

    private func checkTenant(_ tenant: String, now: Int64, on conn: PGConnection) throws {
        let count = try conn.query("SELECT count(*) FROM sends WHERE tenant = \(tenant) AND at_ms > \(now - Self.day)")
            .rows[0].decode(0, as: Int.self)
        if count >= limits.tenantSendsPerDay { throw Rejection.rateLimited(retryAfterSeconds: 3600) }
    }

    private func recordSend(_ channel: Channel, _ issued: SessionEvent.Issued, _ tenant: String, _ asked: Bool,
                            _ now: Int64, _ conn: PGConnection) throws {
        guard let address = issued.destinations.first(where: { $0.channel == channel })?.address else { return }
        let k = key(address)
        if asked {
            try window(limit: limits.sendsPerDestination10m, span: Self.tenMinutes, now: now, on: conn, """
                SELECT at_ms FROM sends WHERE destination_key = \(k) AND at_ms > \(now - Self.tenMinutes) ORDER BY at_ms
                """)
            if let last = try conn.query("""
                SELECT max(at_ms) AS last FROM sends WHERE destination_key = \(k) AND channel = \(channel.rawValue)
                """).rows.first?.decodeIfPresent("last", as: Int64.self), now - last < limits.minGapPerChannelMs {
                throw Rejection.rateLimited(retryAfterSeconds: Self.seconds(last + limits.minGapPerChannelMs - now))
            }
        }
        let country: String? = channel.isTelephony ? CountryCode.of(address) : nil
        try conn.query("""
            INSERT INTO sends (destination_key, channel, country, tenant, at_ms)
            VALUES (\(k), \(channel.rawValue), \(country), \(tenant), \(now))
            """)
    }

    /// Refuses when `limit` rows are already in the window; retry when the oldest leaves it.
    private func window(limit: Int, span: Int64, now: Int64, on conn: PGConnection, _ query: PGQuery) throws {
        let times = try conn.query(query).rows.map { try $0.decode(0, as: Int64.self) }
        guard times.count >= limit else { return }
        let oldest = times[times.count - limit]
        throw Rejection.rateLimited(retryAfterSeconds: Self.seconds(oldest + span - now))
    }

    static func seconds(_ ms: Int64) -> Int { Int(max(1, (ms + 999) / 1000)) }
}
