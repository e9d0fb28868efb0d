import ArgumentParser
import EventStore
import Foundation
import OTPDomain
import OTPServer
import OTPService
import Postgres

@main
struct OTPCtl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "otpctl",
        abstract:
            "otpd's tool for operators, auditors and analysts: check the event log's hash chains, read a history, "
            + "lift an abuse block, erase a person's data, lint the message templates, compute the Android app hash, "
            + "send a test message through a channel's driver, print STATS, rebuild the projections.",
        subcommands: [
            Verify.self, Replay.self, Export.self, History.self, Unblock.self, Erase.self, Lint.self, AppHash.self,
            SendTest.self, Stats.self, Rebuild.self,
        ]
    )

    /// Runs the command; a database error is printed with its primary message ("the database did not answer
    /// within 8 s", "password authentication failed"), which otpd's logs leave out and an operator needs.
    static func main() async {
        do {
            var command = try parseAsRoot()
            if var asynchronous = command as? any AsyncParsableCommand {
                try await asynchronous.run()
            } else {
                try command.run()
            }
        } catch let error as PGError {
            FileHandle.standardError.write(Data("otpctl: \(error.debugDescription)\n".utf8))
            exit(withError: ExitCode.failure)
        } catch {
            exit(withError: error)
        }
    }
}

/// Lints every message template (built-in and own) as otpd's start does, without a database; exits 1 when a
/// template has an error (otpd would not start), 2 when the configuration cannot be read.
struct Lint: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check every message template per channel and locale: encoding, SMS segments and bytes with a "
            + "10-digit code, {code}, placeholders, the origin-bound line."
    )
    @Option(help: "otpd's TOML configuration (env OTPD_CONFIG); absent: the defaults.") var config: String?

    func run() throws {
        var c = Configuration()
        if let file = config ?? ProcessInfo.processInfo.environment["OTPD_CONFIG"] {
            do { c = try Configuration.load(file: file) } catch {
                FileHandle.standardError.write(Data("otpctl: configuration error: \(error)\n".utf8))
                throw ExitCode(2)
            }
        }
        let report = c.lintTemplates()
        for line in report.lines { print(line) }
        if report.errorCount > 0 { throw ExitCode(1) }
    }
}

/// Prints the Android SMS Retriever app hash of a package and its signing certificate, for `android_app_hash`.
struct AppHash: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "app-hash",
        abstract: "Compute the Android SMS Retriever app hash (android_app_hash) from the package name and the "
            + "signing certificate (PEM or DER, as keytool -exportcert writes it)."
    )
    @Option(help: "The app's package name, such as com.example.app.") var package: String
    @Option(name: .customLong("keystore-cert"), help: "The signing certificate: PEM or DER.") var keystoreCert: String

    func run() throws {
        do { print(try AndroidAppHash.compute(package: package, certificateFile: keystoreCert)) } catch {
            FileHandle.standardError.write(Data("otpctl: \(error)\n".utf8))
            throw ExitCode(1)
        }
    }
}

/// Erases every session of one destination (a person's right to erasure), as `ERASE` does for one session.
///
/// The sessions are found through the keyed hash pacing keeps of the tenant and address, never by decrypting,
/// so this needs otpd's secret; afterwards the pacing rows keyed by that address are deleted too.
struct Erase: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Erase every session of a destination: its data keys destroyed, `erased` appended, nothing more sent."
    )
    @OptionGroup var connection: Connection
    @OptionGroup var secret: SecretSource
    @Option(help: "The tenant whose sessions to erase (default: default, the single-tenant name).")
    var tenant = "default"
    @Option(help: "The destination, as given to ISSUE: sms:+15551234567, email:user@example.com, ...")
    var destination: String

    func run() async throws {
        let address = try address(of: destination)
        let (secrets, c) = try secret.load(for: "whose sessions these are")
        guard
            let url = connection.databaseURL ?? ProcessInfo.processInfo.environment["OTPD_DATABASE_URL"]
                ?? c.databaseURL
        else { throw ValidationError("give --database-url, OTPD_DATABASE_URL or a --config with database_url") }
        let pool = PGPool(url: url, size: 1)
        let sessions = Application.commandPath(c, secrets: secrets, pool: pool).sessions
        do {
            let erased = try await sessions.erase(destination: address, tenant: tenant)
            await pool.close()
            for stream in erased { print("erased: \(stream.session)") }
            print("erased \(erased.count) session\(erased.count == 1 ? "" : "s") of this destination")
        } catch {
            await pool.close()
            throw error
        }
    }
}

