import CLibPQ
import Foundation

#if canImport(Glibc)
@preconcurrency import Glibc
#elseif canImport(Musl)
@preconcurrency import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Runs a private PostgreSQL cluster from the server binaries installed on the machine.
///
/// `start()` creates the cluster on first use (`initdb -U otpd --auth=reject -E UTF8 --locale=C`),
/// starts it listening only on 127.0.0.1 (no Unix socket) and creates the database. The port is the
/// `port` given to `init`, else the port of the previous start when it is still free, else a free one.
///
/// No other local user gets in: the role `otpd` has a generated password (SCRAM-SHA-256), kept in
/// `passwordFile` (mode 0600, owned by this process's user, in the data directory) and carried by the URL
/// `start()` returns, and `pg_hba.conf` is rewritten at every start to admit that role with that password
/// only. A cluster without a usable password file (one created with `--auth=trust` by an earlier version,
/// or whose file was lost or readable by others) gets a new password before the server starts, in
/// single-user mode, so it never listens with trust.
/// A server already running in the directory (a `postmaster.pid` with a live pid) is stopped first
/// and restarted with these settings. When running as root, `initdb`/`pg_ctl` run as the `postgres`
/// user; if that user cannot reach the requested directory, the cluster lives under
/// `/var/tmp/otpd-<hash of the path>/data` instead (see `effectiveDataDirectory`, reported on stderr).
/// The server log is `postgres.log` next to the data directory. All calls block: run them at startup
/// or on a dedicated thread, not on Swift's cooperative pool.
public struct EmbeddedPostgres: Sendable {
    /// The requested data directory, made absolute.
    public let dataDirectory: String
    /// The database created after start and named in the returned URL.
    public let database: String
    /// Extra `-c name=value` server settings (e.g. `fsync=off`); `fsync=off` also makes initdb skip syncing.
    public let settings: [String: String]
    /// A fixed port, or `nil` to reuse the previous port when free and otherwise pick a free one.
    public let port: Int?

    /// Describes a cluster; nothing happens until `start()`.
    public init(dataDirectory: String, database: String = "otpd", settings: [String: String] = [:], port: Int? = nil) {
        self.dataDirectory = URL(fileURLWithPath: dataDirectory).standardizedFileURL.path
        self.database = database
        self.settings = settings
        self.port = port
    }

    /// The data directory actually used: `dataDirectory`, or the `/var/tmp/otpd-<hash>/data` fallback as root.
    public var effectiveDataDirectory: String {
        layout().data
    }

    /// The server log file (`postgres.log` next to the effective data directory).
    public var logFile: String {
        layout().log
    }

    /// The file holding the role's password, in `.pgpass` form (`*:*:*:otpd:<password>`), so that
    /// `PGPASSFILE=<this file> psql -h 127.0.0.1 -p <port> -U otpd otpd` works without a password on the
    /// command line.
    public var passwordFile: String {
        layout().data + "/" + Self.passwordFileName
    }

    /// The name of `passwordFile` inside the data directory.
    static let passwordFileName = "otpd.pgpass"
    /// The role otpd connects as (the cluster's superuser).
    static let role = "otpd"

