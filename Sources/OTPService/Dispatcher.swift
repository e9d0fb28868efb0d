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
    /// How the dispatcher claims and retries.
    public struct Settings: Sendable {
        /// How long to wait for work when nothing is due and no local append signals.
        public var pollInterval: Duration = .milliseconds(250)
        /// How long a claimed row stays this instance's.
        public var leaseSeconds = 30
        /// Rows claimed at once.
        public var batchSize = 32
        /// Creates the defaults.
        public init() {}
    }

    let pool: PGPool
    let sessions: SessionService
    let outbox: Outbox
    let codes: any CodeBook
    let drivers: [DeliveryChannel: any ChannelDriver]
    let retries: [DeliveryChannel: Int]
    let renderer: MessageRenderer
    let settings: Settings
    let logger: Logger

    /// How long a message of an unreadable session waits before it is tried again (an hour).
    static let parkSeconds = 3_600

    /// Creates a dispatcher; `retries` is each channel's number of tries for a transient failure (default 3).
    public init(
        pool: PGPool,
        sessions: SessionService,
        outbox: Outbox,
        codes: any CodeBook,
        drivers: [DeliveryChannel: any ChannelDriver],
        retries: [DeliveryChannel: Int],
        renderer: MessageRenderer,
        settings: Settings = Settings(),
        logger: Logger
    ) {
        self.pool = pool
        self.sessions = sessions
        self.outbox = outbox
        self.codes = codes
        self.drivers = drivers
        self.retries = retries
        self.renderer = renderer
        self.settings = settings
        self.logger = logger
    }

    /// Runs until graceful shutdown, finishing the sends in flight.
    public func run() async throws {
        let (outbox, limit, lease) = (self.outbox, settings.batchSize, settings.leaseSeconds)
        await runClaimLoop(
            "dispatcher",
            logger: logger,
            signal: outbox.signal,
            claim: {
                let claims = try await pool.withConnection { conn in
                    try outbox.claim(limit: limit, leaseSeconds: lease, on: conn)
                }
                return (claims, settings.pollInterval)
            },
            work: { await self.deliver($0) }
        )
    }

    func deliver(_ c: Outbox.Claim) async {
        let outbox = self.outbox
        let complete: @Sendable (PGConnection, SessionState) throws -> Void = { conn, _ in
            try outbox.complete(c, on: conn)
        }
        do {
            let loaded = try await sessions.load(c.stream)
            let state = loaded.state
            guard state.awaitsHandOff(token: c.token), let issued = state.issued else {
                // Cancelled, verified, expired or superseded since it was queued: send nothing.
                try await pool.withConnection { conn in try outbox.complete(c, on: conn) }
                return
            }
            func record(_ command: SessionCommand) async throws {
                _ = try await sessions.execute(command, on: c.stream, loaded: loaded, also: complete)
            }
            guard let to = issued.destinations.first(where: { $0.channel == c.channel })?.address else {
                let reason = "no destination for \(c.channel.rawValue)"
                try await record(.recordProviderFailure(token: c.token, reason: reason, permanent: true))
                return
            }
            let code = codes.code(seed: issued.codeSeed, digits: issued.digits, stream: c.stream)
            let message = renderer.render(channel: c.channel, code: code, app: issued.app, locale: issued.locale)
            let messageId = Outbox.messageId(stream: c.stream, token: c.token)
            let driver = drivers[c.channel] ?? LogDriver()
            let result = await driver.send(
                OutboundMessage(
                    messageId: messageId,
                    tenant: c.stream.tenant,
                    session: c.stream.session,
                    to: to,
                    message: message
                )
            )
            switch result {
            case .accepted(let ref):
                let handOff = SessionCommand.recordHandOff(
                    token: c.token,
                    messageId: messageId,
                    provider: driver.name,
                    providerRef: ref
                )
                try await record(handOff)
            case .permanentFailure(let reason):
                try await record(.recordProviderFailure(token: c.token, reason: reason, permanent: true))
            case .transientFailure(let reason) where c.attempts >= retries[c.channel, default: 3]:
                try await record(.recordProviderFailure(token: c.token, reason: reason, permanent: false))
            case .transientFailure:
                // Exponential backoff with jitter: 200 ms, 400 ms, 800 ms ... (± 50 %).
                let base = 200 << min(c.attempts - 1, 8)
                let delay = base / 2 + Int.random(in: 0...base)
                try await pool.withConnection { conn in try outbox.retry(c, afterMs: delay, on: conn) }
            }
        } catch let u as UnreadableSession {
            // Retrying cannot help until someone repairs or removes the session: park the message, say so once.
            logger.error(
                "dispatcher: session history unreadable; its message is parked for an hour (otpctl verify shows where)",
                metadata: ["stream": "\(u.stream)", "version": "\(u.version)", "token": "\(c.token)"]
            )
            _ = try? await pool.withConnection { conn in try outbox.park(c, seconds: Self.parkSeconds, on: conn) }
        } catch {
            logger.warning(
                "dispatcher: send not recorded; it will be retried after the lease",
                metadata: ["stream": "\(c.stream)", "token": "\(c.token)", "error": "\(error)"]
            )
        }
    }
}
