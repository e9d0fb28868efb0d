import ArgumentParser
import EventStore
import Foundation
import Logging
import OTPDomain
import OTPServer
import OTPService
import Postgres
import ServiceLifecycle
import UnixSignals

@main
struct OTPD: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "otpd",
        abstract: "OTP orchestration: codes over SMS, e-mail, voice and push with fallback, over a RESP protocol.",
        version: CommandHandler.version,
        subcommands: [Serve.self, Migrate.self],
        defaultSubcommand: Serve.self
    )
}

/// Flags shared by `serve` and `migrate`; each wins over its environment variable, which wins over the file.
struct CommonOptions: ParsableArguments {
    @Option(help: "The TOML configuration file (env OTPD_CONFIG).")
    var config: String?

    @Option(
        name: .customLong("database-url"),
        help: "postgresql:// URL; absent: an embedded cluster (env OTPD_DATABASE_URL)."
    )
    var databaseURL: String?

    @Option(name: .customLong("data-dir"), help: "Where the secret and the embedded cluster live (default .otpd).")
    var dataDir: String?

    /// The configuration after file, environment and flags.
    func resolve(listen: String? = nil) throws -> Configuration {
        let env = ProcessInfo.processInfo.environment
        var c = Configuration()
        if let file = config ?? env["OTPD_CONFIG"] {
            c = try Configuration.load(file: file)
        }
        if let v = env["OTPD_LISTEN"] { c.listen = v }
        if let v = env["OTPD_DATABASE_URL"], !v.isEmpty { c.databaseURL = v }
        if let v = env["OTPD_DATA_DIR"] { c.dataDirectory = v }
        if let listen { c.listen = listen }
        if let databaseURL { c.databaseURL = databaseURL }
        if let dataDir { c.dataDirectory = dataDir }
        guard HostPort(c.listen) != nil else { throw ValidationError("listen address '\(c.listen)' must be HOST:PORT") }
        return c
    }
}

/// A database the server uses: a configured URL, or an embedded cluster it started.
struct Database {
    var url: String
    var embedded: EmbeddedPostgres?

    static func open(_ c: Configuration) throws -> Database {
        if let url = c.databaseURL { return Database(url: url, embedded: nil) }
        let pg = EmbeddedPostgres(dataDirectory: c.dataDirectory + "/pg")
        let url = try pg.start()
        return Database(url: url, embedded: pg)
    }

    func migrate() throws -> [String] {
        guard let dir = Migrator.locateSchemaDirectory() else {
            throw ValidationError("cannot find the schema/ directory (run from the repository, or set OTPD_SCHEMA_DIR)")
        }
        let conn = try PGConnection(url: url)
        defer { conn.close() }
        return try Migrator(directory: dir).apply(on: conn)
    }
}

func stderr(_ line: String) {
    FileHandle.standardError.write(Data((line + "\n").utf8))
}

struct Migrate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Apply the schema migrations and exit.")
    @OptionGroup var options: CommonOptions

    func run() async throws {
        let c = try options.resolve()
        let db = try Database.open(c)
        defer { db.embedded?.stop() }
        let applied = try db.migrate()
        print(applied.isEmpty ? "otpd: schema is up to date" : "otpd: applied \(applied.joined(separator: ", "))")
    }
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the server (the default command).")
    @OptionGroup var options: CommonOptions

    @Option(help: "HOST:PORT to listen on (env OTPD_LISTEN; default 127.0.0.1:7379).")
    var listen: String?

    func run() async throws {
        LoggingSystem.bootstrap { label in
            var h = StreamLogHandler.standardError(label: label)
            h.logLevel =
                ProcessInfo.processInfo.environment["OTPD_LOG_LEVEL"].flatMap { Logger.Level(rawValue: $0) } ?? .info
            return h
        }
        let logger = Logger(label: "otpd")
        let c: Configuration
        do { c = try options.resolve(listen: listen) } catch let e as ConfigurationError {
            stderr("otpd: configuration error: \(e)")
            throw ExitCode(2)
        }
        guard let address = HostPort(c.listen) else { throw ValidationError("bad listen address") }

        let drivers: [Channel: any ChannelDriver]
        do { drivers = try ChannelDrivers.make(c) } catch {
            stderr("otpd: configuration error: \(error)")
            throw ExitCode(2)
        }
        let db = try Database.open(c)
        defer { db.embedded?.stop() }
        let applied = try db.migrate()
        if !applied.isEmpty { stderr("otpd: applied migrations \(applied.joined(separator: ", "))") }

        let (secrets, generated) = try Secrets.load(hex: c.secret, file: c.secretFile, dataDirectory: c.dataDirectory)
        if generated {
            stderr("otpd: generated a new secret in \(c.dataDirectory)/secret (share it between instances)")
        }
        if c.printsCodes {
            stderr(
                "otpd: WARNING: the log driver prints codes to this output; development only "
                    + "(configure [channel.*] drivers for production)"
            )
        }
        if c.tenants.isEmpty {
            stderr("otpd: no tenants configured: single-tenant mode, no AUTH (development default)")
        }

        let pool = PGPool(url: db.url, size: 8)
        let service = SessionService(
            pool: pool,
            secrets: secrets,
            policies: PolicyBook(policies: c.policies),
            limits: c.limits
        )
        let renderer = MessageRenderer(
            settings: MessageSettings(
                appName: c.appName,
                appDomain: c.appDomain,
                androidAppHash: c.androidAppHash
            )
        )
        let dispatcher = Dispatcher(
            service: service,
            drivers: drivers,
            settings: c.channels,
            renderer: renderer,
            logger: logger
        )
        let scheduler = Scheduler(service: service, logger: logger)
        let janitor = Janitor(service: service, logger: logger)
        let handler = CommandHandler(service: service, tenants: c.tenants, logger: logger)
        let server = RESPServer(
            host: address.host,
            port: address.port,
            handler: handler,
            logger: logger,
            maxConnections: c.maxConnections
        ) { host, port in
            let shown = HostPort("\(host):\(port)")?.description ?? "\(host):\(port)"
            FileHandle.standardOutput.write(Data("otpd listening on \(shown)\n".utf8))
        }
        let group = ServiceGroup(
            services: [dispatcher, scheduler, janitor, server],
            gracefulShutdownSignals: [.sigterm, .sigint],
            cancellationSignals: [],
            logger: logger
        )
        do {
            try await group.run()
        } catch {
            await pool.close()
            stderr("otpd: \(error)")
            throw ExitCode(1)
        }
        await pool.close()
        stderr("otpd: stopped")
    }
}