    /// Creates the cluster when missing, starts it on a loopback port, creates the database and returns its URL.
    ///
    /// The URL has the form `postgresql://otpd:<password>@127.0.0.1:<port>/<database>` (with
    /// `?require_auth=scram-sha-256` when libpq is 16 or later, so a server squatting on the port cannot ask
    /// for the password in clear); print it only through `PGURL.description`, which hides the password.
    /// Errors have code `.launch` and a message that includes the relevant log tail.
    public func start() throws(PGError) -> String {
        let binaries = try Binaries.find()
        let layout = layout()
        if layout.relocated {
            progress("the postgres user cannot reach \(dataDirectory); using \(layout.data) instead")
        }
        try prepareDirectories(layout)

        if !FileManager.default.fileExists(atPath: layout.data + "/PG_VERSION") {
            progress("creating PostgreSQL cluster in \(layout.data) …")
            // `reject`: the new cluster admits no one until its role has a password (`credentials` below).
            var arguments = [
                "-D", layout.data, "-U", Self.role, "--auth=reject", "-E", "UTF8", "--locale=C", "--no-instructions",
            ]
            if settings["fsync"] == "off" { arguments.append("--no-sync") }
            let result = try Command.run(binaries.initdb, arguments, asPostgres: Command.isRoot)
            guard result.status == 0 else {
                throw .launch(
                    "initdb failed (exit \(result.status)) for \(layout.data):\n\(Command.tail(result.output))"
                )
            }
        }

        if let pid = Self.runningPostmasterPID(layout.data) {
            progress("stopping the PostgreSQL server (pid \(pid)) already running in \(layout.data) …")
            let result = try Command.run(
                binaries.pgCtl,
                ["-D", layout.data, "stop", "-m", "fast", "-w", "-t", "60"],
                asPostgres: Command.isRoot
            )
            guard result.status == 0 else {
                throw .launch("could not stop the server running in \(layout.data):\n\(Command.tail(result.output))")
            }
        }

        // The server is stopped: give the role a password if it has none we know, and admit only that.
        let password = try credentials(binaries, layout)
        try writeAccessRules(layout)

        var chosenPort = try choosePort(layout)
        var attempt = 1
        while true {
            let logOffset = Self.fileSize(layout.log)
            progress("starting PostgreSQL on 127.0.0.1:\(chosenPort) (log: \(layout.log)) …")
            let result = try Command.run(
                binaries.pgCtl,
                [
                    "-D", layout.data, "-l", layout.log, "-w", "-t", "60", "-o", try serverOptions(port: chosenPort),
                    "start",
                ],
                asPostgres: Command.isRoot
            )
            if result.status == 0 { break }
            let log = Self.readLog(layout.log, from: logOffset)
            let portInUse =
                log.contains("could not bind") || log.contains("Address already in use")
                || log.contains("could not create any TCP/IP sockets")
            if portInUse, port == nil, attempt < 3 {
                attempt += 1
                chosenPort = try Self.freePort()
                continue
            }
            let reason =
                portInUse ? "port \(chosenPort) is already in use" : "pg_ctl start failed (exit \(result.status))"
            throw .launch(
                "\(reason) for \(layout.data):\n\(Command.tail(result.output))\nlog tail (\(layout.log)):\n\(Command.tail(log))"
            )
        }

        try createDatabase(port: chosenPort, password: password, log: layout.log)
        return Self.url(port: chosenPort, password: password, database: database).urlString
    }

    /// The URL of `database` on the cluster at `port`.
    static func url(port: Int, password: String, database: String) -> PGURL {
        // libpq 16 can refuse a server that asks for anything but SCRAM (older versions reject the keyword).
        let parameters = PQlibVersion() >= 160_000 ? ["require_auth": "scram-sha-256"] : [:]
        return PGURL(
            user: role,
            password: password,
            host: "127.0.0.1",
            port: port,
            database: database,
            parameters: parameters
        )
    }

    /// Stops the server (`pg_ctl stop -m fast`) if it is running; does nothing otherwise.
    public func stop() {
        let layout = layout()
        guard Self.runningPostmasterPID(layout.data) != nil, let binaries = try? Binaries.find() else { return }
        progress("stopping PostgreSQL in \(layout.data) …")
        _ = try? Command.run(
            binaries.pgCtl,
            ["-D", layout.data, "stop", "-m", "fast", "-w", "-t", "60"],
            asPostgres: Command.isRoot
        )
    }

    /// The command line that stops this cluster with `pg_ctl stop -m <mode>` (as postgres when root), for watchdog scripts.
    public func stopCommandLine(mode: String = "immediate") throws(PGError) -> [String] {
        let binaries = try Binaries.find()
        let command = [binaries.pgCtl, "-D", layout().data, "stop", "-m", mode]
        return Command.isRoot ? [try Command.runuserPath(), "-u", "postgres", "--"] + command : command
    }

    // MARK: Layout

    struct Layout {
        var data: String
        var log: String
        var base: String?
        var relocated: Bool
    }

    func layout() -> Layout {
        let parent = (dataDirectory as NSString).deletingLastPathComponent
        let requested = Layout(data: dataDirectory, log: parent + "/postgres.log", base: nil, relocated: false)
        guard Command.isRoot, !Command.postgresCanTraverse(parent) else { return requested }
        let base = "/var/tmp/otpd-\(Self.shortHash(dataDirectory))"
        return Layout(data: base + "/data", log: base + "/postgres.log", base: base, relocated: true)
    }

