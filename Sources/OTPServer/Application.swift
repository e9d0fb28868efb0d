import Channels
import EventStore
import Logging
import NIOPosix
import NIOSSL
import OTPDomain
import OTPService
import Postgres
import ServiceLifecycle
import UnixSignals

/// Builds every part of otpd from a `Configuration` and runs them as one `ServiceGroup`; `otpd` and the tests
/// both start the server through it.
///
/// `start()` runs the prelude, off Swift's cooperative pool (libpq, `pg_ctl` and file reads block): it loads the
/// TLS certificate and key when configured, opens the database (the configured URL, or an embedded cluster it
/// starts), applies the migrations, and loads the secret. It then builds the services, listed so that the group,
/// which shuts down in reverse order, stops the RESP server first and the pool and the embedded cluster last.
public struct Application: Sendable {
    /// What the program embedding the application decides, beyond the configuration.
    public struct Options: Sendable {
        /// The secret; nil: from the configuration (`secret`, `secret_file`) or `data_dir/secret`, created if absent.
        public var secrets: Secrets?
        /// Where the development `log` driver prints.
        public var logDriver = LogDriver()
        /// How the dispatcher claims and retries.
        public var dispatcher = Dispatcher.Settings()
        /// How the scheduler claims.
        public var scheduler = Scheduler.Settings()
        /// How the projector reads the log.
        public var projector = Projector.Settings()
        /// How the live feed (SUBSCRIBE) reads the log.
        public var feed = LiveFeed.Settings()
        /// How often the routes' delivery p95 (adaptive step timeouts) is read from the histograms.
        public var routeLatencyRefresh: Duration = .seconds(10)
        /// The RESP server's bounds on its clients (the address and `max_connections` come from the
        /// configuration).
        public var server = ServerConfiguration(address: HostPort(host: "127.0.0.1", port: 0))
        /// The migrations; nil: found next to the working directory or the executable.
        public var schemaDirectory: String?
        /// The signals that begin a graceful shutdown.
        public var gracefulShutdownSignals: [UnixSignal] = []
        /// Called with the bound address once the RESP port accepts connections.
        public var onListening: @Sendable (HostPort) -> Void = { _ in }
        /// Called with the bound address once the HTTP side accepts connections.
        public var onHTTPListening: @Sendable (HostPort) -> Void = { _ in }
        /// Creates the defaults.
        public init() {}
    }

    /// The configuration.
    public var configuration: Configuration
    /// The embedding program's choices.
    public var options: Options
    /// The logger every service logs through.
    public var logger: Logger

    /// Creates an application; nothing runs until `start()` or `run()`.
    public init(configuration: Configuration, options: Options = Options(), logger: Logger) {
        self.configuration = configuration
        self.options = options
        self.logger = logger
    }

    /// Starts and runs until graceful shutdown.
    public func run() async throws {
        try await start().run()
    }

