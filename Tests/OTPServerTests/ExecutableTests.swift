import Foundation
import OTPTesting
import Postgres
import PostgresTesting
import Synchronization
import Testing

/// The real `otpd` executable: flags, the listening line, replies, and a clean exit on SIGTERM.
@Suite(.heavy) struct ExecutableTests {
    /// The otpd binary built beside the test bundle.
    static var binary: String { path(of: "otpd") }

    static func path(of executable: String) -> String {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent(executable)
            .path
    }

    /// The path of an executable built beside the test bundle, or nil (recording an issue) when it is missing.
    static func built(_ executable: String) -> String? {
        let path = path(of: executable)
        guard FileManager.default.isExecutableFile(atPath: path) else {
            Issue.record("\(executable) was not built at \(path)")
            return nil
        }
        return path
    }

    @Test func otpdPrintsItsAddressServesAndExitsZeroOnSIGTERM() async throws {
        guard Self.built("otpd") != nil else { return }
        let url = try await TestDatabase.make(label: "binary")
        let dataDir = "/var/tmp/otpd-bin-\(UUID().uuidString.prefix(8))"
        defer { Self.cleanUp(dataDir) }
        let (p, port, lines) = try await launch(url, config: "", dataDir: dataDir)
        defer { if p.isRunning { p.terminate() } }
        #expect(
            lines.all.contains {
                $0.range(of: #"^otpd listening on 127\.0\.0\.1:\d+$"#, options: .regularExpression) != nil
            }
        )
        #expect(try await redisCLI(port, ["PING"]) == ["PONG"])
        _ = try await redisCLI(port, ["ISSUE", "x1", "email:a@example.com"])
        #expect(
            try await eventually("the log driver's message") {
                lines.all.contains { $0.contains("Your otpd code is") } ? true : nil
            }
        )
        let status: Int32 = try await withCheckedThrowingContinuation { c in
            p.terminationHandler = { c.resume(returning: $0.terminationStatus) }
            kill(p.processIdentifier, SIGTERM)
        }
        #expect(status == 0)
        #expect(FileManager.default.fileExists(atPath: dataDir + "/secret"))
    }

    /// Removes a test's data directory and the config and output files `launch` put beside it.
    static func cleanUp(_ dataDir: String) {
        let parent = (dataDir as NSString).deletingLastPathComponent
        let name = (dataDir as NSString).lastPathComponent
        for f in (try? FileManager.default.contentsOfDirectory(atPath: parent)) ?? [] where f.hasPrefix(name) {
            try? FileManager.default.removeItem(atPath: parent + "/" + f)
        }
    }

    /// Starts the binary on a database; returns the process, its port and its output (stdout, read from a file
    /// as it grows: no pipe readability handlers, see `run`).
    func launch(_ url: String, config: String, dataDir: String) async throws -> (Process, Int, OutputFile) {
        let configPath = dataDir + ".toml"
        try config.write(toFile: configPath, atomically: true, encoding: .utf8)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Self.binary)
        p.arguments = ["--config", configPath, "--listen", "127.0.0.1:0", "--database-url", url, "--data-dir", dataDir]
        var env = ProcessInfo.processInfo.environment
        env["OTPD_SCHEMA_DIR"] = repositoryRoot + "/schema"
        p.environment = env
        let outPath = dataDir + ".\(UUID().uuidString.prefix(4)).out"
        _ = FileManager.default.createFile(atPath: outPath, contents: nil)
        guard let out = FileHandle(forWritingAtPath: outPath) else { throw HarnessError("no output file") }
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        try p.run()
        try? out.close()
        let lines = OutputFile(path: outPath)
        let listening = try await eventually(timeout: .seconds(30), "the listening line") {
            lines.all.first { $0.hasPrefix("otpd listening on ") }
        }
        return (p, Int(listening.split(separator: ":").last ?? "") ?? 0, lines)
    }

    @Test func pendingTimersFireOnceAfterKillMinus9AndARestart() async throws {
        guard Self.built("otpd") != nil else { return }
        let url = try await TestDatabase.make(label: "kill9")
        let dataDir = "/var/tmp/otpd-kill-\(UUID().uuidString.prefix(8))"
        defer { Self.cleanUp(dataDir) }
        let config = """
            [[policy]]
            name = "default"
            steps = [ { channel = "sms", timeout = "3s" }, { channel = "email" } ]
            """
        let (first, port, _) = try await launch(url, config: config, dataDir: dataDir)
        // A failure before the kill must not leave it running (one did, for an hour, when redis-cli was missing).
        defer {
            if first.isRunning {
                kill(first.processIdentifier, SIGKILL)
                first.waitUntilExit()
            }
        }
        for i in 0..<5 {
            _ = try await redisCLI(port, ["ISSUE", "k\(i)", "sms:+1555000000\(i)", "email:k\(i)@example.com"])
        }
        _ = try await eventually("five SMS sent") { () -> Bool? in
            let types = try eventTypes(url)
            return types.count == 5 && types.values.allSatisfy { $0.contains("sent") } ? true : nil
        }
        kill(first.processIdentifier, SIGKILL)
        first.waitUntilExit()

        let (second, _, _) = try await launch(url, config: config, dataDir: dataDir)
        defer {
            kill(second.processIdentifier, SIGTERM)
            second.waitUntilExit()
        }
        let streams = try await eventually(timeout: .seconds(20), "every timer fired after the restart") {
            () -> [String: [String]]? in
            let types = try eventTypes(url)
            return types.values.allSatisfy { $0.filter { $0 == "sent" }.count == 2 } ? types : nil
        }
        for (stream, types) in streams {
            #expect(types == ["issued", "sent", "timed_out", "escalated", "sent"], "\(stream)")
        }
    }

    /// The test servers' secret in a file otpctl accepts (0600).
    static func secretFile() throws -> String {
        let file = "/var/tmp/otpd-secret-\(UUID().uuidString.prefix(8))"
        try Data((testSecret.map { String(format: "%02x", $0) }.joined() + "\n").utf8).write(
            to: URL(fileURLWithPath: file)
        )
        try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: file)
        return file
    }

    /// `otpctl erase --destination` erases every session of one person, found by the keyed hash pacing keeps,
    /// and leaves nothing keyed by that address in the pacing tables.
    @Test func otpctlEraseErasesEverySessionOfADestination() async throws {
        guard let otpctl = Self.built("otpctl") else { return }
        let server = try await TestServer.start(label: "erasedest", config: "[limits]\nmin_gap_per_channel = \"0s\"")
        defer { Task { await server.stop() } }
        let secret = try Self.secretFile()
        defer { try? FileManager.default.removeItem(atPath: secret) }
        for (s, to) in [("x1", "email:p@example.com"), ("x2", "email:p@example.com"), ("x3", "email:q@example.com")] {
            _ = try await redisCLI(server.port, ["ISSUE", s, to])
        }
        let db = ["--database-url", server.databaseURL, "--secret-file", secret]
        let r = try await run([otpctl, "erase"] + db + ["--destination", "email:p@example.com"])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout.contains("erased: x1") && r.stdout.contains("erased: x2") && !r.stdout.contains("x3"))
        #expect(r.stdout.contains("erased 2 sessions"))
        let types = try eventTypes(server.databaseURL)
        #expect(types["default/x1"]?.last == "erased")
        #expect(types["default/x2"]?.last == "erased")
        #expect(types["default/x3"]?.contains("erased") == false)
        let left = try await server.pool.withConnection { conn in
            try ["destination_sessions", "session_starts", "sends"].map { table in
                try conn.query("SELECT count(*) FROM \(unescaped: table)").rows[0].decode(0, as: Int.self)
            }
        }
        #expect(left == [1, 1, 1])  // only q@example.com's rows remain
        let again = try await run([otpctl, "erase"] + db + ["--destination", "email:p@example.com"])
        #expect(again.stdout.contains("erased 0 sessions"))
    }

    /// An operator lifts an abuse block with `otpctl unblock`, which needs otpd's secret to find the destination.
    @Test func otpctlUnblockLiftsTheBlockOnADestination() async throws {
        guard let otpctl = Self.built("otpctl") else { return }
        let server = try await TestServer.start(
            label: "unblock",
            config: "[limits]\nconsecutive_failures_per_destination = 1\nmin_gap_per_channel = \"0s\""
        )
        defer { Task { await server.stop() } }
        let dir = "/var/tmp/otpd-unblock-\(UUID().uuidString.prefix(8))"
        defer { Self.cleanUp(dir) }
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let secretFile = dir + "/secret"
        try Data((testSecret.map { String(format: "%02x", $0) }.joined() + "\n").utf8).write(
            to: URL(fileURLWithPath: secretFile)
        )
        try FileManager.default.setAttributes([.posixPermissions: 0o600], ofItemAtPath: secretFile)  // else refused

        _ = try await redisCLI(server.port, ["ISSUE", "u1", "sms:+15557654321"])
        let code = try await server.code(session: "u1")
        _ = try await redisCLI(server.port, ["VERIFY", "u1", code == "000000" ? "111111" : "000000"])
        #expect(
            try await redisCLI(server.port, ["ISSUE", "u2", "sms:+15557654321"]).first?.hasPrefix("RATELIMITED") == true
        )

        let db = ["--database-url", server.databaseURL]
        let missing = try await run([otpctl, "unblock"] + db + ["--data-dir", dir + "/nowhere", "sms:+15557654321"])
        #expect(missing.status != 0)
        #expect(missing.stderr.contains("no secret at"), "\(missing.stderr)")
        let bad = try await run([otpctl, "unblock"] + db + ["--secret-file", secretFile, "sms:12345"])
        #expect(bad.status != 0)
        let lifted = try await run([otpctl, "unblock"] + db + ["--secret-file", secretFile, "sms:+15557654321"])
        #expect(lifted.status == 0)
        #expect(lifted.stdout.contains("unblocked: 1 consecutive failed verifications cleared"), "\(lifted.stdout)")
        #expect(pairs(try await redisCLI(server.port, ["ISSUE", "u3", "sms:+15557654321"]))["session"] == "u3")
        let twice = try await run([otpctl, "unblock"] + db + ["--secret-file", secretFile, "sms:+15557654321"])
        #expect(twice.stdout.contains("not blocked"))
    }

    /// R1: `kill -9` in the middle of a stream of pipelined ISSUEs. Every ISSUE the client saw answered is in
    /// the log after a restart, and each of those sessions' step timers fires exactly once.
    @Test func killMinus9UnderLoadLosesNothingThatWasAnswered() async throws {
        guard Self.built("otpd") != nil else { return }
        let url = try await TestDatabase.make(label: "kill9load")
        let dataDir = "/var/tmp/otpd-killload-\(UUID().uuidString.prefix(8))"
        defer { Self.cleanUp(dataDir) }
        let config = """
            [channel.sms]
            driver = "null"
            [channel.email]
            driver = "null"
            [[policy]]
            name = "default"
            steps = [ { channel = "sms", timeout = "2s" }, { channel = "email" } ]
            [limits]
            prefix_sends_per_minute = 1000000
            """
        let (first, port, _) = try await launch(url, config: config, dataDir: dataDir)
        // Whatever happens below, the first server goes (and with it the client, which stops when it is gone).
        defer { if first.isRunning { kill(first.processIdentifier, SIGKILL) } }
        let acked = dataDir + ".acked"
        _ = FileManager.default.createFile(atPath: acked, contents: nil)
        // Four connections, 20 ISSUEs per pipeline; an ISSUE counts as answered only when its reply arrived.
        let client = Task {
            try await python(
                port,
                """
                import os, threading, redis
                port, path = int(os.environ['PORT']), os.environ['ACKED']
                lock = threading.Lock()
                def issue(k):
                    r = redis.Redis(port=port, protocol=2)
                    n = 0
                    while True:
                        ids = ['L%d_%d' % (k, n + i) for i in range(20)]
                        p = r.pipeline(transaction=False)
                        for j, s in enumerate(ids):
                            p.execute_command('ISSUE', s, 'sms:+1555%d%06d' % (k, n + j), 'email:%s@example.com' % s)
                        try:
                            replies = p.execute(raise_on_error=False)
                        except Exception:
                            return  # the server is gone
                        with lock, open(path, 'a') as f:
                            for s, reply in zip(ids, replies):
                                if not isinstance(reply, Exception):
                                    f.write(s + '\\n')
                        n += 20
                threads = [threading.Thread(target=issue, args=(k,)) for k in range(4)]
                for t in threads: t.start()
                for t in threads: t.join()
                """,
                env: ["ACKED": acked]
            )
        }
        _ = try await eventually(timeout: .seconds(60), "200 answered ISSUEs") { () -> Bool? in
            let lines = (try? String(contentsOfFile: acked, encoding: .utf8))?.split(separator: "\n") ?? []
            return lines.count >= 200 ? true : nil
        }
        kill(first.processIdentifier, SIGKILL)
        first.waitUntilExit()
        _ = try await client.value
        let answered = Set(try String(contentsOfFile: acked, encoding: .utf8).split(separator: "\n").map(String.init))
        #expect(answered.count >= 200)

        let (second, _, _) = try await launch(url, config: config, dataDir: dataDir)
        defer {
            kill(second.processIdentifier, SIGTERM)
            second.waitUntilExit()
        }
        let issued = Set(try eventTypes(url).keys.map { String($0.dropFirst("default/".count)) })
        #expect(answered.subtracting(issued).isEmpty, "answered but not recorded: \(answered.subtracting(issued))")
        // Every answered session moves on once after the restart: its step timer fires once, or, when its SMS
        // was in the provider's hands at the kill with the outcome unrecorded, the step fails over instead of
        // sending the SMS again.
        let streams = try await eventually(timeout: .seconds(60), "every answered session escalated once") {
            () -> [String: [String]]? in
            let types = try eventTypes(url)
            let done = answered.allSatisfy { types["default/" + $0]?.contains("escalated") == true }
            return done ? types : nil
        }
        for s in answered {
            let types = streams["default/" + s] ?? []
            #expect(types.filter { $0 == "escalated" }.count == 1, "\(s): \(types)")
            #expect(types.filter { $0 == "timed_out" }.count <= 1, "\(s): \(types)")
            #expect(types.filter { $0 == "issued" }.count == 1, "\(s): \(types)")
            #expect(types.filter { $0 == "sent" }.count <= 2, "\(s): \(types)")
        }
    }

    /// R3: three instances of the real binary on one database, one killed with `SIGKILL` while SMS are going
    /// out and step timers are pending. Every session still escalates once, and the providers (the log
    /// drivers' output of all three) were handed each step's message once: a message the killed instance had
    /// handed over without recording it is not sent again, its step fails over.
    @Test func threeInstancesOneKilledEachDeadlineOnceEachStepOneMessage() async throws {
        guard Self.built("otpd") != nil else { return }
        let url = try await TestDatabase.make(label: "three")
        let dataDir = "/var/tmp/otpd-three-\(UUID().uuidString.prefix(8))"
        defer { Self.cleanUp(dataDir) }
        let config = """
            [[policy]]
            name = "default"
            steps = [ { channel = "sms", timeout = "2s" }, { channel = "email" } ]
            """
        var instances: [(process: Process, port: Int, out: OutputFile)] = []
        for _ in 0..<3 { instances.append(try await launch(url, config: config, dataDir: dataDir)) }
        defer {
            for i in instances where i.process.isRunning {
                kill(i.process.processIdentifier, SIGTERM)
                i.process.waitUntilExit()
            }
        }
        let sessions = (0..<60).map { "t\($0)" }
        for (n, s) in sessions.enumerated() {
            let port = instances[n % 3].port
            _ = try await redisCLI(port, ["ISSUE", s, "sms:+1555100\(1000 + n)", "email:\(s)@example.com"])
        }
        // Kill one while deadlines are firing, so that it may hold claimed timers and messages.
        _ = try await eventually(timeout: .seconds(30), "the first deadlines fired") { () -> Bool? in
            try eventTypes(url).values.filter { $0.contains("timed_out") }.count >= 5 ? true : nil
        }
        kill(instances[0].process.processIdentifier, SIGKILL)
        instances[0].process.waitUntilExit()

        // The killed instance's claimed messages come back after their 30 s lease, its timers after 2 s. A
        // message it had handed to the provider without recording it is not sent again: that step fails over.
        let normal = ["issued", "sent", "timed_out", "escalated", "sent"]
        let failedOver = ["issued", "delivery_failed", "escalated", "sent"]
        // The e-mail handed over by the killed instance, unrecorded: the last step fails and nothing is left.
        let lastFailed = ["issued", "sent", "timed_out", "escalated", "delivery_failed", "exhausted"]
        var unfinished: [String] = []
        let streams: [String: [String]]
        do {
            streams = try await eventually(timeout: .seconds(90), "every session escalated and on its last step") {
                () -> [String: [String]]? in
                let types = try eventTypes(url)
                unfinished = sessions.filter {
                    ![normal, failedOver, lastFailed].contains(types["default/" + $0] ?? [])
                }
                .map { "\($0): \(types["default/" + $0] ?? [])" }
                return unfinished.isEmpty ? types : nil
            }
        } catch {
            Issue.record("\(error); not there: \(unfinished.joined(separator: "; "))")
            return
        }
        // Provider hits, not distinct ids: every line the log drivers printed is one message handed over.
        var hits: [String: [String]] = [:]
        for line in instances.flatMap({ $0.out.all }) {
            guard let session = line.firstMatch(of: /session (t[0-9]+), message (m_[0-9a-f]+)/) else { continue }
            hits[String(session.1), default: []].append(String(session.2))
        }
        for s in sessions {
            let ids = hits[s] ?? []
            #expect(Set(ids).count == ids.count, "\(s): a step was sent twice: \(ids)")
            #expect(ids.count == 2, "\(s): \(ids) for \(streams["default/" + s] ?? [])")
        }
    }

    @Test func otpdStartsWithEveryDriverConfiguredAndServesItsHTTPSide() async throws {
        guard Self.built("otpd") != nil else { return }
        let url = try await TestDatabase.make(label: "drivers")
        let dataDir = "/var/tmp/otpd-drivers-\(UUID().uuidString.prefix(8))"
        defer { Self.cleanUp(dataDir) }
        try FileManager.default.createDirectory(atPath: dataDir + "-keys", withIntermediateDirectories: true)
        let p8 = dataDir + "-keys/AuthKey.p8"
        let rsa = dataDir + "-keys/rsa.pem"
        for args in [
            ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", p8],
            ["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", rsa],
        ] {
            #expect(try await run(["openssl"] + args).status == 0)
        }
        let serviceAccount: [String: String] = [
            "type": "service_account", "client_email": "otpd@acme.iam.gserviceaccount.com",
            "private_key": try String(contentsOfFile: rsa, encoding: .utf8), "private_key_id": "k1",
            "token_uri": "https://oauth2.googleapis.com/token",
        ]
        let accountFile = dataDir + "-keys/account.json"
        try JSONSerialization.data(withJSONObject: serviceAccount).write(to: URL(fileURLWithPath: accountFile))
        let common = """
            http_listen = "127.0.0.1:0"
            app_name = "AcmeApp"

            [channel.sms]
            driver = "twilio"
            account_sid = "AC0123456789abcdef0123456789abcdef"
            auth_token = "token"
            from = "+15017122661"

            [channel.voice]
            driver = "twilio"
            account_sid = "AC0123456789abcdef0123456789abcdef"
            auth_token = "token"
            from = "+15017122661"

            [channel.email]
            driver = "smtp"
            host = "127.0.0.1"
            port = 2525
            from = "AcmeApp <no-reply@acme.example>"
            tls = "none"

            """
        let pushes = [
            "[channel.push]\ndriver = \"apns\"\nteam_id = \"ABCDE12345\"\nkey_id = \"KEY1234567\"\nkey_file = \"\(p8)\"\ntopic = \"com.acme\"\n",
            "[channel.push]\ndriver = \"fcm\"\nproject_id = \"acme\"\nservice_account_file = \"\(accountFile)\"\n",
        ]
        for push in pushes {
            let (p, port, lines) = try await launch(url, config: common + push, dataDir: dataDir)
            defer { if p.isRunning { p.terminate() } }
            let line = try await eventually(timeout: .seconds(30), "the HTTP listening line") {
                lines.all.first { $0.hasPrefix("otpd http listening on 127.0.0.1:") }
            }
            let httpPort = try #require(Int(line.split(separator: ":").last ?? ""))
            #expect(httpPort > 0)
            #expect(try await redisCLI(port, ["PING"]) == ["PONG"])
            let health = try await run(["curl", "-s", "http://127.0.0.1:\(httpPort)/healthz"])
            #expect(health.stdout == "ok")
            // No driver prints codes: the development warning is absent.
            #expect(!lines.all.contains { $0.contains("log driver") })
            let status: Int32 = try await withCheckedThrowingContinuation { c in
                p.terminationHandler = { c.resume(returning: $0.terminationStatus) }
                kill(p.processIdentifier, SIGTERM)
            }
            #expect(status == 0)
        }
    }

    @Test func aBadConfigurationStopsTheStartWithTheKey() async throws {
        guard Self.built("otpd") != nil else { return }
        let file = "/var/tmp/otpd-bad-\(UUID().uuidString.prefix(8)).toml"
        try "[limits]\nmin_gap_per_channel = \"soon\"\n".write(toFile: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: file) }
        let r = try await run([Self.binary, "--config", file])
        #expect(r.status == 2)
        #expect(r.stderr.contains("\(file): limits.min_gap_per_channel: must be a duration"))
    }
}

/// A process's output file, read as lines.
struct OutputFile: Sendable {
    var path: String
    var all: [String] {
        ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
    }
}
