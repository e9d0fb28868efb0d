import EventStore
import Logging
import OTPDomain
import Postgres
import ServiceLifecycle

/// Follows the outbox: claims queued messages, renders them, hands them to the channel's driver, and records
/// `sent` or `delivery_failed`.
///
/// Provider calls happen outside any transaction. Each channel has a lane of its own, so a provider that hangs
/// holds up only its own channel's messages. A claim is a lease with a fencing token: a holder whose lease ran
/// out cannot touch the row any more. A message is sent at most once per step: the row is marked in flight
/// before the call, and a row found in flight (its holder died, or could not record the outcome) is not sent
/// again but fails over to the next step. When recording a hand-off fails, the dispatcher retries the record,
/// never the send.
public final class Dispatcher: Service {
    /// How the dispatcher claims and retries.
    public struct Settings: Sendable {
        /// How long to wait for work when nothing is due and no local append signals.
        public var pollInterval: Duration = .milliseconds(250)
        /// How long a claimed row stays this instance's, at the least (at least three times the slowest channel's
        /// provider timeout, so a call in flight never outlives its lease).
        public var leaseSeconds = 30
        /// Messages in flight at once, per channel.
        public var perChannel = 16
        /// Tries of recording an outcome before the row is left to fail over after its lease.
        public var recordTries = 5
        /// Creates the defaults.
        public init() {}
    }

    let pool: PGPool
    let sessions: SessionService
    let outbox: Outbox
    let codes: any CodeBook
    let channels: [DeliveryChannel: ChannelLineup]
    /// The listed providers' circuits (the `providers = [...]` form's).
    public let breakers: CircuitBreakers
    let renderer: MessageRenderer
    let prices: Prices
    let messages: Messages
    let secrets: Secrets
    let publicURL: @Sendable () -> String?
    let settings: Settings
    let leaseSeconds: Int
    let logger: Logger
    let telemetry: Telemetry

    /// How long a message of an unreadable session waits before it is tried again (an hour).
    static let parkSeconds = 3_600

    /// The reason recorded for a message whose earlier attempt's outcome is unknown.
    static let unknownOutcome =
        "an earlier attempt was handed to the provider and its outcome is unknown; not sent again"

    /// Creates a dispatcher; `channels` holds each channel's providers in order, with their timeouts and tries,
    /// and their circuit breaker's settings (the `log` driver where a channel has none);
    /// `secrets` make a message's id and tracking token, and `publicURL` (the HTTP side's, if any) roots
    /// the links given to drivers; `telemetry` times and counts the provider calls.
    public init(
        pool: PGPool,
        sessions: SessionService,
        outbox: Outbox,
        codes: any CodeBook,
        channels: [DeliveryChannel: ChannelLineup],
        renderer: MessageRenderer,
        prices: Prices = Prices(),
        messages: Messages = Messages(),
        secrets: Secrets,
        publicURL: @escaping @Sendable () -> String? = { nil },
        settings: Settings = Settings(),
        logger: Logger,
        telemetry: Telemetry = Telemetry()
    ) {
        self.pool = pool
        self.sessions = sessions
        self.outbox = outbox
        self.codes = codes
        self.channels = channels
        self.renderer = renderer
        self.prices = prices
        self.messages = messages
        self.secrets = secrets
        self.publicURL = publicURL
        self.settings = settings
        let slowest = channels.values.flatMap { $0.providers.map(\.call.timeoutMs) }.max() ?? 0
        // Three calls' time: a send that first renews its access token (FCM) makes two, and the record follows.
        self.leaseSeconds = max(settings.leaseSeconds, Int((3 * slowest + 999) / 1000))
        self.logger = logger
        self.telemetry = telemetry
        var breaking: [String: BreakerSettings] = [:]
        for channel in DeliveryChannel.allCases {
            let lineup = channels[channel] ?? ChannelLineup(LogDriver())
            for driver in Set(lineup.providers.map(\.driver.name)) { telemetry.prepareChannel(channel, driver: driver) }
            if let breaker = lineup.breaker {
                for p in lineup.providers { breaking[p.name] = breaker }
            }
        }
        breakers = CircuitBreakers(
            breaking,
            changed: { provider, state in
                telemetry.setProviderState(provider, state)
                switch state {
                case .open:
                    logger.warning(
                        "dispatcher: provider circuit open; every session skips it until one message probes it",
                        metadata: ["provider": "\(provider)"]
                    )
                case .closed: logger.info("dispatcher: provider circuit closed", metadata: ["provider": "\(provider)"])
                case .probing: logger.info("dispatcher: provider probed", metadata: ["provider": "\(provider)"])
                }
            }
        )
        // Every listed provider's gauge shows from the start: closed.
        for name in breaking.keys { telemetry.setProviderState(name, .closed) }
    }