    private func prepareDirectories(_ layout: Layout) throws(PGError) {
        let fileManager = FileManager.default
        let owner = Command.isRoot ? try Command.postgresUser() : nil
        if let base = layout.base {
            var info = stat()
            if lstat(base, &info) == 0 {
                let isDirectory = (info.st_mode & S_IFMT) == S_IFDIR
                guard isDirectory, info.st_uid == 0 || info.st_uid == owner?.uid else {
                    throw .launch("\(base) exists but is not a directory owned by root or postgres; remove it")
                }
            } else {
                do {
                    try fileManager.createDirectory(atPath: base, withIntermediateDirectories: false)
                } catch {
                    throw .launch("could not create \(base): \(error)")
                }
            }
            if let owner { _ = chown(base, owner.uid, owner.gid) }
            _ = chmod(base, 0o755)
        }
        let dataExisted = fileManager.fileExists(atPath: layout.data)
        if !dataExisted {
            do {
                let parent = (layout.data as NSString).deletingLastPathComponent
                try fileManager.createDirectory(
                    atPath: parent,
                    withIntermediateDirectories: true,
                    attributes: [.posixPermissions: 0o755]
                )
                try fileManager.createDirectory(
                    atPath: layout.data,
                    withIntermediateDirectories: false,
                    attributes: [.posixPermissions: 0o700]
                )
            } catch {
                throw .launch("could not create the data directory \(layout.data): \(error)")
            }
        }
        if let owner {
            let empty = (try? fileManager.contentsOfDirectory(atPath: layout.data).isEmpty) ?? false
            if !dataExisted || empty { _ = chown(layout.data, owner.uid, owner.gid) }
        }
        if !fileManager.fileExists(atPath: layout.log) {
            guard fileManager.createFile(atPath: layout.log, contents: nil, attributes: [.posixPermissions: 0o600])
            else {
                throw .launch("could not create the log file \(layout.log)")
            }
        }
        // The log names roles and statements: for the cluster's owner only, like the data directory.
        _ = chmod(layout.log, 0o600)
        if let owner { _ = chown(layout.log, owner.uid, owner.gid) }
    }

    // MARK: Credentials

    /// What `readPassword` found.
    enum StoredPassword: Equatable {
        case found(String)
        case missing
        case refused(String)
    }

    /// The role's password from the password file, setting a new one when there is none that can be trusted.
    ///
    /// Call with the server stopped: a new password is set in single-user mode, before the server listens.
    private func credentials(_ binaries: Binaries, _ layout: Layout) throws(PGError) -> String {
        let file = layout.data + "/" + Self.passwordFileName
        switch Self.readPassword(file) {
        case .found(let password):
            return password
        case .missing:
            progress("giving the PostgreSQL role \(Self.role) a generated password (kept in \(file)) …")
        case .refused(let reason):
            progress("\(file) \(reason); giving the PostgreSQL role \(Self.role) a new password …")
        }
        let password = Self.generatePassword()
        try setPassword(password, binaries, layout)
        try Self.writeFile(file, contents: "*:*:*:\(Self.role):\(password)\n", owner: nil)
        return password
    }

    /// Reads `*:*:*:otpd:<password>` from `path`, refusing a file another user owns or may read or write.
    static func readPassword(_ path: String) -> StoredPassword {
        var info = stat()
        guard lstat(path, &info) == 0 else { return .missing }
        guard (info.st_mode & S_IFMT) == S_IFREG else { return .refused("is not a regular file") }
        guard info.st_uid == geteuid() else { return .refused("belongs to another user") }
        guard info.st_mode & 0o077 == 0 else { return .refused("may be read by other users") }
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else {
            return .refused("cannot be read")
        }
        let prefix = "*:*:*:\(role):"
        for line in text.split(separator: "\n") where line.hasPrefix(prefix) {
            let password = String(line.dropFirst(prefix.count))
            if password.count >= 32, password.allSatisfy({ $0.isASCII && $0.isHexDigit }) { return .found(password) }
        }
        return .refused("holds no password")
    }

    /// 32 random bytes in hex.
    static func generatePassword() -> String {
        var generator = SystemRandomNumberGenerator()
        return (0..<32).map { _ in
            let byte = UInt8.random(in: 0...255, using: &generator)
            return (byte < 16 ? "0" : "") + String(byte, radix: 16)
        }.joined()
    }