    /// Runs the prelude and builds the services, ready to run.
    public func start() async throws -> RunningApplication {
        let c = configuration
        let templateWarnings = try c.checkTemplates()
        let http = ProviderHTTP()
        let lineups: [DeliveryChannel: ChannelLineup]
        do { lineups = try ChannelDrivers.make(c.channels, http: http, file: c.file, log: options.logDriver) } catch {
            await http.shutdown()
            throw error
        }
        // Before the database: a bad certificate stops the start without starting an embedded cluster.
        let tls: NIOSSLContext?
        let database: DatabaseService
        do {
            tls = try await NIOThreadPool.singleton.runIfActive { try c.makeTLSContext() }
            database = try await Self.openDatabase(c, schemaDirectory: options.schemaDirectory)
        } catch {
            await http.shutdown()
            throw error
        }
        let secrets: Secrets
        let generated: Bool
        do {
            let given = options.secrets
            (secrets, generated) = try await NIOThreadPool.singleton.runIfActive {
                if let given { return (given, false) }
                return try Secrets.load(hex: c.secret, file: c.secretFile, dataDirectory: c.dataDirectory)
            }
        } catch {
            await database.stop()
            await http.shutdown()
            throw error
        }

        let pool = PGPool(url: database.url, size: c.databasePoolSize)
        let telemetry = Telemetry()
        let routes = RouteLatencies(pool: pool, interval: options.routeLatencyRefresh, logger: logger)
        let (sessions, store, pacing, codes) = Self.commandPath(
            c,
            secrets: secrets,
            pool: pool,
            telemetry: telemetry,
            routeLatency: routes.latency
        )
        let httpSide = c.httpListen.map { address in
            var settings = HTTPSide.Settings(address: address)
            settings.publicURL = c.publicURL
            settings.appName = c.appName
            settings.metricsToken = c.metricsToken
            settings.tenants = c.tenants
            for (channel, providers) in c.channels {
                for p in providers.providers {
                    switch p.settings {
                    case .twilio(let t): settings.twilioTokens.append(t.authToken)
                    case .webhook(let w): settings.webhookSecrets[channel, default: []] += w.secret.map { [$0] } ?? []
                    default: break
                    }
                }
            }
            return HTTPSide(
                settings: settings,
                pool: pool,
                sessions: sessions,
                messages: store.messages,
                logger: logger,
                telemetry: telemetry,
                onListening: options.onHTTPListening
            )
        }
        let dispatcher = Dispatcher(
            pool: pool,
            sessions: sessions,
            outbox: store.outbox,
            codes: codes,
            channels: lineups,
            renderer: MessageRenderer(settings: c.messageSettings, templates: c.templateBook),
            prices: c.prices,
            messages: store.messages,
            secrets: secrets,
            publicURL: { httpSide?.publicURL },
            settings: options.dispatcher,
            logger: logger,
            telemetry: telemetry
        )
        let scheduler = Scheduler(
            pool: pool,
            sessions: sessions,
            timers: store.timers,
            settings: options.scheduler,
            logger: logger,
            telemetry: telemetry
        )
        let janitor = Janitor(pool: pool, pacing: pacing, messages: store.messages, logger: logger)
        // The projector's own connection: a burst of commands (each waking it) never waits behind it for the pool.
        let projectorPool = PGPool(url: database.url, size: 1)
        let projector = Projector(
            pool: projectorPool,
            settings: options.projector,
            wake: store.appended.listener(),
            logger: logger
        ) {
            seconds in
            telemetry.setProjectorLag(seconds: seconds)
        }
        // The live feed's own connection too: its reads keep their pace whatever the commands do.
        let feedPool = PGPool(url: database.url, size: 1)
        let feed = LiveFeed(pool: feedPool, settings: options.feed, wake: store.appended.listener(), logger: logger)
        let handler = CommandHandler(
            sessions: sessions,
            analytics: AnalyticsQueries(pool: pool),
            feed: feed,
            subscriberQueueLimit: options.server.subscriberQueueBytes,
            tenants: c.tenants,
            fingerprint: secrets.fingerprint,
            logger: logger,
            telemetry: telemetry
        )
        var server = options.server
        server.address = c.listen
        server.maxConnections = c.maxConnections
        server.tls = tls
        let resp = RESPServer(
            configuration: server,
            handler: handler,
            logger: logger,
            telemetry: telemetry,
            onListening: options.onListening
        )

        // Shut down in reverse: the listeners first, then the background loops all at once, the provider client
        // after the dispatcher, the database last.
        let services: [any Service] =
            [
                database, PoolService(pool: pool), PoolService(pool: projectorPool), PoolService(pool: feedPool), http,
                ServicesTogether([dispatcher, scheduler, janitor, projector, feed, routes]),
            ]
            + (httpSide.map { [$0] } ?? [])
            + [resp]
        let group = ServiceGroup(
            services: services,
            gracefulShutdownSignals: options.gracefulShutdownSignals,
            cancellationSignals: [],
            logger: logger
        )
        return RunningApplication(
            group: group,
            pool: pool,
            sessions: sessions,
            pacing: pacing,
            appliedMigrations: database.appliedMigrations,
            generatedSecret: generated,
            templateWarnings: templateWarnings,
            telemetry: telemetry
        )
    }

    /// The command path on a pool: the one place it is put together (the server, and `otpctl erase`).
    public static func commandPath(
        _ c: Configuration,
        secrets: Secrets,
        pool: PGPool,
        telemetry: Telemetry = Telemetry(),
        routeLatency: @escaping @Sendable (DeliveryChannel, String) -> RouteLatency? = { _, _ in nil }
    ) -> (sessions: SessionService, store: SessionStore, pacing: Pacing, codes: SecretCodeBook) {
        let codes = SecretCodeBook(secrets)
        let store = SessionStore(secrets: secrets)
        let pacing = Pacing(limits: c.limits, secrets: secrets)
        let sessions = SessionService(
            pool: pool,
            store: store,
            pacing: pacing,
            codes: codes,
            policies: PolicyBook(policies: c.policies),
            testDestinations: c.testDestinations,
            routeLatency: routeLatency,
            minGapMs: c.limits.minGapPerChannelMs,
            telemetry: telemetry,
            groupCommit: c.groupCommit
        )
        return (sessions, store, pacing, codes)
    }

