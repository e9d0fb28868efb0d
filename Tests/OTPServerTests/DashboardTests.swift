import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import OTPServer
import OTPTesting
import PostgresTesting
import Testing

@testable import OTPService

/// One GET with its answer's headers.
struct DashboardAnswer {
    var status: Int
    var headers: HTTPHeaders
    var body: [UInt8]
    var text: String { String(decoding: body, as: UTF8.self) }
}

func dashboardGET(_ url: String, user: (String, String)? = nil) async throws -> DashboardAnswer {
    var request = HTTPClientRequest(url: url)
    if let user {
        let credentials = Data("\(user.0):\(user.1)".utf8).base64EncodedString()
        request.headers.add(name: "Authorization", value: "Basic " + credentials)
    }
    let response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
    let buffer = try await response.body.collect(upTo: 4 << 20)
    return DashboardAnswer(
        status: Int(response.status.code),
        headers: response.headers,
        body: Array(buffer.readableBytesView)
    )
}

/// STATS' answer as redis-cli prints it (RESP2: each group a flat key, value list), by group, values as text.
func statsByChannel(_ port: Int, auth: [String] = []) async throws -> [String: [String: String]] {
    let lines = try await redisCLI(port, ["STATS", "SINCE", "86400", "BY", "channel"], extra: auth)
    let width = Dashboard.statsKeys.count * 2
    guard lines.count % width == 0 else { throw HarnessError("unexpected STATS output: \(lines)") }
    var out: [String: [String: String]] = [:]
    for start in stride(from: 0, to: lines.count, by: width) {
        let group = pairs(Array(lines[start..<start + width]))
        out[group["group"] ?? "?"] = group
    }
    return out
}

/// `/dashboard.json`'s `channels`, by group, values as text (integers in decimal, rates as given, null empty).
func jsonChannels(_ body: [UInt8]) throws -> [String: [String: String]] {
    let object = try #require(try JSONSerialization.jsonObject(with: Data(body)) as? [String: Any])
    let channels = try #require(object["channels"] as? [[String: Any]])
    var out: [String: [String: String]] = [:]
    for c in channels {
        var row: [String: String] = [:]
        for (k, v) in c {
            if let s = v as? String {
                row[k] = s
            } else if let n = v as? NSNumber {
                row[k] = n.stringValue
            } else if v is NSNull {
                row[k] = ""  // as redis-cli prints a null (cost with nothing priced)
            }
        }
        out[row["group"] ?? "?"] = row
    }
    return out
}

