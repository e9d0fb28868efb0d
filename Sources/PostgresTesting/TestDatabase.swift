import Foundation
import Postgres
import Synchronization

#if canImport(Glibc)
@preconcurrency import Glibc
#elseif canImport(Musl)
@preconcurrency import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Gives each test (suite) a fresh, empty PostgreSQL database.
///
/// The admin URL comes from `OTPD_TEST_DATABASE_URL` when set. Otherwise one throwaway cluster is
/// started per test process (in a fresh `/var/tmp/otpd-test-XXXXXX` directory, fsync off) and removed
/// when the process exits, even if it is killed (see `TestClusterCleanup`). Safe to call concurrently.
public enum TestDatabase {
    /// The environment variable naming an existing server's admin URL.
    public static let environmentVariable = "OTPD_TEST_DATABASE_URL"

    /// Creates `t_<label>_<random>` and returns its URL.
    public static func make(label: String) async throws -> String {
        let admin = try await SharedCluster.shared.admin()
        let name = databaseName(label: label)
        try await admin.worker.submit { connection in
            try connection.execute("CREATE DATABASE \(PGQuery.quoteIdentifier(name))")
        }
        var url = admin.url
        url.database = name
        return url.urlString
    }

    /// The admin URL (environment or throwaway cluster), starting the cluster on first use.
    public static func adminURL() async throws -> String {
        try await SharedCluster.shared.admin().url.urlString
    }

    /// A database name from `label`: lowercase letters, digits and underscores plus 8 random hex digits.
    static func databaseName(label: String) -> String {
        let cleaned = String(
            label.lowercased().map { ($0.isASCII && ($0.isLetter || $0.isNumber)) ? $0 : "_" }.prefix(40)
        )
        let random = String(UInt32.random(in: 0...UInt32.max), radix: 16)
        return "t_\(cleaned)_\(String(repeating: "0", count: 8 - random.count))\(random)"
    }
}

/// Runs blocking work (e.g. `EmbeddedPostgres.start()`) on a new thread so it never blocks Swift's cooperative pool.
public enum BlockingThread {
    /// Runs `body` on a fresh thread and returns its result.
    public static func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
            let thread = Thread {
                do {
                    continuation.resume(returning: try body())
                } catch {
                    continuation.resume(throwing: error)
                }
            }
            thread.name = "otpd-blocking"
            thread.start()
        }
    }
}

/// Makes sure throwaway clusters never outlive the test process.
///
/// For each registered cluster a watchdog (`setsid bash -c …`) polls the test process once a second and,
/// once it is gone, continues the postmaster (a test may have stopped it with SIGSTOP), runs
/// `pg_ctl stop -m immediate` and `rm -rf` on the directory; an `atexit` handler does the same on normal exit.
public enum TestClusterCleanup {
    struct Entry: Sendable {
        var dataDirectory: String
        var directory: String
    }

    static let entries = Mutex<(handlerInstalled: Bool, list: [Entry])>((false, []))

    /// Registers `cluster` (whose files all live in `directory`) for cleanup when this process ends.
    public static func register(_ cluster: EmbeddedPostgres, removing directory: String) {
        let entry = Entry(dataDirectory: cluster.effectiveDataDirectory, directory: directory)
        let installHandler = entries.withLock { state in
            state.list.append(entry)
            defer { state.handlerInstalled = true }
            return !state.handlerInstalled
        }
        if installHandler {
            atexit { TestClusterCleanup.cleanUpAtExit() }
        }
        startWatchdog(
            stopCommand: (try? cluster.stopCommandLine(mode: "immediate")) ?? [],
            dataDirectory: entry.dataDirectory,
            directory: directory
        )
    }

