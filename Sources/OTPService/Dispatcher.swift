import Crypto
import EventStore
import Logging
import OTPDomain
import Postgres
import ServiceLifecycle

/// Follows the outbox: claims queued messages, renders them, hands them to the channel's driver, and records
/// `sent` or `delivery_failed`.
///
/// Provider calls happen outside any transaction. A claim is a lease: if this process dies mid-send, another
/// instance takes the row after the lease and sends again with the same message id (the idempotency key).
public final class Dispatcher: Service {
    let service: SessionService
    let drivers: [Channel: any ChannelDriver]
    let settings: [Channel: ChannelSettings]
    let renderer: MessageRenderer
    let logger: Logger
    let pollInterval: Duration
    let leaseSeconds: Int
    let batchSize = 32

    /// Creates a dispatcher.
    public init(
        service: SessionService,
        drivers: [Channel: any ChannelDriver],
        settings: [Channel: ChannelSettings],
        renderer: MessageRenderer,
        logger: Logger,
        pollInterval: Duration = .milliseconds(250),
        leaseSeconds: Int = 30
    ) {
        self.service = service
        self.drivers = drivers
        self.settings = settings
        self.renderer = renderer
        self.logger = logger
        self.pollInterval = pollInterval
        self.leaseSeconds = leaseSeconds
    }

    struct Claim: Sendable {
        var stream: String
        var token: Int
        var channel: Channel
        var attempts: Int
    }

    /// Runs until graceful shutdown, finishing the sends in flight.
    public func run() async throws {
        await runClaimLoop(
            "dispatcher",
            logger: logger,
            signal: service.outboxSignal,
            claim: { (try await claim(), pollInterval) },
            work: { await self.deliver($0) }
        )
    }

    /// Claims due messages with a lease (`FOR UPDATE SKIP LOCKED`, so instances never take the same row).
    func claim() async throws -> [Claim] {
        let lease = leaseSeconds
        let limit = batchSize
        return try await service.pool.withConnection { conn in
            let rows = try conn.query(
                """
                UPDATE outbox SET leased_until = now() + make_interval(secs => \(lease)), attempts = attempts + 1
                WHERE (stream_id, token) IN (
                    SELECT stream_id, token FROM outbox
                    WHERE available_at <= now() AND (leased_until IS NULL OR leased_until < now())
                    ORDER BY available_at LIMIT \(limit)
                    FOR UPDATE SKIP LOCKED)
                RETURNING stream_id, token, channel, attempts
                """
            ).rows
            return try rows.compactMap { row in
                guard let channel = Channel(rawValue: try row.decode("channel", as: String.self)) else { return nil }
                return Claim(
                    stream: try row.decode("stream_id"),
                    token: try row.decode("token"),
                    channel: channel,
                    attempts: try row.decode("attempts")
                )
            }
        }
    }

    func deliver(_ c: Claim) async {
        guard let (tenant, session) = SessionService.split(c.stream) else { return }
        let removeRow: @Sendable (PGConnection, SessionState) throws -> Void = { conn, _ in
            try conn.query("DELETE FROM outbox WHERE stream_id = \(c.stream) AND token = \(c.token)")
        }
        do {
            let loaded = try await service.load(tenant: tenant, session: session)
            let state = loaded.state
            guard state.awaitsHandOff(token: c.token), let issued = state.issued else {
                // Cancelled, verified, expired or superseded since it was queued: send nothing.
                try await service.pool.withConnection { conn in try removeRow(conn, state) }
                return
            }
            guard let to = issued.destinations.first(where: { $0.channel == c.channel })?.address else {
                _ = try await service.execute(
                    .recordProviderFailure(
                        token: c.token,
                        reason: "no destination for \(c.channel.rawValue)",
                        permanent: true
                    ),
                    tenant: tenant,
                    session: session,
                    loaded: loaded,
                    also: removeRow
                )
                return
            }
            let code = service.codes.code(seed: issued.codeSeed, digits: issued.digits, stream: c.stream)
            let message = renderer.render(channel: c.channel, code: code, app: issued.app, locale: issued.locale)
            let messageId = Self.messageId(stream: c.stream, token: c.token)
            let driver = drivers[c.channel] ?? LogDriver()
            let result = await driver.send(
                OutboundMessage(
                    messageId: messageId,
                    tenant: tenant,
                    session: session,
                    to: to,
                    message: message
                )
            )
            switch result {
            case .accepted(let ref):
                _ = try await service.execute(
                    .recordHandOff(token: c.token, messageId: messageId, provider: driver.name, providerRef: ref),
                    tenant: tenant,
                    session: session,
                    loaded: loaded,
                    also: removeRow
                )
            case .permanentFailure(let reason):
                _ = try await service.execute(
                    .recordProviderFailure(token: c.token, reason: reason, permanent: true),
                    tenant: tenant,
                    session: session,
                    loaded: loaded,
                    also: removeRow
                )
            case .transientFailure(let reason):
                let retries = settings[c.channel]?.retries ?? 3
                if c.attempts >= retries {
                    _ = try await service.execute(
                        .recordProviderFailure(token: c.token, reason: reason, permanent: false),
                        tenant: tenant,
                        session: session,
                        loaded: loaded,
                        also: removeRow
                    )
                } else {
                    // Exponential backoff with jitter: 200 ms, 400 ms, 800 ms ... (± 50 %).
                    let base = 200 << min(c.attempts - 1, 8)
                    let delay = base / 2 + Int.random(in: 0...base)
                    try await service.pool.withConnection { conn in
                        try conn.query(
                            """
                            UPDATE outbox SET leased_until = NULL,
                                available_at = now() + make_interval(secs => \(Double(delay) / 1000))
                            WHERE stream_id = \(c.stream) AND token = \(c.token)
                            """
                        )
                    }
                }
            }
        } catch let u as UnreadableSession {
            // Retrying cannot help until someone repairs or removes the session: park the message, say so once.
            logger.error(
                "dispatcher: session history unreadable; its message is parked for an hour (otpctl verify shows where)",
                metadata: ["stream": "\(u.stream)", "version": "\(u.version)", "token": "\(c.token)"]
            )
            _ = try? await service.pool.withConnection { conn in
                try conn.query(
                    """
                    UPDATE outbox SET leased_until = now() + interval '1 hour'
                    WHERE stream_id = \(c.stream) AND token = \(c.token)
                    """
                )
            }
        } catch {
            logger.warning(
                "dispatcher: send not recorded; it will be retried after the lease",
                metadata: ["stream": "\(c.stream)", "token": "\(c.token)", "error": "\(error)"]
            )
        }
    }

    /// A stable, opaque id for the message of the step started at `token`.
    static func messageId(stream: String, token: Int) -> String {
        let digest = SHA256.hash(data: Array("\(stream)#\(token)".utf8))
        return "m_" + Hex.encode(Array(digest.prefix(12)))
    }
}