/// Where otpd's secret is: `--config` (its `secret`, `secret_file` or `data_dir`), `--secret-file`, or
/// `<data-dir>/secret`. otpctl never creates one.
struct SecretSource: ParsableArguments {
    @Option(help: "otpd's TOML configuration (for its secret, data directory and database URL).") var config: String?
    @Option(name: .customLong("secret-file"), help: "The file holding otpd's secret (hex).") var secretFile: String?
    @Option(name: .customLong("data-dir"), help: "otpd's data directory, holding `secret` (default .otpd).")
    var dataDir: String?

    /// The secret and the configuration it came with; `purpose` says in errors what needs it.
    func load(for purpose: String) throws -> (Secrets, Configuration) {
        var c = Configuration()
        if let config { c = try Configuration.load(file: config) }
        let dataDirectory = dataDir ?? c.dataDirectory
        let file = secretFile ?? c.secretFile ?? (c.secret == nil ? dataDirectory + "/secret" : nil)
        if let file, !FileManager.default.fileExists(atPath: file) {
            throw ValidationError(
                "no secret at \(file): give the --config, --secret-file or --data-dir of the otpd \(purpose)"
            )
        }
        return (try Secrets.load(hex: c.secret, file: file, dataDirectory: dataDirectory).0, c)
    }
}

/// The address of a destination written as ISSUE takes it (`sms:+15551234567`), or a usage error saying why not.
func address(of destination: String) throws -> String {
    do { return try Destination.parse(destination).address } catch {
        guard case .badArgument(let reason) = error else { throw error }
        throw ValidationError("\(destination): \(reason)")
    }
}

struct Connection: ParsableArguments {
    @Option(name: .customLong("database-url"), help: "postgresql:// URL of otpd's database (env OTPD_DATABASE_URL).")
    var databaseURL: String?

    func open() throws -> PGConnection {
        guard let url = databaseURL ?? ProcessInfo.processInfo.environment["OTPD_DATABASE_URL"] else {
            throw ValidationError("give --database-url or set OTPD_DATABASE_URL")
        }
        return try PGConnection(url: url)
    }
}

/// Prints a session's events, oldest first, as JSON lines.
struct History: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print a session's events as JSON lines.")
    @OptionGroup var connection: Connection
    @Option(help: "The tenant (default: default).") var tenant = "default"
    @Argument(help: "The session id.") var session: String

    func run() throws {
        let conn = try connection.open()
        defer { conn.close() }
        let records = try EventStore.read(stream: StreamID(tenant: tenant, session: session).text, on: conn)
        guard !records.isEmpty else {
            FileHandle.standardError.write(Data("otpctl: no such session\n".utf8))
            throw ExitCode(1)
        }
        for r in records {
            let hash = r.hash.map { String(format: "%02x", $0) }.joined()
            print(#"{"version":\#(r.version),"type":"\#(r.type)","at":\#(r.at),"hash":"\#(hash)","data":\#(r.data)}"#)
        }
    }
}

/// Lifts the block on a destination refused after consecutive failed verifications across sessions.
///
/// Destinations are stored only as HMACs under otpd's secret, so this needs the same secret: from `--config`
/// (its `secret`, `secret_file` or `data_dir`), `--secret-file`, or `<data-dir>/secret`. It never creates one.
struct Unblock: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Let a destination blocked after consecutive failed verifications start sessions again."
    )
    @OptionGroup var connection: Connection
    @OptionGroup var secret: SecretSource
    @Option(help: "The tenant whose limit blocked it (default: default, the single-tenant name).")
    var tenant = "default"
    @Argument(help: "The destination, as given to ISSUE: sms:+15551234567, email:user@example.com, ...")
    var destination: String

    func run() throws {
        let address = try address(of: destination)
        let (secrets, c) = try secret.load(for: "that blocked this destination")
        var conn = connection
        if conn.databaseURL == nil { conn.databaseURL = c.databaseURL }
        let db = try conn.open()
        defer { db.close() }
        if let count = try PacingAdmin.clearFailures(address: address, tenant: tenant, secrets: secrets, on: db) {
            print("unblocked: \(count) consecutive failed verifications cleared")
        } else {
            print("not blocked: no failed verifications recorded for this destination")
        }
    }
}
