import ArgumentParser
import Foundation
import Logging
import OTPServer
import OTPService
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

    /// The configuration after file, environment and flags; a configuration error exits 2 naming the key.
    func resolve(listen: String? = nil) throws -> Configuration {
        let env = ProcessInfo.processInfo.environment
        var c = Configuration()
        do {
            if let file = config ?? env["OTPD_CONFIG"] { c = try Configuration.load(file: file) }
        } catch {
            stderr("otpd: configuration error: \(error)")
            throw ExitCode(2)
        }
        for (name, value) in [("OTPD_LISTEN", env["OTPD_LISTEN"]), ("--listen", listen)] {
            guard let value else { continue }
            guard let address = HostPort(value) else { throw ValidationError("\(name) '\(value)' must be HOST:PORT") }
            c.listen = address
        }
        if let v = env["OTPD_DATABASE_URL"], !v.isEmpty { c.databaseURL = v }
        if let v = env["OTPD_DATA_DIR"] { c.dataDirectory = v }
        if let databaseURL { c.databaseURL = databaseURL }
        if let dataDir { c.dataDirectory = dataDir }
        return c
    }
}

func stderr(_ line: String) {
    FileHandle.standardError.write(Data((line + "\n").utf8))
}

struct Migrate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Apply the schema migrations and exit.")
    @OptionGroup var options: CommonOptions

    func run() async throws {
        let applied = try await Application.migrate(try options.resolve())
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
        let c = try options.resolve(listen: listen)
        var appOptions = Application.Options()
        appOptions.gracefulShutdownSignals = [.sigterm, .sigint]
        appOptions.onListening = { address in
            FileHandle.standardOutput.write(Data("otpd listening on \(address)\n".utf8))
        }
        appOptions.onHTTPListening = { address in
            FileHandle.standardOutput.write(Data("otpd http listening on \(address)\n".utf8))
        }
        let app: RunningApplication
        do {
            app = try await Application(configuration: c, options: appOptions, logger: Logger(label: "otpd")).start()
        } catch let e as ConfigurationError {
            stderr("otpd: configuration error: \(e)")
            throw ExitCode(2)
        }
        if !app.appliedMigrations.isEmpty {
            stderr("otpd: applied migrations \(app.appliedMigrations.joined(separator: ", "))")
        }
        if app.generatedSecret {
            stderr("otpd: generated a new secret in \(c.dataDirectory)/secret (share it between instances)")
        }
        if c.printsCodes {
            stderr(
                "otpd: WARNING: the log driver prints codes to this output; development only "
                    + "(configure [channel.*] drivers for production)"
            )
        }
        for warning in app.templateWarnings + c.receiptWarnings { stderr("otpd: WARNING: \(warning)") }
        if let tests = c.testDestinationsWarning { stderr("otpd: WARNING: \(tests)") }
        if let cert = c.tlsCert {
            let clients = c.tlsClientCA.map { ", client certificates signed by \($0)" } ?? ""
            stderr("otpd: the RESP port speaks TLS only (certificate \(cert)\(clients))")
        }
        if c.tenants.isEmpty {
            stderr("otpd: no tenants configured: single-tenant mode, no AUTH (development default)")
        }
        do {
            try await app.run()
        } catch {
            stderr("otpd: \(error)")
            throw ExitCode(1)
        }
        stderr("otpd: stopped")
    }
}