    /// Opens the database and applies the migrations; the embedded cluster, if one was started, is stopped
    /// again when that fails.
    static func openDatabase(_ c: Configuration, schemaDirectory: String?) async throws -> DatabaseService {
        try await NIOThreadPool.singleton.runIfActive {
            guard let dir = schemaDirectory ?? Migrator.locateSchemaDirectory() else {
                throw ConfigurationError(
                    file: c.file,
                    key: nil,
                    message: "cannot find the schema/ directory (run from the repository, or set OTPD_SCHEMA_DIR)"
                )
            }
            let migrator = try Migrator(directory: dir)
            let url: String
            let embedded: EmbeddedPostgres?
            if let configured = c.databaseURL {
                (url, embedded) = (configured, nil)
            } else {
                let cluster = EmbeddedPostgres(dataDirectory: c.dataDirectory + "/pg")
                (url, embedded) = (try cluster.start(), cluster)
            }
            do {
                let conn = try PGConnection(url: url)
                defer { conn.close() }
                let applied = try migrator.apply(on: conn)
                return DatabaseService(url: url, embedded: embedded, appliedMigrations: applied)
            } catch {
                embedded?.stop()
                throw error
            }
        }
    }

    /// Applies the migrations and stops (`otpd migrate`); returns the names applied.
    public static func migrate(_ c: Configuration, schemaDirectory: String? = nil) async throws -> [String] {
        let database = try await openDatabase(c, schemaDirectory: schemaDirectory)
        await database.stop()
        return database.appliedMigrations
    }
}

/// An application whose prelude ran: its services built, not yet running.
public final class RunningApplication: Sendable {
    let group: ServiceGroup
    /// The database pool (closed when the group stops).
    public let pool: PGPool
    /// The command path.
    public let sessions: SessionService
    /// The pacing limits (a test sweeps their expired rows with a janitor of its own).
    public let pacing: Pacing
    /// The migrations the prelude applied.
    public let appliedMigrations: [String]
    /// Whether the prelude created a new secret in the data directory.
    public let generatedSecret: Bool
    /// The template linter's warnings (`templates.sms.de: text: 2 SMS segments ...`), for the start to print.
    public let templateWarnings: [String]
    /// The metrics `GET /metrics` shows (the projector reports its lag here).
    public let telemetry: Telemetry

    init(
        group: ServiceGroup,
        pool: PGPool,
        sessions: SessionService,
        pacing: Pacing,
        appliedMigrations: [String],
        generatedSecret: Bool,
        templateWarnings: [String] = [],
        telemetry: Telemetry = Telemetry()
    ) {
        self.group = group
        self.pool = pool
        self.sessions = sessions
        self.pacing = pacing
        self.appliedMigrations = appliedMigrations
        self.generatedSecret = generatedSecret
        self.templateWarnings = templateWarnings
        self.telemetry = telemetry
    }

    /// Runs every service until graceful shutdown (a signal, or `triggerGracefulShutdown`). Call it once.
    public func run() async throws {
        try await group.run()
    }

    /// Begins a graceful shutdown: the server stops accepting and finishes its requests, then the rest stop.
    public func triggerGracefulShutdown() async {
        await group.triggerGracefulShutdown()
    }
}

/// The database as a service: listed first, so it stops last; stops the embedded cluster, if any, on shutdown.
struct DatabaseService: Service {
    /// The URL the pool connects to.
    var url: String
    /// The cluster the prelude started, or nil for a configured database.
    var embedded: EmbeddedPostgres?
    /// The migrations the prelude applied.
    var appliedMigrations: [String]

    func run() async throws {
        try? await gracefulShutdown()
        await stop()
    }

    /// Stops the embedded cluster, off the cooperative pool (`pg_ctl` blocks).
    func stop() async {
        guard let embedded else { return }
        _ = try? await NIOThreadPool.singleton.runIfActive { embedded.stop() }
    }
}

// ServiceGroup logs each service by its description: never with the URL's password.
extension DatabaseService: CustomStringConvertible {
    var description: String {
        "DatabaseService(\((try? PGURL(parsing: url))?.description ?? "unparsable URL"))"
    }
}

/// Services that are told to stop at the same moment and stop together.
///
/// ServiceGroup stops its services one after another. For the background loops that order buys nothing and costs
/// time when the database stops answering: each loop may be inside a call that ends only at the statement timeout
/// plus its grace, and one after another those waits added up (20 s on a loaded machine for three loops). Together
/// a shutdown waits for the slowest call once. A loop that ends before the shutdown, or throws, ends the group as
/// it would have on its own.
struct ServicesTogether: Service, CustomStringConvertible {
    let services: [any Service]

    init(_ services: [any Service]) { self.services = services }

    /// A loop ended although nobody asked it to.
    struct EndedEarly: Error, CustomStringConvertible {
        var service: String
        var description: String { "\(service) ended before the shutdown" }
    }

    func run() async throws {
        try await withThrowingDiscardingTaskGroup { group in
            for service in services {
                group.addTask {
                    try await service.run()
                    if !Task.isShuttingDownGracefully && !Task.isCancelled { throw EndedEarly(service: "\(service)") }
                }
            }
        }
    }

    var description: String { services.map { "\($0)" }.joined(separator: ", ") }
}

/// The pool as a service: closes its connections once every service listed after it has stopped.
struct PoolService: Service {
    let pool: PGPool

    func run() async throws {
        try? await gracefulShutdown()
        await pool.close()
    }
}