    /// Sets the role's password with `postgres --single` (the server must be stopped); the statement comes
    /// from a private file on stdin, never from the command line.
    private func setPassword(_ password: String, _ binaries: Binaries, _ layout: Layout) throws(PGError) {
        let input = FileManager.default.temporaryDirectory
            .appendingPathComponent("otpd-password-\(UUID().uuidString).sql").path
        defer { try? FileManager.default.removeItem(atPath: input) }
        try Self.writeFile(input, contents: "ALTER ROLE \(Self.role) PASSWORD '\(password)';\n", owner: nil)
        var arguments = [
            "--single", "-D", layout.data,
            // A failing statement ends the backend with an error status, without echoing the statement.
            "-c", "exit_on_error=on", "-c", "log_min_error_statement=panic",
            "-c", "password_encryption=scram-sha-256",
        ]
        if settings["fsync"] == "off" { arguments.append("-F") }
        arguments.append("postgres")
        let result = try Command.run(binaries.postgres, arguments, asPostgres: Command.isRoot, inputPath: input)
        guard result.status == 0 else {
            let output = result.output.replacingOccurrences(of: password, with: "***")
            throw .launch("could not set the password of \(Self.role) in \(layout.data):\n\(Command.tail(output))")
        }
    }

    /// The whole of `pg_hba.conf`: the role, with its password, over loopback TCP (there is no Unix socket).
    static let accessRules = """
        # Written by otpd at every start; edits are replaced. Only the role \(role), with the password kept in
        # \(passwordFileName) next to this file, over loopback TCP (the server has no Unix socket).
        # TYPE  DATABASE  USER  ADDRESS       METHOD
        host    all       \(role)  127.0.0.1/32  scram-sha-256

        """

    /// Replaces `pg_hba.conf` with `accessRules` unless it already says exactly that.
    private func writeAccessRules(_ layout: Layout) throws(PGError) {
        let path = layout.data + "/pg_hba.conf"
        if (try? String(contentsOfFile: path, encoding: .utf8)) == Self.accessRules { return }
        try Self.writeFile(path, contents: Self.accessRules, owner: Command.isRoot ? try Command.postgresUser() : nil)
    }

    /// Writes `contents` to a new mode-0600 file beside `path` and renames it over `path`; `owner` chowns it.
    static func writeFile(_ path: String, contents: String, owner: (uid: uid_t, gid: gid_t)?) throws(PGError) {
        let temporary = path + ".new-\(UUID().uuidString.prefix(8))"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw .launch("could not create \(temporary) (errno \(errno))") }
        let bytes = Array(contents.utf8)
        var written = 0
        while written < bytes.count {
            let count = bytes[written...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if count < 0 && errno == EINTR { continue }
            if count <= 0 { break }
            written += count
        }
        let owned = owner.map { fchown(fd, $0.uid, $0.gid) == 0 } ?? true
        let synced = fsync(fd) == 0
        closeDescriptor(fd)
        guard written == bytes.count, owned, synced, rename(temporary, path) == 0 else {
            unlink(temporary)
            throw .launch("could not write \(path)")
        }
    }

    // MARK: Starting

    private static let reservedSettings: Set<String> = ["listen_addresses", "port", "unix_socket_directories"]

    /// The `pg_ctl -o` text; pg_ctl hands it to /bin/sh, so every value is single-quoted.
    private func serverOptions(port: Int) throws(PGError) -> String {
        var options: [String] = []
        let allowed = Set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.")
        for (name, value) in settings.sorted(by: { $0.key < $1.key }) where !Self.reservedSettings.contains(name) {
            guard !name.isEmpty, name.allSatisfy({ allowed.contains($0) }) else {
                throw .launch("invalid server setting name \(name)")
            }
            options.append("-c " + Self.shellQuote("\(name)=\(value)"))
        }
        options.append("-c listen_addresses=127.0.0.1")
        options.append("-c port=\(port)")
        options.append("-c unix_socket_directories=''")
        return options.joined(separator: " ")
    }

    private static func shellQuote(_ text: String) -> String {
        "'" + text.replacingOccurrences(of: "'", with: "'\\''") + "'"
    }

