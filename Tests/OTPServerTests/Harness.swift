import EventStore
import Foundation
import Logging
import OTPDomain
import OTPServer
import OTPService
import OTPTesting
import Postgres
import PostgresTesting
import ServiceLifecycle
import Synchronization
import Testing

/// The repository's root, found from this file's path.
let repositoryRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().path

/// Collects what the log driver prints, so a test can read codes as a developer reads the server's output.
final class CapturedLog: Sendable {
    private let lines = Mutex<[String]>([])

    func append(_ text: String) {
        lines.withLock { $0.append(contentsOf: text.split(separator: "\n").map(String.init)) }
    }
    var all: [String] { lines.withLock { $0 } }

    /// Every code printed for a session, in order.
    func codes(session: String) -> [String] {
        var out: [String] = []
        var inSession = false
        for line in all {
            if line.hasPrefix("[log driver]") {
                inSession = line.contains("session \(session),")
            } else if inSession, let r = line.range(of: #"code is \d+(, \d)*"#, options: .regularExpression) {
                // "code is 123456" (SMS, e-mail, push) or "code is 1, 2, 3, 4, 5, 6" (voice).
                out.append(String(line[r].dropFirst(8).filter(\.isNumber)))
            }
        }
        return out
    }
}

/// Polls `condition` until it holds or `timeout` passes; no fixed sleeps.
func eventually<T>(
    timeout: Duration = .seconds(10),
    _ what: String,
    _ condition: () async throws -> T?
) async throws -> T {
    let deadline = ContinuousClock.now + timeout
    while true {
        if let value = try await condition() { return value }
        if ContinuousClock.now > deadline { throw HarnessError("timed out waiting for \(what)") }
        try await Task.sleep(for: .milliseconds(20))
    }
}

struct HarnessError: Error, CustomStringConvertible {
    var description: String
    init(_ d: String) { description = d }
}

/// A real otpd server (RESP server, dispatcher, service) on a free loopback port, on a fresh database.
/// The secret every test server uses (so a test can compute what the server stores).
let testSecret: [UInt8] = Array(repeating: 7, count: 32)

final class TestServer: Sendable {
    let port: Int
    /// The HTTP side's port, when the test asked for it (`http: true`).
    let httpPort: Int?
    let databaseURL: String
    let log: CapturedLog
    let app: RunningApplication
    let task: Task<Void, any Error>
    var pool: PGPool { app.pool }
    var sessions: SessionService { app.sessions }

    /// Starts the application as `otpd` does (the same builder), on a fresh database unless one is given; its
    /// logger prints warnings and errors unless one is given.
    static func start(
        label: String,
        config: String = "",
        databaseURL: String? = nil,
        requestTimeout: Duration = .seconds(30),
        writeTimeout: Duration = .seconds(30),
        authTimeout: Duration = .seconds(10),
        dispatcher: Dispatcher.Settings? = nil,
        http: Bool = false,
        poolSize: Int = 4,
        subscriberQueueBytes: Int? = nil,
        logger: Logger? = nil
    ) async throws -> TestServer {
        let url: String
        if let databaseURL { url = databaseURL } else { url = try await TestDatabase.make(label: label) }
        var c = try Configuration.parse(config, file: "test.toml")
        c.databaseURL = url
        c.listen = HostPort(host: "127.0.0.1", port: 0)
        c.databasePoolSize = poolSize
        let log = CapturedLog()
        let bound = Mutex<Int?>(nil)
        let httpBound = Mutex<Int?>(nil)
        if http { c.httpListen = HostPort(host: "127.0.0.1", port: 0) }
        var options = Application.Options()
        options.onHTTPListening = { address in httpBound.withLock { $0 = address.port } }
        options.secrets = Secrets(secret: testSecret)
        options.logDriver = LogDriver(write: { log.append($0) })
        options.dispatcher = dispatcher ?? options.dispatcher
        options.dispatcher.pollInterval = .milliseconds(50)
        options.server.requestTimeout = requestTimeout
        options.server.writeTimeout = writeTimeout
        options.server.authTimeout = authTimeout
        if let subscriberQueueBytes { options.server.subscriberQueueBytes = subscriberQueueBytes }
        options.schemaDirectory = repositoryRoot + "/schema"
        options.routeLatencyRefresh = .milliseconds(200)
        options.onListening = { address in bound.withLock { $0 = address.port } }
        var quiet = Logger(label: "otpd-test")
        quiet.logLevel = ProcessInfo.processInfo.environment["OTPD_TEST_DEBUG"] != nil ? .debug : .warning
        let logger = logger ?? quiet
        let app = try await Application(configuration: c, options: options, logger: logger).start()
        let task = Task { try await app.run() }
        let port = try await eventually("the server to listen") { bound.withLock { $0 } }
        let httpPort = http ? try await eventually("the HTTP side to listen") { httpBound.withLock { $0 } } : nil
        return TestServer(port: port, httpPort: httpPort, databaseURL: url, log: log, app: app, task: task)
    }

    private init(
        port: Int,
        httpPort: Int?,
        databaseURL: String,
        log: CapturedLog,
        app: RunningApplication,
        task: Task<Void, any Error>
    ) {
        self.port = port
        self.httpPort = httpPort
        self.databaseURL = databaseURL
        self.log = log
        self.app = app
        self.task = task
    }

    /// The code the log driver printed for a session (the latest), waiting for the dispatcher.
    func code(session: String) async throws -> String {
        try await eventually("a code for \(session) in the log") { log.codes(session: session).last }
    }

    /// Waits until the session's current step was handed to the provider.
    func waitUntilSent(_ session: String) async throws {
        _ = try await eventually("\(session) sent") {
            pairs(try await redisCLI(port, ["STATUS", session]))["status"] == "sent" ? true : nil
        }
    }

    /// Shuts down as on SIGTERM: the server, then the dispatcher, scheduler and janitor, then the pool.
    func stop() async {
        await app.triggerGracefulShutdown()
        _ = try? await task.value
    }
}

/// Event types of every stream, read straight from the database.
func eventTypes(_ databaseURL: String) throws -> [String: [String]] {
    let conn = try PGConnection(url: databaseURL)
    defer { conn.close() }
    var out: [String: [String]] = [:]
    for row in try conn.query("SELECT stream_id, type FROM events ORDER BY stream_id, version").rows {
        out[try row.decode("stream_id"), default: []].append(try row.decode("type"))
    }
    return out
}

/// redis-cli against the test server; returns its output lines.
func redisCLI(_ port: Int, _ args: [String], extra: [String] = []) async throws -> [String] {
    let r = try await run(["redis-cli", "-p", String(port)] + extra + args)
    #expect(r.status == 0, "redis-cli failed: \(r.stderr)")
    var lines = r.stdout.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
    if lines.last == "" { lines.removeLast() }
    return lines
}

/// Runs a Python script (redis-py or raw sockets) with PORT in its environment; returns its output.
func python(_ port: Int, _ script: String, env: [String: String] = [:]) async throws -> String {
    var e = env
    e["PORT"] = String(port)
    let r = try await run(["python3", "-c", script], environment: e)
    guard r.status == 0 else { throw HarnessError("python failed (\(r.status)): \(r.stderr)\n\(r.stdout)") }
    return r.stdout
}

/// A RESP2 flat map reply as printed by redis-cli (key, value, key, value ...) into a dictionary.
func pairs(_ lines: [String]) -> [String: String] {
    var d: [String: String] = [:]
    var i = 0
    while i + 1 < lines.count {
        d[lines[i]] = lines[i + 1]
        i += 2
    }
    return d
}