/// The dashboard's STATS table cells (`data-channel`, `data-key`) from an HTML page or a dumped DOM.
func tableCells(_ html: String) throws -> [String: [String: String]] {
    let pattern = try NSRegularExpression(pattern: #"data-channel="([^"]*)" data-key="([^"]*)">([^<]*)<"#)
    var out: [String: [String: String]] = [:]
    let ns = html as NSString
    for m in pattern.matches(in: html, range: NSRange(location: 0, length: ns.length)) {
        let (c, k, v) = (
            ns.substring(with: m.range(at: 1)), ns.substring(with: m.range(at: 2)), ns.substring(with: m.range(at: 3))
        )
        out[c, default: [:]][k] = v
    }
    return out
}

/// What a scenario is expected to total.
struct DashboardScenario {
    var issued = 0
    var verified = 0
    var failed = 0
}

/// Drives a realistic spread through redis-cli on the default policy (sms → email → voice → push): deliveries
/// with varied receipt delays, RESENDs, failed receipts that escalate, an exhausted, a locked and a cancelled
/// session, e-mail, push and voice sessions. `prefix` keeps session ids apart; `auth` is redis-cli's login.
func driveDashboardScenario(
    _ server: TestServer,
    prefix: String = "",
    auth: [String] = []
) async throws -> DashboardScenario {
    let port = server.port
    @Sendable func cli(_ args: [String]) async throws -> [String] { try await redisCLI(port, args, extra: auth) }
    /// Waits for the session's `count`-th message (the log driver prints each) and its `sent` status.
    @Sendable func sent(_ s: String, _ channel: String, count: Int) async throws {
        _ = try await eventually(timeout: .seconds(30), "\(s)'s message \(count)") {
            server.log.codes(session: s).count >= count ? true : nil
        }
        let deadline = ContinuousClock.now + .seconds(30)
        while true {
            let st = pairs(try await cli(["STATUS", s]))
            if st["status"] == "sent" && st["channel"] == channel { return }
            if ContinuousClock.now > deadline { throw HarnessError("\(s) not sent on \(channel): \(st)") }
            try await Task.sleep(for: .milliseconds(60))
        }
    }
    @Sendable func receipt(_ s: String, _ channel: String, _ outcome: String, afterMs: Int = 0) async throws {
        if afterMs > 0 { try await Task.sleep(for: .milliseconds(afterMs)) }
        #expect(try await cli(["RECEIPT", s, channel, outcome]) == ["OK"])
    }
    @Sendable func verify(_ s: String) async throws {
        let code = try await eventually(timeout: .seconds(30), "a code for \(s)") { server.log.codes(session: s).last }
        #expect(pairs(try await cli(["VERIFY", s, code]))["result"] == "verified")
    }
    // A phone number per session: the per-destination limits (5 sends in 10 minutes) stay out of the way.
    var phones = 0
    func phone() -> String {
        phones += 1
        return "+1555" + String(1_000_000 + phones).dropFirst()
    }
    typealias Flow = @Sendable () async throws -> Void
    var flows: [(String, Flow)] = []
    var expected = DashboardScenario()
    // SMS delivered after a spread of delays; all but one verified.
    let smsDelays = [180, 260, 320, 410, 520, 650, 800, 1_100, 1_450]
    for (i, delay) in smsDelays.enumerated() {
        let s = "\(prefix)ok-\(i + 1)"
        let verifies = i < smsDelays.count - 1
        let ph = phone()
        flows.append(
            (
                s,
                {
                    _ = try await cli(["ISSUE", s, "sms:\(ph)", "email:\(s)@example.com"])
                    try await sent(s, "sms", count: 1)
                    try await receipt(s, "sms", "delivered", afterMs: delay)
                    if verifies { try await verify(s) }
                }
            )
        )
        expected.issued += 1
        expected.verified += verifies ? 1 : 0
    }
    // The user asks again: RESEND moves to e-mail.
    for (i, delay) in [700, 1_600].enumerated() {
        let s = "\(prefix)rs-\(i + 1)"
        let ph = phone()
        flows.append(
            (
                s,
                {
                    _ = try await cli(["ISSUE", s, "sms:\(ph)", "email:\(s)@example.com"])
                    try await sent(s, "sms", count: 1)
                    _ = try await cli(["RESEND", s])
                    try await sent(s, "email", count: 2)
                    try await receipt(s, "email", "delivered", afterMs: delay)
                    try await verify(s)
                }
            )
        )
        expected.issued += 1
        expected.verified += 1
    }
    // Failed receipts escalate at once.
    let f1 = "\(prefix)fl-1"
    let f1Phone = phone()
    flows.append(
        (
            f1,
            {
                _ = try await cli(["ISSUE", f1, "sms:\(f1Phone)", "email:\(f1)@example.com", "voice:\(f1Phone)"])
                try await sent(f1, "sms", count: 1)
                try await receipt(f1, "sms", "failed", afterMs: 300)
                try await sent(f1, "email", count: 2)
                try await receipt(f1, "email", "delivered", afterMs: 900)
                try await verify(f1)
            }
        )
    )
    let f2 = "\(prefix)fl-2"
    let f2Phone = phone()
    flows.append(
        (
            f2,
            {
                _ = try await cli(["ISSUE", f2, "sms:\(f2Phone)", "email:\(f2)@example.com", "voice:\(f2Phone)"])
                try await sent(f2, "sms", count: 1)
                try await receipt(f2, "sms", "failed", afterMs: 200)
                try await sent(f2, "email", count: 2)
                try await receipt(f2, "email", "failed", afterMs: 400)
                try await sent(f2, "voice", count: 3)
                try await receipt(f2, "voice", "delivered", afterMs: 2_400)
                try await verify(f2)
            }
        )
    )
    let f3 = "\(prefix)fl-3"
    let f3Phone = phone()
    flows.append(
        (
            f3,
            {
                _ = try await cli(["ISSUE", f3, "sms:\(f3Phone)", "email:\(f3)@example.com"])
                try await sent(f3, "sms", count: 1)
                try await receipt(f3, "sms", "failed", afterMs: 250)
                try await sent(f3, "email", count: 2)
                try await receipt(f3, "email", "delivered", afterMs: 1_300)
            }
        )
    )
    let x1 = "\(prefix)ex-1"
    let x1Phone = phone()
    flows.append(
        (
            x1,
            {
                _ = try await cli(["ISSUE", x1, "sms:\(x1Phone)", "email:\(x1)@example.com"])
                try await sent(x1, "sms", count: 1)
                try await receipt(x1, "sms", "failed", afterMs: 150)
                try await sent(x1, "email", count: 2)
                try await receipt(x1, "email", "failed", afterMs: 350)
            }
        )
    )
    expected.issued += 4
    expected.verified += 2
    expected.failed += 6
    // E-mail, push and voice first.
    for (i, delay) in [900, 1_800, 2_600].enumerated() {
        let s = "\(prefix)em-\(i + 1)"
        let verifies = i < 2
        flows.append(
            (
                s,
                {
                    _ = try await cli(["ISSUE", s, "email:\(s)@example.com"])
                    try await sent(s, "email", count: 1)
                    try await receipt(s, "email", "delivered", afterMs: delay)
                    if verifies { try await verify(s) }
                }
            )
        )
        expected.issued += 1
        expected.verified += verifies ? 1 : 0
    }
    for (i, delay) in [120, 240].enumerated() {
        let s = "\(prefix)pu-\(i + 1)"
        let verifies = i == 0
        flows.append(
            (
                s,
                {
                    _ = try await cli(["ISSUE", s, "push:device-token-\(s)"])
                    try await sent(s, "push", count: 1)
                    try await receipt(s, "push", "delivered", afterMs: delay)
                    if verifies { try await verify(s) }
                }
            )
        )
        expected.issued += 1
        expected.verified += verifies ? 1 : 0
    }
    let v1 = "\(prefix)vo-1"
    let v1Phone = phone()
    flows.append(
        (
            v1,
            {
                _ = try await cli(["ISSUE", v1, "voice:\(v1Phone)"])
                try await sent(v1, "voice", count: 1)
                try await receipt(v1, "voice", "delivered", afterMs: 3_200)
                try await verify(v1)
            }
        )
    )
    expected.issued += 1
    expected.verified += 1
    // Locked by a wrong code, cancelled, and one still waiting.
    let l1 = "\(prefix)lk-1"
    let l1Phone = phone()
    flows.append(
        (
            l1,
            {
                let issued = try await cli(["ISSUE", l1, "sms:\(l1Phone)", "MAXATTEMPTS", "1"])
                #expect(pairs(issued)["session"] == l1, "ISSUE \(l1): \(issued)")
                // As `sent` waits: a loaded machine's dispatcher may take more than the harness's 10 s.
                let code = try await eventually(timeout: .seconds(30), "a code for \(l1)") {
                    server.log.codes(session: l1).last
                }
                let wrong = String(code.map { $0 == "9" ? "0" : Character(String(($0.wholeNumberValue ?? 0) + 1)) })
                #expect(pairs(try await cli(["VERIFY", l1, wrong]))["status"] == "locked")
            }
        )
    )
    let c1 = "\(prefix)cx-1"
    let c1Phone = phone()
    flows.append(
        (
            c1,
            {
                _ = try await cli(["ISSUE", c1, "sms:\(c1Phone)"])
                try await sent(c1, "sms", count: 1)
                _ = try await cli(["CANCEL", c1])
            }
        )
    )
    let p1 = "\(prefix)pe-1"
    let p1Phone = phone()
    flows.append(
        (
            p1,
            {
                _ = try await cli(["ISSUE", p1, "sms:\(p1Phone)", "email:\(p1)@example.com"])
                try await sent(p1, "sms", count: 1)
            }
        )
    )
    expected.issued += 3
    try await withThrowingTaskGroup(of: Void.self) { group in
        for (_, flow) in flows { group.addTask { try await flow() } }
        try await group.waitForAll()
    }
    return expected
}

/// The dashboard's channels and STATS' groups, by group.
typealias BothFigures = (json: [String: [String: String]], stats: [String: [String: String]])

/// Waits until the dashboard shows the scenario's totals and its channels equal STATS; returns both.
func waitForDashboard(
    _ server: TestServer,
    expected: DashboardScenario,
    user: (String, String)? = nil,
    auth: [String] = []
) async throws -> BothFigures {
    let port = try #require(server.httpPort)
    let url = "http://127.0.0.1:\(port)/dashboard.json"
    var seen: [String: [String: String]] = [:]
    do {
        return try await waitForDashboard(url: url, server: server, expected: expected, user: user, auth: auth) {
            seen = $0
        }
    } catch {
        throw HarnessError("\(error); expected \(expected), the dashboard's channels were \(seen)")
    }
}

func waitForDashboard(
    url: String,
    server: TestServer,
    expected: DashboardScenario,
    user: (String, String)?,
    auth: [String],
    seen: ([String: [String: String]]) -> Void
) async throws -> BothFigures {
    try await eventually(timeout: .seconds(30), "the projector to apply the scenario") { () -> BothFigures? in
        let answer = try await dashboardGET(url, user: user)
        guard answer.status == 200 else { return nil }
        let json = try jsonChannels(answer.body)
        seen(json)
        func total(_ key: String) -> Int { json.values.reduce(0) { $0 + (Int($1[key] ?? "") ?? 0) } }
        guard total("issued") == expected.issued, total("verified") == expected.verified,
            total("failed") == expected.failed
        else { return nil }
        let stats = try await statsByChannel(server.port, auth: auth)
        return stats == json ? (json, stats) : nil
    }
}

/// A PNG's size, distinct colours, share of pixels unlike the most common one and share of dark ones, decoded
/// with Python's standard library (zlib, struct).
func pngSummary(_ path: String) async throws -> [String: Double] {
    let script = #"""
        import json, struct, sys, zlib
        from collections import Counter
        data = open(sys.argv[1], 'rb').read()
        assert data[:8] == b'\x89PNG\r\n\x1a\n', 'not a PNG'
        pos, idat, ihdr = 8, b'', None
        while pos < len(data):
            n, kind = struct.unpack('>I4s', data[pos:pos + 8])
            chunk = data[pos + 8:pos + 8 + n]
            assert zlib.crc32(kind + chunk) & 0xffffffff == struct.unpack('>I', data[pos + 8 + n:pos + 12 + n])[0]
            if kind == b'IHDR': ihdr = struct.unpack('>IIBBBBB', chunk)
            elif kind == b'IDAT': idat += chunk
            elif kind == b'IEND': break
            pos += 12 + n
        w, h, depth, ctype, _, _, interlace = ihdr
        assert depth == 8 and ctype in (2, 6) and interlace == 0, ihdr
        bpp = 3 if ctype == 2 else 4
        raw, stride = zlib.decompress(idat), w * bpp
        prev, rows, i = bytearray(stride), [], 0
        for _ in range(h):
            f, line = raw[i], bytearray(raw[i + 1:i + 1 + stride])
            i += 1 + stride
            if f == 1:
                for x in range(bpp, stride): line[x] = (line[x] + line[x - bpp]) & 255
            elif f == 2:
                line = bytearray((a + b) & 255 for a, b in zip(line, prev))
            elif f == 3:
                for x in range(stride):
                    left = line[x - bpp] if x >= bpp else 0
                    line[x] = (line[x] + ((left + prev[x]) >> 1)) & 255
            elif f == 4:
                for x in range(stride):
                    a = line[x - bpp] if x >= bpp else 0
                    b, c = prev[x], prev[x - bpp] if x >= bpp else 0
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
            rows.append(bytes(line))
            prev = line
        pixels = Counter()
        dark = 0
        for line in rows:
            for x in range(0, stride, bpp):
                px = line[x:x + 3]
                pixels[px] += 1
                if px[0] * 299 + px[1] * 587 + px[2] * 114 < 128000: dark += 1
        total = w * h
        print(json.dumps({'width': w, 'height': h, 'colours': len(pixels),
                          'unlike': 1 - pixels.most_common(1)[0][1] / total, 'dark': dark / total}))
        """#
    let r = try await run(["python3", "-c", script, path])
    guard r.status == 0 else { throw HarnessError("PNG check failed: \(r.stderr)") }
    let object = try #require(try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
    return object.compactMapValues { ($0 as? NSNumber)?.doubleValue }
}

/// Runs headless Chromium on a URL with a fresh profile, under a time limit.
func chromium(_ arguments: [String], url: String, profile: String) async throws -> ProcessResult {
    try await run(
        [
            "timeout", "120", "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--user-data-dir=\(profile)", "--no-first-run", "--no-default-browser-check",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-extensions", "--hide-scrollbars", "--window-size=1280,1600",
        ] + arguments + [url]
    )
}

@Suite(.serialized, .heavy) struct DashboardTests {
    /// Synthetic figures with hostile texts everywhere the figures carry text.
    static let hostile = DashboardFigures(
        channels: [
            StatsGroup(
                group: "<script>alert(1)</script>",
                issued: 10,
                sent: 12,
                delivered: 9,
                failed: 2,
                escalated: 3,
                verified: 7,
                expired: 1,
                deliveryRate: "0.7500",
                conversionRate: "0.7000",
                p50DeliveryMs: 850,
                p95DeliveryMs: 2_300,
                p50VerifyMs: 14_000
            ),
            StatsGroup(
                group: "sms",
                issued: 1_234,
                sent: 1_300,
                delivered: 1_200,
                failed: 40,
                escalated: 60,
                verified: 1_100,
                expired: 20,
                deliveryRate: "0.9231",
                conversionRate: "0.8914",
                p50DeliveryMs: 1_200,
                p95DeliveryMs: 5_400,
                p50VerifyMs: 21_000
            ),
        ],
        hours: (0..<24).map { i in
            HourFigures(
                hour: 1_764_590_400_000 + Int64(i) * 3_600_000,
                issued: Int64(i),
                sent: Int64(i),
                delivered: 1,
                failed: 0,
                verified: 0
            )
        },
        paths: [
            PathFigures(path: "sms>email", status: "verified", sessions: 30),
            PathFigures(path: "sms><img src=x onerror=alert(1)>", status: "\"><svg onload=alert(1)>", sessions: 5),
            PathFigures(path: "sms", status: "verified", sessions: 40),
        ],
        generatedAt: 1_764_676_800_000
    )

    @Test func theRendererEscapesEveryTextAndFetchesNothing() throws {
        let tenant = "<b>acme</b> & \"co\""
        let page = Dashboard.html(Self.hostile, tenant: tenant)
        #expect(page == Dashboard.html(Self.hostile, tenant: tenant), "the renderer is deterministic")
        #expect(page.hasPrefix("<!doctype html>"))
        // Nothing hostile survives as markup; the texts are there, escaped.
        #expect(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"))
        #expect(page.contains("&lt;b&gt;acme&lt;/b&gt; &amp; &quot;co&quot;"))
        #expect(page.contains("&lt;img src=x onerror=alert(1)&gt;"))
        #expect(page.contains("&quot;&gt;&lt;svg onload=alert(1)&gt;"))
        let lower = page.lowercased()
        for banned in [
            "<script", "<img", "<link", "<iframe", "<object", "<embed", "<svg onload", "http://", "https://",
        ] {
            #expect(!lower.contains(banned), "the page holds \(banned)")
        }
        for banned in ["@import", "url(", "src=\"", "href=\"/", "href=\"http", "@font-face"] {
            #expect(!lower.contains(banned), "the page refers to something: \(banned)")
        }
        // The STATS table: every key of every group, as STATS gives it.
        let cells = try tableCells(page)
        #expect(cells.count == 2)
        let sms = try #require(cells["sms"])
        #expect(Set(sms.keys) == Set(Dashboard.statsKeys))
        #expect(sms["issued"] == "1234")
        #expect(sms["delivery_rate"] == "0.9231")
        #expect(sms["p95_delivery_ms"] == "5400")
        #expect(cells["&lt;script&gt;alert(1)&lt;/script&gt;"]?["conversion_rate"] == "0.7000")
        // The charts, the tenant, the time (UTC).
        for id in ["funnel", "rates", "latency", "paths", "hours", "stats"] { #expect(page.contains("id=\"\(id)\"")) }
        #expect(page.components(separatedBy: "<svg ").count - 1 == 5)
        #expect(page.contains("2025-12-02 12:00:00 UTC"))
        #expect(page.contains("sms → email"))
        #expect(!page.contains("No sessions in the last 24 hours"))
    }

    @Test func pricedMessagesShowTheirSpendAndCostPerVerification() throws {
        var figures = Self.hostile
        figures.channels[0].costMicros = 90_000  // 7 verified
        figures.channels[1].costMicros = 10_270_000  // 1,100 verified
        let page = Dashboard.html(figures, tenant: "t")
        #expect(page.contains(#"id="kpi-cost"><div class="k">Spend</div><div class="v">10.3600</div>"#))
        // 10.36 over 1,107 verifications.
        #expect(page.contains(#"<div class="k">Cost per verification</div><div class="v">0.0094</div>"#))
        let cells = try tableCells(page)
        #expect(cells["sms"]?["cost"] == "10.2700")
        #expect(cells["sms"]?["cost_per_verification"] == "0.0093")
        let object = try #require(
            try JSONSerialization.jsonObject(with: Data(try Dashboard.json(figures, tenant: "t"))) as? [String: Any]
        )
        let sms = try #require((object["channels"] as? [[String: Any]])?.last)
        #expect(sms["cost"] as? String == "10.2700")
        #expect(sms["cost_per_verification"] as? String == "0.0093")
    }

    @Test func theRendererShowsEmptyStatesAndTheJSONHasSTATSKeys() throws {
        let hours = (0..<24).map { i in
            HourFigures(hour: Int64(i) * 3_600_000, issued: 0, sent: 0, delivered: 0, failed: 0, verified: 0)
        }
        let none = DashboardFigures(channels: [], hours: hours, paths: [], generatedAt: 0)
        let page = Dashboard.html(none, tenant: "default")
        #expect(page.components(separatedBy: "No sessions in the last 24 hours.").count - 1 == 6)
        #expect(!page.contains("<svg"))
        #expect(page.contains("1970-01-01 00:00:00 UTC"))
        #expect(try tableCells(page).isEmpty)

        let object = try #require(
            try JSONSerialization.jsonObject(with: Data(try Dashboard.json(Self.hostile, tenant: "t")))
                as? [String: Any]
        )
        #expect(Set(object.keys) == ["tenant", "generated_at", "channels", "hours", "paths"])
        let channels = try #require(object["channels"] as? [[String: Any]])
        #expect(channels.count == 2)
        for c in channels { #expect(Set(c.keys) == Set(Dashboard.statsKeys)) }
        #expect(channels[1]["delivery_rate"] as? String == "0.9231")
        #expect((channels[1]["p50_delivery_ms"] as? NSNumber)?.int64Value == 1_200)
        #expect(channels[1]["cost"] is NSNull, "nothing priced: null, as STATS answers")
        #expect(!page.contains("kpi-cost"), "no spend tile without prices")
        let firstPath = try #require((object["paths"] as? [[String: Any]])?.first)
        #expect(Set(firstPath.keys) == ["path", "status", "sessions"])
        let firstHour = try #require((object["hours"] as? [[String: Any]])?.first)
        #expect(Set(firstHour.keys) == ["hour", "issued", "sent", "delivered", "failed", "verified"])
    }

    @Test func dashboardJSONChannelsEqualStatsSince86400ByChannel() async throws {
        let server = try await TestServer.start(label: "dash_json", http: true)
        defer { Task { await server.stop() } }
        let port = try #require(server.httpPort)
        // Before any session: an empty answer, the page's empty states.
        let before = try await dashboardGET("http://127.0.0.1:\(port)/dashboard.json")
        #expect(before.status == 200)
        #expect(before.headers.first(name: "Content-Type") == "application/json")
        #expect(before.headers.first(name: "Cache-Control") == "no-store")
        #expect(try jsonChannels(before.body).isEmpty)
        let emptyPage = try await dashboardGET("http://127.0.0.1:\(port)/dashboard")
        #expect(emptyPage.status == 200)
        #expect(emptyPage.headers.first(name: "Content-Type") == "text/html; charset=utf-8")
        #expect(emptyPage.headers.first(name: "Cache-Control") == "no-store")
        #expect(emptyPage.text.contains("No sessions in the last 24 hours."))
        #expect(emptyPage.text.contains("data-tenant=\"default\""))

        let expected = try await driveDashboardScenario(server)
        let (json, stats) = try await waitForDashboard(server, expected: expected)
        #expect(Set(json.keys) == ["sms", "email", "voice", "push"])
        for (group, figures) in stats {
            #expect(Set(figures.keys) == Set(Dashboard.statsKeys))
            for key in Dashboard.statsKeys { #expect(json[group]?[key] == figures[key], "\(group) \(key)") }
        }
        // Escalations and failures are in the figures, and the paths and hours add up.
        #expect((Int(json["sms"]?["escalated"] ?? "") ?? 0) >= 6)
        #expect(Int(json["sms"]?["failed"] ?? "") == 4)
        // Undelivered messages are no latency sample: the SMS receipts came 180 ms or more after the send.
        #expect((Int(json["sms"]?["p50_delivery_ms"] ?? "") ?? 0) >= 180)
        let answer = try await dashboardGET("http://127.0.0.1:\(port)/dashboard.json")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(answer.body)) as? [String: Any])
        #expect(object["tenant"] as? String == "default")
        let paths = try #require(object["paths"] as? [[String: Any]])
        #expect(paths.reduce(0) { $0 + (($1["sessions"] as? Int) ?? 0) } == expected.issued)
        #expect(paths.contains { $0["path"] as? String == "sms>email>voice" && $0["status"] as? String == "verified" })
        #expect(paths.contains { $0["status"] as? String == "locked" })
        #expect(paths.contains { $0["status"] as? String == "cancelled" })
        let hours = try #require(object["hours"] as? [[String: Any]])
        #expect(hours.count == 24)
        #expect(hours.reduce(0) { $0 + (($1["issued"] as? Int) ?? 0) } == expected.issued)
        // The page's table shows the same figures.
        let page = try await dashboardGET("http://127.0.0.1:\(port)/dashboard")
        #expect(try tableCells(page.text) == stats)
    }

    @Test func withTenantsTheDashboardNeedsAnAnalystCredentialAndShowsOnlyItsTenant() async throws {
        let config = """
            [[tenant]]
            name = "acme"
            token = "acme-service"
            roles = ["service", "gateway"]

            [[tenant]]
            name = "acme"
            token = "acme-analyst"
            roles = ["analyst"]

            [[tenant]]
            name = "globex"
            token = "globex-all"
            roles = ["service", "gateway", "analyst"]
            """
        let server = try await TestServer.start(label: "dash_auth", config: config, http: true)
        defer { Task { await server.stop() } }
        let port = try #require(server.httpPort)
        for path in ["/dashboard", "/dashboard.json"] {
            let url = "http://127.0.0.1:\(port)\(path)"
            let users: [(String, String)?] = [
                nil, ("acme", "wrong"), ("nobody", "acme-analyst"), ("globex", "acme-analyst"),
            ]
            for user in users {
                let refused = try await dashboardGET(url, user: user)
                #expect(refused.status == 401, "\(path) \(String(describing: user))")
                #expect(refused.headers.first(name: "WWW-Authenticate") == "Basic realm=\"otpd\"")
                #expect(!refused.text.contains("data-key"))
            }
            let forbidden = try await dashboardGET(url, user: ("acme", "acme-service"))
            #expect(forbidden.status == 403)
            #expect(!forbidden.text.contains("data-key"))
        }
        // acme issues three sessions, globex one.
        let acme = ["--user", "acme", "--pass", "acme-service", "--no-auth-warning"]
        let globex = ["--user", "globex", "--pass", "globex-all", "--no-auth-warning"]
        for (i, s) in ["a1", "a2", "a3"].enumerated() {
            _ = try await redisCLI(server.port, ["ISSUE", s, "sms:+1555123456\(i)"], extra: acme)
        }
        _ = try await redisCLI(server.port, ["ISSUE", "g1", "email:g@example.com"], extra: globex)
        let code = try await server.code(session: "a1")
        _ = try await eventually("a1 sent") {
            pairs(try await redisCLI(server.port, ["STATUS", "a1"], extra: acme))["status"] == "sent" ? true : nil
        }
        #expect(try await redisCLI(server.port, ["RECEIPT", "a1", "sms", "delivered"], extra: acme) == ["OK"])
        #expect(pairs(try await redisCLI(server.port, ["VERIFY", "a1", code], extra: acme))["result"] == "verified")

        let analyst = ["--user", "acme", "--pass", "acme-analyst", "--no-auth-warning"]
        let (json, _) = try await waitForDashboard(
            server,
            expected: DashboardScenario(issued: 3, verified: 1, failed: 0),
            user: ("acme", "acme-analyst"),
            auth: analyst
        )
        #expect(Set(json.keys) == ["sms"])
        #expect(json["sms"]?["issued"] == "3")
        let page = try await dashboardGET("http://127.0.0.1:\(port)/dashboard", user: ("acme", "acme-analyst"))
        #expect(page.status == 200)
        #expect(page.text.contains("data-tenant=\"acme\""))
        #expect(try tableCells(page.text).keys.sorted() == ["sms"])
        // globex sees only its own session.
        let other = try await waitForDashboard(
            server,
            expected: DashboardScenario(issued: 1, verified: 0, failed: 0),
            user: ("globex", "globex-all"),
            auth: globex
        )
        #expect(Set(other.json.keys) == ["email"])
    }

    @Test func headlessChromiumRendersTheDashboardWithTheSTATSFigures() async throws {
        let found = try await run(["sh", "-c", "command -v chromium"])
        try #require(found.status == 0, "chromium is not installed (apt-get install -y chromium)")
        let server = try await TestServer.start(label: "dash_chromium", http: true)
        defer { Task { await server.stop() } }
        let port = try #require(server.httpPort)
        let expected = try await driveDashboardScenario(server)
        let (_, stats) = try await waitForDashboard(server, expected: expected)

        let dir = NSTemporaryDirectory() + "otpd-dashboard-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let url = "http://127.0.0.1:\(port)/dashboard"
        let png = dir + "/dashboard.png"
        let shot = try await chromium(["--screenshot=\(png)"], url: url, profile: dir + "/profile-shot")
        #expect(shot.status == 0, "chromium --screenshot: \(shot.stderr)")
        let summary = try await pngSummary(png)
        #expect(summary["width"] == 1_280)
        #expect(summary["height"] == 1_600)
        #expect((summary["colours"] ?? 0) >= 64, "too few colours: \(summary)")
        #expect((summary["unlike"] ?? 0) >= 0.08, "mostly blank: \(summary)")
        #expect((summary["dark"] ?? 0) >= 0.005, "no text: \(summary)")
        if let keep = ProcessInfo.processInfo.environment["OTPD_DASHBOARD_SCREENSHOT"] {
            try? FileManager.default.removeItem(atPath: keep)
            try FileManager.default.copyItem(atPath: png, toPath: keep)
        }

        // The scenario's last timers may still fire while Chromium renders: compare the page with STATS read
        // right after it, and render again (a few times at most) while they still move.
        var cells: [String: [String: String]] = [:]
        var now = stats
        for attempt in 1...5 {
            let dom = try await chromium(["--dump-dom"], url: url, profile: dir + "/profile-dom-\(attempt)")
            #expect(dom.status == 0, "chromium --dump-dom: \(dom.stderr)")
            #expect(dom.stdout.contains("STATS SINCE 86400 BY channel"))
            #expect(dom.stdout.components(separatedBy: "<svg ").count - 1 == 5)
            cells = try tableCells(dom.stdout)
            now = try await statsByChannel(server.port)
            if cells == now { break }
        }
        #expect(cells == now)
    }
}