    private static func startWatchdog(stopCommand: [String], dataDirectory: String, directory: String) {
        // A stopped postmaster would leave SIGQUIT pending; once continued it kills its (stopped) backends.
        let script = """
            pid="$1"; data="$2"; dir="$3"; shift 3
            while kill -0 "$pid" 2>/dev/null; do sleep 1; done
            pm=$(head -n 1 "$data/postmaster.pid" 2>/dev/null)
            case "$pm" in ''|*[!0-9]*) ;; *) kill -CONT "$pm" 2>/dev/null ;; esac
            if [ "$#" -gt 0 ]; then "$@" >/dev/null 2>&1; fi
            rm -rf "$dir"
            """
        let bash =
            ["/bin/bash", "/usr/bin/bash"].first { FileManager.default.isExecutableFile(atPath: $0) } ?? "/bin/bash"
        let arguments =
            [bash, "-c", script, "otpd-test-watchdog", String(getpid()), dataDirectory, directory] + stopCommand
        if FileManager.default.isExecutableFile(atPath: "/usr/bin/setsid") {
            // Its own session (a Ctrl-C to the test's process group does not kill it); -f returns at once.
            _ = ChildProcess.run("/usr/bin/setsid", ["-f"] + arguments)
        } else {
            _ = ChildProcess.run(bash, Array(arguments.dropFirst()), wait: false)
        }
    }

    /// Immediate shutdown (SIGQUIT, what `pg_ctl stop -m immediate` sends) and removal of every registered cluster.
    static func cleanUpAtExit() {
        let list = entries.withLock { state in
            let list = state.list
            state.list.removeAll()
            return list
        }
        for entry in list {
            if let text = try? String(contentsOfFile: entry.dataDirectory + "/postmaster.pid", encoding: .utf8),
                let line = text.split(separator: "\n").first,
                let pid = pid_t(line.trimmingCharacters(in: .whitespaces)), pid > 0, kill(pid, SIGQUIT) == 0
            {
                _ = kill(pid, SIGCONT)
                for _ in 0..<100 where kill(pid, 0) == 0 {
                    usleep(20_000)
                }
            }
            try? FileManager.default.removeItem(atPath: entry.directory)
        }
    }
}

/// The per-process admin connection, created once.
actor SharedCluster {
    struct Admin: Sendable {
        var url: PGURL
        var worker: PGWorker
    }

    static let shared = SharedCluster()

    private var setup: Task<Admin, any Error>?

    func admin() async throws -> Admin {
        if let setup { return try await setup.value }
        let task = Task { try await Self.launch() }
        setup = task
        return try await task.value
    }

    private static func launch() async throws -> Admin {
        let urlString: String
        if let configured = ProcessInfo.processInfo.environment[TestDatabase.environmentVariable], !configured.isEmpty {
            urlString = configured
        } else {
            urlString = try await BlockingThread.run { try startThrowawayCluster() }
        }
        let url = try PGURL(parsing: urlString)
        let worker = PGWorker(
            url: urlString,
            settings: PGSettings(statementTimeout: .seconds(60)),
            name: "otpd-test-admin"
        )
        return Admin(url: url, worker: worker)
    }

    /// Creates `/var/tmp/otpd-test-XXXXXX`, registers its cleanup and starts a cluster there.
    private static func startThrowawayCluster() throws -> String {
        var template = Array("/var/tmp/otpd-test-XXXXXX".utf8CString)
        let directory: String = try template.withUnsafeMutableBufferPointer { buffer in
            guard let base = buffer.baseAddress, mkdtemp(base) != nil else {
                throw PGError(code: .launch, message: "could not create a temporary directory in /var/tmp")
            }
            return String(cString: base)
        }
        if geteuid() == 0, let entry = getpwnam("postgres") {
            _ = chown(directory, entry.pointee.pw_uid, entry.pointee.pw_gid)
        }
        let cluster = EmbeddedPostgres(
            dataDirectory: directory + "/data",
            settings: [
                "fsync": "off",
                "synchronous_commit": "off",
                "full_page_writes": "off",
                "max_connections": "300",
            ]
        )
        TestClusterCleanup.register(cluster, removing: directory)
        return try cluster.start()
    }
}