    /// Runs until graceful shutdown, finishing the sends in flight.
    public func run() async throws {
        let (outbox, lease, pool, telemetry) = (self.outbox, leaseSeconds, self.pool, self.telemetry)
        await runClaimLoop(
            "dispatcher",
            logger: logger,
            signal: outbox.signal,
            capacity: Dictionary(uniqueKeysWithValues: DeliveryChannel.allCases.map { ($0, settings.perChannel) }),
            lane: { $0.channel },
            claim: { free in
                // Every lane with room, in one statement: it succeeds or claims nothing, so no lane's rows are
                // leased and then dropped (one claim per wake-up, not one per channel).
                let claims: [Outbox.Claim]
                do {
                    claims = try await pool.withConnection { conn in
                        try outbox.claim(free, leaseSeconds: lease, on: conn)
                    }
                } catch {
                    telemetry.databaseError()
                    throw error
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
            guard state.awaitsHandOff(token: c.token, now: loaded.now), let issued = state.issued else {
                // Cancelled, verified, expired or superseded since it was queued: send nothing.
                try await pool.withConnection { conn in try outbox.complete(c, on: conn) }
                return
            }
            if c.wasInFlight {
                // The message may have gone out: sending it again would blast the same channel. Fail over.
                let failure = SessionCommand.recordProviderFailure(
                    token: c.token,
                    reason: Self.unknownOutcome,
                    permanent: false
                )
                try await record(failure, c, loaded: loaded, also: complete)
                return
            }
            guard let to = issued.destinations.first(where: { $0.channel == c.channel })?.address else {
                let reason = "no destination for \(c.channel.rawValue)"
                let failure = SessionCommand.recordProviderFailure(token: c.token, reason: reason, permanent: true)
                try await record(failure, c, loaded: loaded, also: complete)
                return
            }
            let lease = leaseSeconds
            let handedOn = state.failedProviders(token: c.token)
            let messageId = secrets.messageId(stream: c.stream, token: c.token, handedOn: handedOn.count)
            let token = secrets.trackingToken(messageId: messageId)
            let messages = self.messages
            // The message's row goes in with the mark, so a receipt that beats the record of `sent` finds it.
            guard
                try await pool.withConnection({ conn in
                    try conn.transaction { conn in
                        guard try outbox.beginSend(c, leaseSeconds: lease, on: conn) else { return false }
                        try messages.register(
                            messageId: messageId,
                            stream: c.stream,
                            token: c.token,
                            channel: c.channel,
                            tracking: token,
                            on: conn
                        )
                        return true
                    }
                })
            else {
                return  // withdrawn meanwhile (cancelled, verified, erased), or the lease ran out: send nothing
            }
            if issued.test {
                // A test destination: nothing is rendered or sent, and the provider is recorded as `test`.
                let handOff = SessionCommand.recordHandOff(
                    token: c.token,
                    messageId: messageId,
                    provider: "test",
                    providerRef: nil,
                    locale: issued.locale
                )
                try await record(handOff, c, loaded: loaded, also: complete)
                return
            }
            // The first provider left whose circuit lets the message through (one past its cooldown takes it as
            // its probe); none: the step fails now rather than waiting out its timeout.
            let lineup = channels[c.channel] ?? ChannelLineup(LogDriver())
            let untried = lineup.providers.filter { !handedOn.contains($0.name) }
            let circuitKey = "\(c.stream.text)#\(c.token)"
            let breaking = lineup.breaker != nil
            guard let provider = untried.first(where: { !breaking || breakers.admit($0.name, key: circuitKey) })
            else {
                let names = untried.map(\.name).joined(separator: ", ")
                let reason =
                    untried.isEmpty
                    ? "every \(c.channel.rawValue) provider failed this step"
                    : "every \(c.channel.rawValue) provider left is skipped while its circuit is open: \(names)"
                let failure = SessionCommand.recordProviderFailure(token: c.token, reason: reason, permanent: true)
                try await record(failure, c, loaded: loaded, also: complete)
                return
            }
            let code = codes.code(seed: issued.codeSeed, digits: issued.digits, stream: c.stream)
            let message = renderer.render(
                channel: c.channel,
                code: code,
                app: issued.app,
                locale: issued.locale,
                ttlSeconds: Int((issued.ttlMs + 999) / 1000)
            )
            let driver = provider.driver
            let callStarted = ContinuousClock.now
            let result = await driver.send(
                OutboundMessage(
                    messageId: messageId,
                    tenant: c.stream.tenant,
                    session: c.stream.session,
                    to: to,
                    message: message,
                    code: code,
                    expiresAtMs: state.expiresAt,
                    links: publicURL().map { MessageLinks(publicURL: $0, tracking: token) }
                )
            )
            let callTook = ContinuousClock.now - callStarted
            func meter(_ outcome: Telemetry.MessageOutcome) {
                telemetry.providerCall(channel: c.channel, driver: driver.name, duration: callTook, outcome: outcome)
                if breaking && outcome != .retried {
                    breakers.record(provider.name, key: circuitKey, success: outcome == .sent)
                }
            }
            // A provider that failed the hand-off passes the step to the next one whose circuit would take it:
            // same code, a new message id; without one the session escalates.
            func fail(_ reason: String, permanent: Bool, handOn: Bool) async throws {
                let next =
                    handOn
                    ? untried.first { $0.name != provider.name && breakers.wouldAdmit($0.name) }
                    : nil
                let failure = SessionCommand.recordProviderFailure(
                    token: c.token,
                    reason: reason,
                    permanent: permanent,
                    provider: provider.name,
                    messageId: messageId,
                    nextProvider: next?.name
                )
                guard next != nil else {
                    try await record(failure, c, loaded: loaded, also: complete)
                    return
                }
                try await record(failure, c, loaded: loaded) { conn, _ in try outbox.handOn(c, on: conn) }
                outbox.signal.signal()
            }
            switch result {
            case .accepted(let ref, let reported):
                meter(.sent)
                // What it cost: the provider's figure when it gave one, else the configured price.
                let price =
                    reported.map { MessagePrice(amount: $0, source: "provider") }
                    ?? prices.price(c.channel, country: issued.country).map {
                        MessagePrice(amount: $0, source: "prices")
                    }
                if let ref {
                    // At once, on its own: a provider's receipt naming this reference (Twilio's sid) can come
                    // before `sent` is recorded, and must find its message then. A failure here leaves the
                    // receipt to find nothing; the hand-off is still recorded below.
                    _ = try? await pool.withConnection { conn in
                        try messages.attach(providerRef: ref, to: messageId, on: conn)
                    }
                }
                let handOff = SessionCommand.recordHandOff(
                    token: c.token,
                    messageId: messageId,
                    provider: provider.name,
                    providerRef: ref,
                    locale: message.locale,
                    price: price
                )
                try await record(handOff, c, loaded: loaded, also: complete)
            case .permanentFailure(let reason):
                meter(.failed)
                try await fail(reason, permanent: true, handOn: true)
            case .unknownOutcome(let reason):
                meter(.failed)
                // The provider may have taken it (an answer cut off after the request went out): sending again,
                // even through another provider, could reach the person twice, so the step fails over to the
                // next channel, as for a row found in flight.
                try await fail(
                    "\(reason); the provider may have accepted it, not sent again",
                    permanent: false,
                    handOn: false
                )
            case .transientFailure(let reason, let mayHaveBeenSent):
                // Exponential backoff with jitter: 200 ms, 400 ms, 800 ms ... (± 50 %), while tries are left and
                // the step's time lasts; then the step fails at once instead of waiting out its timeout.
                let base = 200 << min(c.attempts - 1, 8)
                let delay = base / 2 + Int.random(in: 0...base)
                let timeIsUp = Self.stepTimeIsUp(c, loaded: loaded, issued: issued, afterMs: delay)
                if c.attempts >= provider.call.retries || timeIsUp {
                    meter(.failed)
                    // Out of tries, the next provider takes the step; out of the step's time, the next channel;
                    // and where a try may have reached this provider, the next channel too: another provider
                    // could deliver the same code a second time.
                    let maybeSent = c.maybeSent || mayHaveBeenSent
                    let reason = maybeSent ? "\(reason); a try may have reached the provider, not handed on" : reason
                    try await fail(reason, permanent: false, handOn: !timeIsUp && !maybeSent)
                } else {
                    meter(.retried)
                    try await pool.withConnection { conn in
                        try outbox.retry(c, afterMs: delay, maybeSent: mayHaveBeenSent, on: conn)
                    }
                }
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
                "dispatcher: outcome not recorded; after the lease the step fails over (the message is not sent again)",
                metadata: ["stream": "\(c.stream)", "token": "\(c.token)", "error": "\(error)"]
            )
        }
    }

    /// Whether the step's time would be up by the next try, `afterMs` from now: its timeout, counted from the
    /// event that started it (its message has not gone out, so its wait has not begun); a last step without a
    /// timeout has no such bound.
    static func stepTimeIsUp(
        _ c: Outbox.Claim,
        loaded: LoadedSession,
        issued: SessionEvent.Issued,
        afterMs: Int
    ) -> Bool {
        guard let started = loaded.state.started.first(where: { $0.version == c.token }),
            let startedAt = loaded.records.first(where: { $0.version == c.token })?.at,
            started.step >= 1, started.step <= issued.plan.steps.count
        else { return false }
        let isLast = started.step == issued.plan.steps.count
        guard
            let timeout = issued.plan.steps[started.step - 1].timeoutMs
                ?? (isLast ? nil : PolicyBook.defaultStepTimeoutMs)
        else { return false }
        return loaded.now + Int64(afterMs) >= startedAt + timeout
    }

    /// Records an outcome, trying again with backoff while the database fails (never sending again): a blip or
    /// a pool timeout must not turn a sent message into a second one. Once a shutdown has begun it tries once:
    /// against a database that stopped answering the five tries took 20 s or more of SIGTERM's time, and an
    /// outcome not recorded is already safe (after the lease the step fails over, the message is not sent again).
    private func record(
        _ command: SessionCommand,
        _ c: Outbox.Claim,
        loaded: LoadedSession,
        also: @escaping @Sendable (PGConnection, SessionState) throws -> Void
    ) async throws {
        var attempt = 0
        while true {
            do {
                _ = try await sessions.execute(command, on: c.stream, loaded: attempt == 0 ? loaded : nil, also: also)
                return
            } catch let error
                where attempt + 1 < settings.recordTries && !(error is Rejection)
                && !(error is UnreadableSession) && !Task.isShuttingDownGracefully
            {
                attempt += 1
                try? await Task.sleep(for: .milliseconds(100 << min(attempt, 6)))
            }
        }
    }
}
