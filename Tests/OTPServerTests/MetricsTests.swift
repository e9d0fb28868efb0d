import Foundation
import NIOHTTP1
import OTPServer
import OTPService
import OTPTesting
import PostgresTesting
import Testing

/// Whether a program is on PATH.
private func onPath(_ program: String) async -> Bool {
    (try? await run(["sh", "-c", "command -v \(program)"]).status) == 0
}

/// Whether Python's prometheus_client (PyPI `prometheus-client`, the reference parser) can be imported.
private func hasPrometheusClient() async -> Bool {
    (try? await run(["python3", "-c", "import prometheus_client"]).status) == 0
}

/// One sample as prometheus_client parsed it.
struct Sample {
    var name: String
    var labels: [String: String]
    var value: Double
}

/// What the Python helper saw: the answer and, for a 200, the families prometheus_client parsed.
struct Scrape {
    var status: Int
    var contentType: String
    var text: String
    /// Family name (as the parser names it: a counter without `_total`) → type.
    var types: [String: String]
    var samples: [Sample]

    /// The value of the one sample with this name and exactly these labels.
    func value(_ name: String, _ labels: [String: String] = [:]) -> Double? {
        samples.first { $0.name == name && $0.labels == labels }?.value
    }
}

/// Fetches `/metrics` with Python (urllib), holding a RESP connection open meanwhile, and parses the text with
/// prometheus_client's `text_string_to_metric_families`.
func scrape(_ server: TestServer, bearer: String? = nil) async throws -> Scrape {
    let httpPort = try #require(server.httpPort)
    let script = """
        import json, os, socket, sys, urllib.error, urllib.request
        from prometheus_client.parser import text_string_to_metric_families
        held = socket.create_connection(("127.0.0.1", int(os.environ["PORT"])))
        held.sendall(b"PING\\r\\n")
        assert held.recv(64).startswith(b"+PONG")
        request = urllib.request.Request("http://127.0.0.1:%s/metrics" % os.environ["HTTP_PORT"])
        if os.environ.get("BEARER"):
            request.add_header("Authorization", "Bearer " + os.environ["BEARER"])
        try:
            answer = urllib.request.urlopen(request, timeout=10)
            status, headers, text = answer.status, answer.headers, answer.read().decode()
        except urllib.error.HTTPError as e:
            status, headers, text = e.code, e.headers, e.read().decode()
        held.close()
        types, samples = {}, []
        if status == 200:
            for family in text_string_to_metric_families(text):
                types[family.name] = family.type
                samples += [[s.name, s.labels, s.value] for s in family.samples]
        print(json.dumps({"status": status, "content_type": headers.get("Content-Type", ""), "text": text,
                          "types": types, "samples": samples}))
        """
    var env = ["HTTP_PORT": String(httpPort)]
    if let bearer { env["BEARER"] = bearer }
    let out = try await python(server.port, script, env: env)
    let object = try #require(try JSONSerialization.jsonObject(with: Data(out.utf8)) as? [String: Any])
    let samples = (object["samples"] as? [[Any]] ?? []).compactMap { s -> Sample? in
        guard s.count == 3, let name = s[0] as? String, let labels = s[1] as? [String: String],
            let value = (s[2] as? NSNumber)?.doubleValue
        else { return nil }
        return Sample(name: name, labels: labels, value: value)
    }
    return Scrape(
        status: object["status"] as? Int ?? 0,
        contentType: object["content_type"] as? String ?? "",
        text: object["text"] as? String ?? "",
        types: object["types"] as? [String: String] ?? [:],
        samples: samples
    )
}

/// The exposition without its sample values: what is left is names, labels, help and type lines, where a code
/// must never be (a code's digits may occur by chance inside a float such as a duration sum).
func withoutSampleValues(_ text: String) -> String {
    text.split(separator: "\n").map { line in
        if line.hasPrefix("#") { return String(line) }
        return line.lastIndex(of: " ").map { String(line[..<$0]) } ?? String(line)
    }.joined(separator: "\n")
}

@Suite(.serialized, .heavy) struct MetricsTests {
    static let policy = """
        [[policy]]
        name = "default"
        steps = [ { channel = "sms", timeout = "500ms" }, { channel = "email" } ]
        """