    private func choosePort(_ layout: Layout) throws(PGError) -> Int {
        if let port { return port }
        if let previous = Self.previousPort(layout.data), Self.isPortFree(previous) { return previous }
        return try Self.freePort()
    }

    /// The port of the previous start, read from `postmaster.opts`.
    private static func previousPort(_ data: String) -> Int? {
        guard let text = try? String(contentsOfFile: data + "/postmaster.opts", encoding: .utf8),
            let range = text.range(of: "port=")
        else { return nil }
        let digits = text[range.upperBound...].prefix(while: \.isNumber)
        guard let port = Int(digits), (1...65535).contains(port) else { return nil }
        return port
    }

    private func createDatabase(port: Int, password: String, log: String) throws(PGError) {
        let adminURL = Self.url(port: port, password: password, database: "postgres").urlString
        var connection: PGConnection?
        var lastError: PGError?
        for _ in 0..<20 {
            do {
                connection = try PGConnection(url: adminURL, settings: PGSettings(statementTimeout: .seconds(60)))
                break
            } catch {
                lastError = error
                usleep(100_000)
            }
        }
        guard let connection else {
            throw .launch(
                "the server started but refused connections: \(lastError?.debugDescription ?? "unknown")\nlog tail (\(log)):\n\(Command.tail(Self.readLog(log, from: 0)))"
            )
        }
        defer { connection.close() }
        do {
            let existing = try connection.query("SELECT 1 FROM pg_database WHERE datname = \(database)")
            if existing.rows.isEmpty {
                try connection.execute("CREATE DATABASE \(PGQuery.quoteIdentifier(database))")
            }
        } catch  where error.sqlState == "42P04" || error.isUniqueViolation {
            // Created concurrently by someone else: fine.
        } catch {
            throw .launch("could not create database \(database): \(error.debugDescription)")
        }
    }

    // MARK: Helpers

    private func progress(_ message: String) {
        FileHandle.standardError.write(Data("otpd: \(message)\n".utf8))
    }

    /// The pid in `postmaster.pid` if that process is alive.
    static func runningPostmasterPID(_ data: String) -> pid_t? {
        guard let text = try? String(contentsOfFile: data + "/postmaster.pid", encoding: .utf8),
            let line = text.split(separator: "\n").first,
            let pid = pid_t(line.trimmingCharacters(in: .whitespaces)), pid > 0
        else { return nil }
        guard kill(pid, 0) == 0 || errno == EPERM else { return nil }
        // A stale pid file whose pid now belongs to another program must not get that program stopped.
        if let commandLine = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline"),
            !String(decoding: commandLine, as: UTF8.self).contains("postgres")
        {
            return nil
        }
        return pid
    }

    private static func fileSize(_ path: String) -> UInt64 {
        ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? NSNumber)?.uint64Value ?? 0
    }

    static func readLog(_ path: String, from offset: UInt64) -> String {
        guard let handle = FileHandle(forReadingAtPath: path) else { return "" }
        defer { try? handle.close() }
        do {
            try handle.seek(toOffset: offset)
            return String(decoding: try handle.readToEnd() ?? Data(), as: UTF8.self)
        } catch {
            return ""
        }
    }

    /// A 12-hex-digit FNV-1a hash of `text`.
    static func shortHash(_ text: String) -> String {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in text.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01b3
        }
        let hex = String(hash, radix: 16)
        return String((String(repeating: "0", count: max(0, 16 - hex.count)) + hex).prefix(12))
    }

    static func isPortFree(_ port: Int) -> Bool {
        (try? bindLoopback(port: port)) != nil
    }

    /// A currently free TCP port on 127.0.0.1 (bind to port 0 and read the assigned port).
    static func freePort() throws(PGError) -> Int {
        try bindLoopback(port: 0)
    }

    private static func bindLoopback(port: Int) throws(PGError) -> Int {
        #if canImport(Glibc) || canImport(Musl)
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #else
        let fd = socket(AF_INET, SOCK_STREAM, 0)
        #endif
        guard fd >= 0 else { throw .launch("could not create a socket to find a free port") }
        defer { closeDescriptor(fd) }
        var reuse: Int32 = 1
        _ = setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &reuse, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = in_addr_t(UInt32(0x7f00_0001).bigEndian)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard bound == 0 else { throw .launch("port \(port) on 127.0.0.1 is in use") }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let named = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard named == 0 else { throw .launch("could not read the bound port") }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}

