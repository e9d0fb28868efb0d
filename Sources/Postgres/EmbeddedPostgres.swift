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
/// `start()` creates the cluster on first use (`initdb -U otpd --auth=trust -E UTF8 --locale=C`),
/// starts it listening only on 127.0.0.1 (no Unix socket) and creates the database. The port is the
/// `port` given to `init`, else the port of the previous start when it is still free, else a free one.
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

    /// Creates the cluster when missing, starts it on a loopback port, creates the database and returns its URL.
    ///
    /// The URL has the form `postgresql://otpd@127.0.0.1:<port>/<database>`. Errors have code `.launch`
    /// and a message that includes the relevant log tail.
    public func start() throws(PGError) -> String {
        let binaries = try Binaries.find()
        let layout = layout()
        if layout.relocated {
            progress("the postgres user cannot reach \(dataDirectory); using \(layout.data) instead")
        }
        try prepareDirectories(layout)

        if !FileManager.default.fileExists(atPath: layout.data + "/PG_VERSION") {
            progress("creating PostgreSQL cluster in \(layout.data) …")
            var arguments = [
                "-D", layout.data, "-U", "otpd", "--auth=trust", "-E", "UTF8", "--locale=C", "--no-instructions",
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

        try createDatabase(port: chosenPort, log: layout.log)
        return PGURL(user: "otpd", host: "127.0.0.1", port: chosenPort, database: database).urlString
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
            guard fileManager.createFile(atPath: layout.log, contents: nil) else {
                throw .launch("could not create the log file \(layout.log)")
            }
        }
        if let owner { _ = chown(layout.log, owner.uid, owner.gid) }
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

    private func createDatabase(port: Int, log: String) throws(PGError) {
        let adminURL = PGURL(user: "otpd", host: "127.0.0.1", port: port, database: "postgres").urlString
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

    /// Searches PATH, then `/usr/lib/postgresql/*/bin` (highest version first), for `initdb` and `pg_ctl`.
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
            if FileManager.default.isExecutableFile(atPath: initdb), FileManager.default.isExecutableFile(atPath: pgCtl)
            {
                return Binaries(initdb: initdb, pgCtl: pgCtl)
            }
        }
        throw .launch(
            "PostgreSQL server binaries not found (looked for initdb and pg_ctl in PATH and /usr/lib/postgresql/*/bin); install the postgresql server package"
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

    /// Runs `executable` with `arguments`, capturing stdout and stderr through a temporary file.
    static func run(_ executable: String, _ arguments: [String], asPostgres: Bool) throws(PGError) -> Result {
        let command =
            asPostgres ? [try runuserPath(), "-u", "postgres", "--", executable] + arguments : [executable] + arguments
        let outputPath = FileManager.default.temporaryDirectory
            .appendingPathComponent("otpd-command-\(UUID().uuidString).log").path
        defer { try? FileManager.default.removeItem(atPath: outputPath) }
        guard let status = ChildProcess.run(command[0], Array(command.dropFirst()), outputPath: outputPath) else {
            throw .launch("could not run \(executable)")
        }
        return Result(status: status, output: EmbeddedPostgres.readLog(outputPath, from: 0))
    }

    /// The last `lines` lines of `text`.
    static func tail(_ text: String, lines: Int = 20) -> String {
        text.split(separator: "\n", omittingEmptySubsequences: false).suffix(lines).joined(separator: "\n")
    }
}