    @Test(
        .enabled("python3 with prometheus_client (pip install prometheus-client) is needed") {
            await hasPrometheusClient()
        },
        .enabled("promtool (Debian package prometheus) is needed") { await onPath("promtool") }
    )
    func metricsCountCommandsEventsMessagesAndReceiptsPassPromtoolAndNeverShowASessionADestinationOrACode()
        async throws
    {
        let server = try await TestServer.start(label: "metrics", config: Self.policy, http: true)
        defer { Task { await server.stop() } }
        let (s1, s2) = ("mtr-s1-q7x", "mtr-s2-k4w")
        let phones = ["+15555550142", "+15555550143"]
        let emails = ["mtr.first@example.org", "mtr.second@example.org"]

        // s1: sent, delivered, verified. s2: no receipt, so its SMS step times out and it escalates to e-mail.
        _ = try await redisCLI(server.port, ["ISSUE", s1, "sms:" + phones[0], "email:" + emails[0]])
        _ = try await redisCLI(server.port, ["ISSUE", s2, "sms:" + phones[1], "email:" + emails[1]])
        try await server.waitUntilSent(s1)
        let code1 = try await server.code(session: s1)
        #expect(try await redisCLI(server.port, ["RECEIPT", s1, "sms", "delivered"]) == ["OK"])
        let verified = pairs(try await redisCLI(server.port, ["VERIFY", s1, code1]))
        #expect(verified["result"] == "verified")
        _ = try await eventually(timeout: .seconds(15), "\(s2) escalated to e-mail and sent") {
            let types = try await events(server, s2).map(\.type)
            return types.filter { $0 == "sent" }.count == 2 && types.contains("escalated") ? true : nil
        }
        let code2 = try await server.code(session: s2)
        // Errors: BADARG, NOTFOUND, and a command not in the table.
        let badArg = try await redisCLI(server.port, ["ISSUE", "mtr-bad", "sms:not-a-phone"])
        #expect(badArg.first?.hasPrefix("BADARG") == true)
        let notFound = try await redisCLI(server.port, ["STATUS", "mtr-missing"])
        #expect(notFound.first?.hasPrefix("NOTFOUND") == true)
        let unknown = try await redisCLI(server.port, ["FLUSHALL"])
        #expect(unknown.first?.hasPrefix("ERR") == true)

        let m = try await scrape(server)
        #expect(m.status == 200)
        #expect(m.contentType == "text/plain; version=0.0.4; charset=utf-8")

        // Every family, with its type (prometheus_client names a counter's family without `_total`).
        let families: [String: String] = [
            "otpd_commands": "counter", "otpd_command_duration_seconds": "histogram",
            "otpd_events_appended": "counter", "otpd_messages": "counter",
            "otpd_provider_duration_seconds": "histogram", "otpd_receipts": "counter",
            "otpd_escalations": "counter", "otpd_timers_pending": "gauge",
            "otpd_timer_lateness_seconds": "histogram", "otpd_projector_lag_seconds": "gauge",
            "otpd_database_errors": "counter", "otpd_connections": "gauge",
        ]
        for (name, type) in families { #expect(m.types[name] == type, "\(name)") }
        for name in families.keys { #expect(m.text.contains("# HELP \(name)"), "\(name) has no help text") }

        // The counts moved as the commands did.
        func atLeast(_ n: Double, _ name: String, _ labels: [String: String] = [:]) {
            let v = m.value(name, labels)
            #expect((v ?? -1) >= n, "\(name)\(labels) = \(v.map { "\($0)" } ?? "absent"), expected at least \(n)")
        }
        atLeast(2, "otpd_commands_total", ["command": "ISSUE", "result": "ok"])
        atLeast(1, "otpd_commands_total", ["command": "ISSUE", "result": "BADARG"])
        atLeast(1, "otpd_commands_total", ["command": "RECEIPT", "result": "ok"])
        atLeast(1, "otpd_commands_total", ["command": "VERIFY", "result": "ok"])
        atLeast(1, "otpd_commands_total", ["command": "STATUS", "result": "NOTFOUND"])
        atLeast(1, "otpd_commands_total", ["command": "unknown", "result": "ERR"])
        atLeast(3, "otpd_command_duration_seconds_count", ["command": "ISSUE"])
        atLeast(2, "otpd_events_appended_total", ["type": "issued"])
        atLeast(3, "otpd_events_appended_total", ["type": "sent"])
        atLeast(1, "otpd_events_appended_total", ["type": "delivered"])
        atLeast(1, "otpd_events_appended_total", ["type": "verified"])
        atLeast(1, "otpd_events_appended_total", ["type": "escalated"])
        atLeast(2, "otpd_messages_total", ["channel": "sms", "driver": "log", "outcome": "sent"])
        atLeast(1, "otpd_messages_total", ["channel": "email", "driver": "log", "outcome": "sent"])
        atLeast(2, "otpd_provider_duration_seconds_count", ["channel": "sms", "driver": "log"])
        atLeast(1, "otpd_receipts_total", ["channel": "sms", "outcome": "delivered"])
        atLeast(1, "otpd_escalations_total", ["reason": "timeout"])
        atLeast(1, "otpd_timer_lateness_seconds_count")
        atLeast(1, "otpd_connections")  // the helper's own RESP connection, held open while it scraped
        atLeast(0, "otpd_timers_pending")
        #expect(m.value("otpd_database_errors_total") == 0)
        // The projector may be mid-batch when scraped (a timer or a hand-off just appended); it catches up.
        #expect((m.value("otpd_projector_lag_seconds") ?? -1) >= 0)
        _ = try await eventually(timeout: .seconds(10), "the projector caught up") {
            try await scrape(server).value("otpd_projector_lag_seconds") == 0 ? true : nil
        }
        // Bounded labels: the client's own command name is never a label value.
        #expect(!m.samples.contains { $0.labels["command"] == "FLUSHALL" })

        // S1 and friends: no session id, destination or code anywhere in the text.
        let secrets = [s1, s2, "mtr-bad", "mtr-missing"] + phones + phones.map { String($0.dropFirst()) } + emails
        for secret in secrets {
            #expect(!m.text.contains(secret), "\(secret) appears in /metrics")
        }
        let names = withoutSampleValues(m.text)
        for code in [code1, code2] { #expect(!names.contains(code), "a code appears in /metrics") }
        for sample in m.samples {
            for value in sample.labels.values {
                #expect(![code1, code2].contains(where: value.contains), "a code appears in a label")
            }
        }

        // promtool, Prometheus's own checker (format and lint), finds nothing.
        let check = try await run(["promtool", "check", "metrics"], input: m.text)
        #expect(check.status == 0, "promtool: \(check.stdout)\(check.stderr)")
        #expect((check.stdout + check.stderr).trimmingCharacters(in: .whitespacesAndNewlines).isEmpty)

        // The projector reports its lag there: caught up with this handful of commands, it is under a second.
        let lag = try await scrape(server).value("otpd_projector_lag_seconds")
        #expect(lag != nil && lag! >= 0 && lag! < 1, "lag \(String(describing: lag))")
    }

    @Test(
        .enabled("python3 with prometheus_client (pip install prometheus-client) is needed") {
            await hasPrometheusClient()
        }
    )
    func metricsTokenRequiresTheBearerToken() async throws {
        let token = "metrics-token-0123456789abcdef"
        let server = try await TestServer.start(
            label: "metrics_token",
            config: """
                http_listen = "127.0.0.1:0"
                metrics_token = "\(token)"
                """,
            http: true
        )
        defer { Task { await server.stop() } }
        let port = try #require(server.httpPort)
        let url = "http://127.0.0.1:\(port)/metrics"
        #expect(try await http(.GET, url).status == 401)
        #expect(try await http(.GET, url, headers: [("Authorization", "Bearer wrong-token-0123456789")]).status == 401)
        #expect(try await http(.GET, url, headers: [("Authorization", token)]).status == 401)
        #expect(try await http(.GET, url, headers: [("Authorization", "Basic " + token)]).status == 401)
        #expect(try await scrape(server, bearer: "wrong").status == 401)
        let allowed = try await scrape(server, bearer: token)
        #expect(allowed.status == 200)
        #expect(allowed.types["otpd_commands"] == "counter")
        // The token itself is not in what it protects.
        #expect(!allowed.text.contains(token))
        // Other endpoints are not behind it.
        #expect(try await http(.GET, "http://127.0.0.1:\(port)/healthz").status == 200)
    }

    @Test func metricsTokenIsCheckedWhenTheConfigurationIsRead() throws {
        let cases: [(String, String)] = [
            (#"metrics_token = "0123456789abcdef0123""#, "needs http_listen"),
            ("http_listen = \"127.0.0.1:0\"\nmetrics_token = \"short\"", "16 to 256"),
            ("http_listen = \"127.0.0.1:0\"\nmetrics_token = \"has a space in it, sixteen+\"", "16 to 256"),
            ("http_listen = \"127.0.0.1:0\"\nmetrics_token = 42", "must be a string"),
        ]
        for (text, message) in cases {
            do {
                _ = try Configuration.parse(text, file: "m.toml")
                Issue.record("parsed: \(text)")
            } catch {
                #expect(error.key == "metrics_token", "\(text)")
                #expect("\(error)".contains(message), "\(error)")
            }
        }
        let c = try Configuration.parse(
            "http_listen = \"127.0.0.1:0\"\nmetrics_token = \"0123456789abcdef0123\"",
            file: "m.toml"
        )
        #expect(c.metricsToken == "0123456789abcdef0123")
        #expect(try Configuration.parse("", file: "m.toml").metricsToken == nil)
    }
}