/// Locates the PostgreSQL server binaries.
struct Binaries {
    var initdb: String
    var pgCtl: String
    /// The server itself, for single-user mode.
    var postgres: String

    /// Searches PATH, then `/usr/lib/postgresql/*/bin` (highest version first), for `initdb`, `pg_ctl` and
    /// `postgres` in one directory.
    static func find() throws(PGError) -> Binaries {
        var directories = (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map(String.init)
        let versions = ((try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql")) ?? [])
            .compactMap { name -> (Int, String)? in
                guard let version = Int(name.prefix(while: \.isNumber)) else { return nil }
                return (version, "/usr/lib/postgresql/\(name)/bin")
            }
            .sorted { $0.0 > $1.0 }
        directories += versions.map(\.1)
        for directory in directories where !directory.isEmpty {
            let initdb = directory + "/initdb"
            let pgCtl = directory + "/pg_ctl"
            let postgres = directory + "/postgres"
            if [initdb, pgCtl, postgres].allSatisfy({ FileManager.default.isExecutableFile(atPath: $0) }) {
                return Binaries(initdb: initdb, pgCtl: pgCtl, postgres: postgres)
            }
        }
        throw .launch(
            "PostgreSQL server binaries not found (looked for initdb, pg_ctl and postgres in PATH and /usr/lib/postgresql/*/bin); install the postgresql server package"
        )
    }
}

/// Runs helper commands, as the `postgres` user when this process is root.
enum Command {
    struct Result {
        var status: Int32
        var output: String
    }

    static var isRoot: Bool { geteuid() == 0 }

    /// The `postgres` user's uid and gid.
    static func postgresUser() throws(PGError) -> (uid: uid_t, gid: gid_t) {
        guard let entry = getpwnam("postgres") else {
            throw .launch("running as root requires a 'postgres' system user to run initdb and pg_ctl")
        }
        return (entry.pointee.pw_uid, entry.pointee.pw_gid)
    }

    static func runuserPath() throws(PGError) -> String {
        for candidate in ["/usr/sbin/runuser", "/sbin/runuser", "/usr/bin/runuser", "/bin/runuser"]
        where FileManager.default.isExecutableFile(atPath: candidate) {
            return candidate
        }
        throw .launch("running as root requires runuser (util-linux) to run initdb and pg_ctl as postgres")
    }

    /// Whether the postgres user can traverse into `path` (or its nearest existing ancestor).
    static func postgresCanTraverse(_ path: String) -> Bool {
        var existing = path
        while !FileManager.default.fileExists(atPath: existing), existing != "/" {
            existing = (existing as NSString).deletingLastPathComponent
        }
        let test =
            ["/usr/bin/test", "/bin/test"].first { FileManager.default.isExecutableFile(atPath: $0) } ?? "/usr/bin/test"
        guard let result = try? run(test, ["-x", existing], asPostgres: true) else { return false }
        return result.status == 0
    }

    /// Runs `executable` with `arguments`, stdin from `inputPath` (opened by this process), capturing stdout and
    /// stderr through a temporary file.
    static func run(
        _ executable: String,
        _ arguments: [String],
        asPostgres: Bool,
        inputPath: String? = nil
    ) throws(PGError) -> Result {
        let command =
            asPostgres ? [try runuserPath(), "-u", "postgres", "--", executable] + arguments : [executable] + arguments
        let outputPath = FileManager.default.temporaryDirectory
            .appendingPathComponent("otpd-command-\(UUID().uuidString).log").path
        defer { try? FileManager.default.removeItem(atPath: outputPath) }
        let status = ChildProcess.run(
            command[0],
            Array(command.dropFirst()),
            inputPath: inputPath,
            outputPath: outputPath
        )
        guard let status else {
            throw .launch("could not run \(executable)")
        }
        return Result(status: status, output: EmbeddedPostgres.readLog(outputPath, from: 0))
    }

    /// The last `lines` lines of `text`.
    static func tail(_ text: String, lines: Int = 20) -> String {
        text.split(separator: "\n", omittingEmptySubsequences: false).suffix(lines).joined(separator: "\n")
    }
}
