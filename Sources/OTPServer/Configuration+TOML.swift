import Foundation
import OTPDomain
import OTPService
import TOMLKit

extension Configuration {
    /// Reads a TOML file.
    public static func load(file: String) throws(ConfigurationError) -> Configuration {
        let text: String
        do { text = try String(contentsOfFile: file, encoding: .utf8) } catch {
            throw ConfigurationError(file: file, key: nil, message: "cannot read the file")
        }
        return try parse(text, file: file)
    }

    /// Parses TOML text; `file` names the source in errors.
    public static func parse(_ text: String, file: String = "config") throws(ConfigurationError) -> Configuration {
        let table: TOMLTable
        do { table = try TOMLTable(string: text) } catch let e as TOMLParseError {
            throw ConfigurationError(
                file: file,
                key: nil,
                message: "\(e.description) at line \(e.source.begin.line), column \(e.source.begin.column)"
            )
        } catch {
            throw ConfigurationError(file: file, key: nil, message: "not valid TOML")
        }
        var r = Reader(file: file)
        return try r.configuration(table)
    }
}

/// Parses durations written `500ms`, `15s`, `2m` (or a bare integer of seconds).
public enum DurationText {
    /// The longest duration a setting takes: a day (a session lives at most an hour).
    public static let maximumMs: Int64 = 86_400_000

    /// The duration in milliseconds, or nil when malformed or too large to count in milliseconds.
    public static func milliseconds(_ text: String) -> Int64? {
        let t = text.trimmingCharacters(in: .whitespaces)
        let units: [(suffix: String, factor: Int64)] = [("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000)]
        let unit = units.first { t.hasSuffix($0.suffix) }
        guard let n = Int64(t.dropLast(unit?.suffix.count ?? 0)), n >= 0 else { return nil }
        let (ms, overflow) = n.multipliedReportingOverflow(by: unit?.factor ?? 1000)
        return overflow ? nil : ms
    }
}

/// The TOML reader: each function reads one key or table and names the dotted key in its errors.
struct Reader {
    let file: String

    func fail(_ key: String, _ message: String) -> ConfigurationError {
        ConfigurationError(file: file, key: key, message: message)
    }

    func string(_ t: TOMLTable, _ key: String, _ path: String) throws(ConfigurationError) -> String? {
        guard let v = t[key] else { return nil }
        guard let s = v.string else { throw fail(path, "must be a string") }
        return s
    }

    func int(
        _ t: TOMLTable,
        _ key: String,
        _ path: String,
        _ range: ClosedRange<Int>
    ) throws(ConfigurationError) -> Int? {
        guard let v = t[key] else { return nil }
        guard let n = v.int else { throw fail(path, "must be an integer") }
        guard range.contains(n) else { throw fail(path, "must be between \(range.lowerBound) and \(range.upperBound)") }
        return n
    }

    func bool(_ t: TOMLTable, _ key: String, _ path: String) throws(ConfigurationError) -> Bool? {
        guard let v = t[key] else { return nil }
        guard let b = v.bool else { throw fail(path, "must be true or false") }
        return b
    }

    func duration(_ t: TOMLTable, _ key: String, _ path: String) throws(ConfigurationError) -> Int64? {
        guard let v = t[key] else { return nil }
        guard let text = v.int.map({ String($0) }) ?? v.string, let ms = DurationText.milliseconds(text) else {
            throw fail(path, "must be a duration such as \"500ms\", \"15s\" or \"2m\"")
        }
        guard ms <= DurationText.maximumMs else { throw fail(path, "must be at most 24h") }
        return ms
    }

    /// An amount of money: a decimal number (`0.0079`) or a string of one (`"0.0079"`), at least 0, at most six
    /// decimals.
    func money(_ t: TOMLTable, _ key: String, _ path: String) throws(ConfigurationError) -> Money? {
        guard let v = t[key] else { return nil }
        let problem = "must be an amount such as 0.0079 (at least 0, at most six decimals)"
        if let text = v.string {
            guard !text.hasPrefix("-"), let m = Money(decimal: text) else { throw fail(path, problem) }
            return m
        }
        guard let d = v.double ?? v.int.map(Double.init), d >= 0, d < 1e12 else { throw fail(path, problem) }
        let micros = (d * 1_000_000).rounded()
        guard abs(micros - d * 1_000_000) < 0.001 else { throw fail(path, problem) }
        return Money(micros: Int64(micros))
    }

    func strings(_ t: TOMLTable, _ key: String, _ path: String) throws(ConfigurationError) -> [String]? {
        guard let v = t[key] else { return nil }
        guard let a = v.array else { throw fail(path, "must be an array of strings") }
        var out: [String] = []
        for (i, e) in a.enumerated() {
            guard let s = e.string else { throw fail("\(path)[\(i)]", "must be a string") }
            out.append(s)
        }
        return out
    }

    func tables(_ t: TOMLTable, _ key: String, _ path: String) throws(ConfigurationError) -> [TOMLTable] {
        guard let v = t[key] else { return [] }
        guard let a = v.array else { throw fail(path, "must be an array of tables ([[\(key)]])") }
        var out: [TOMLTable] = []
        for (i, e) in a.enumerated() {
            guard let tt = e.table else { throw fail("\(path)[\(i)]", "must be a table") }
            out.append(tt)
        }
        return out
    }

    func onlyKeys(_ t: TOMLTable, _ allowed: Set<String>, _ path: String) throws(ConfigurationError) {
        for k in t.keys where !allowed.contains(k) {
            throw fail(path.isEmpty ? k : "\(path).\(k)", "unknown key")
        }
    }

    func channel(_ name: String, _ path: String) throws(ConfigurationError) -> DeliveryChannel {
        guard let c = DeliveryChannel(rawValue: name) else {
            throw fail(path, "unknown channel '\(name)' (sms, email, voice, push)")
        }
        return c
    }

    mutating func configuration(_ t: TOMLTable) throws(ConfigurationError) -> Configuration {
        try onlyKeys(
            t,
            [
                "listen", "database_url", "database_pool_size", "group_commit", "data_dir", "app_name", "app_domain",
                "android_app_hash", "tenant",
                "channel", "policy", "limits", "secret", "secret_file", "tls_cert", "tls_key",
                "tls_client_ca", "max_connections", "http_listen", "public_url", "templates", "metrics_token",
                "test_destination", "provider", "prices",
            ],
            ""
        )
        var c = Configuration()
        c.file = file
        if let v = try string(t, "listen", "listen") {
            guard let address = HostPort(v) else { throw fail("listen", "must be HOST:PORT") }
            c.listen = address
        }
        if let n = try int(t, "database_pool_size", "database_pool_size", 1...64) { c.databasePoolSize = n }
        if let b = try bool(t, "group_commit", "group_commit") { c.groupCommit = b }
        c.databaseURL = try string(t, "database_url", "database_url")
        if let v = try string(t, "data_dir", "data_dir") { c.dataDirectory = v }
        if let v = try string(t, "app_name", "app_name") {
            guard !v.isEmpty, v.count <= 40 else { throw fail("app_name", "must be 1 to 40 characters") }
            c.appName = v
        }
        c.appDomain = try string(t, "app_domain", "app_domain")
        c.androidAppHash = try string(t, "android_app_hash", "android_app_hash")
        if let h = c.androidAppHash, h.count != 11 {
            throw fail("android_app_hash", "must be the 11-character app hash")
        }
        c.secret = try string(t, "secret", "secret")
        if let s = c.secret, (Hex.decode(s)?.count ?? 0) < 32 {
            throw fail("secret", "must be at least 64 hex characters")
        }
        c.secretFile = try string(t, "secret_file", "secret_file")
        c.tlsCert = try string(t, "tls_cert", "tls_cert")
        c.tlsKey = try string(t, "tls_key", "tls_key")
        if (c.tlsCert == nil) != (c.tlsKey == nil) { throw fail("tls_cert", "tls_cert and tls_key go together") }
        c.tlsClientCA = try string(t, "tls_client_ca", "tls_client_ca")
        if c.tlsClientCA != nil && c.tlsCert == nil { throw fail("tls_client_ca", "needs tls_cert and tls_key") }
        if let n = try int(t, "max_connections", "max_connections", 1...1_000_000) { c.maxConnections = n }
        if let v = try string(t, "http_listen", "http_listen") {
            guard let address = HostPort(v) else { throw fail("http_listen", "must be HOST:PORT") }
            c.httpListen = address
        }
        if let v = try string(t, "public_url", "public_url") {
            guard c.httpListen != nil else { throw fail("public_url", "needs http_listen") }
            guard let u = URLComponents(string: v), u.scheme == "http" || u.scheme == "https", u.host != nil,
                u.query == nil, u.fragment == nil
            else {
                throw fail(
                    "public_url",
                    "must be an http:// or https:// URL without query, such as \"https://otp.acme.example\""
                )
            }
            c.publicURL = v.hasSuffix("/") ? String(v.dropLast()) : v
        }
        if let v = try string(t, "metrics_token", "metrics_token") {
            guard c.httpListen != nil else { throw fail("metrics_token", "needs http_listen") }
            guard (16...256).contains(v.utf8.count), v.utf8.allSatisfy({ (0x21...0x7E).contains($0) }) else {
                throw fail("metrics_token", "must be 16 to 256 visible ASCII characters (no spaces)")
            }
            c.metricsToken = v
        }
        c.templates = try Configuration.ownTemplates(t["templates"], file: file)

        for (i, tt) in try tables(t, "tenant", "tenant").enumerated() {
            let p = "tenant[\(i)]"
            try onlyKeys(tt, ["name", "token", "token_sha256", "roles"], p)
            guard let name = try string(tt, "name", "\(p).name"), !name.isEmpty, name.count <= 64,
                !name.contains("/")
            else { throw fail("\(p).name", "is required: 1 to 64 characters, no '/'") }
            let roleNames = try strings(tt, "roles", "\(p).roles") ?? []
            guard !roleNames.isEmpty else {
                throw fail("\(p).roles", "is required (service, gateway, auditor, analyst)")
            }
            var roles = Set<Role>()
            for r in roleNames {
                guard let role = Role(rawValue: r) else { throw fail("\(p).roles", "unknown role '\(r)'") }
                roles.insert(role)
            }
            if let token = try string(tt, "token", "\(p).token") {
                guard !token.isEmpty else { throw fail("\(p).token", "must not be empty") }
                c.tenants.append(TenantCredential(name: name, token: token, roles: roles))
            } else if let hex = try string(tt, "token_sha256", "\(p).token_sha256") {
                guard let digest = Hex.decode(hex), digest.count == 32 else {
                    throw fail("\(p).token_sha256", "must be 64 hex characters")
                }
                c.tenants.append(TenantCredential(name: name, tokenSHA256: digest, roles: roles))
            } else {
                throw fail(p, "needs token or token_sha256")
            }
        }

        c.channels = try channels(t)

        var names = Set<String>()
        for (i, tt) in try tables(t, "policy", "policy").enumerated() {
            let p = "policy[\(i)]"
            try onlyKeys(tt, ["name", "steps", "match_country", "match_carrier", "variants"], p)
            guard let name = try string(tt, "name", "\(p).name"), !name.isEmpty, name.count <= 64 else {
                throw fail("\(p).name", "is required: 1 to 64 characters")
            }
            guard names.insert(name).inserted else { throw fail("\(p).name", "policy '\(name)' is defined twice") }
            var steps: [Step] = []
            for (j, st) in try tables(tt, "steps", "\(p).steps").enumerated() {
                let sp = "\(p).steps[\(j)]"
                try onlyKeys(st, ["channel", "timeout", "until", "min", "max"], sp)
                guard let chName = try string(st, "channel", "\(sp).channel") else {
                    throw fail("\(sp).channel", "is required")
                }
                let ch = try channel(chName, "\(sp).channel")
                guard !steps.contains(where: { $0.channel == ch }) else {
                    throw fail("\(sp).channel", "\(chName) appears twice")
                }
                var until = Until.delivered
                if let u = try string(st, "until", "\(sp).until") {
                    guard let parsed = Until(rawValue: u) else {
                        throw fail("\(sp).until", "must be delivered, opened or verified")
                    }
                    until = parsed
                }
                if st["timeout"]?.string == "auto" {
                    let bounds = AutoTimeout(
                        minMs: try duration(st, "min", "\(sp).min") ?? AutoTimeout().minMs,
                        maxMs: try duration(st, "max", "\(sp).max") ?? AutoTimeout().maxMs
                    )
                    guard bounds.minMs <= bounds.maxMs else { throw fail("\(sp).min", "is longer than max") }
                    steps.append(Step(channel: ch, until: until, auto: bounds))
                } else {
                    for key in ["min", "max"] where st[key] != nil {
                        throw fail("\(sp).\(key)", "needs timeout = \"auto\"")
                    }
                    steps.append(
                        Step(channel: ch, timeoutMs: try duration(st, "timeout", "\(sp).timeout"), until: until)
                    )
                }
            }
            guard !steps.isEmpty else { throw fail("\(p).steps", "a policy needs at least one step") }
            let countries = try strings(tt, "match_country", "\(p).match_country") ?? []
            for code in countries
            where !(code.hasPrefix("+") && (2...4).contains(code.count) && code.dropFirst().allSatisfy(\.isNumber)) {
                throw fail("\(p).match_country", "'\(code)' is not a country calling code such as \"+44\"")
            }
            let carriers = try strings(tt, "match_carrier", "\(p).match_carrier") ?? []
            var variants: [Variant] = []
            for (j, vt) in try tables(tt, "variants", "\(p).variants").enumerated() {
                let vp = "\(p).variants[\(j)]"
                try onlyKeys(vt, ["weight", "order"], vp)
                guard let w = try int(vt, "weight", "\(vp).weight", 0...1_000_000) else {
                    throw fail("\(vp).weight", "is required")
                }
                var order: [DeliveryChannel] = []
                for name in try strings(vt, "order", "\(vp).order") ?? [] {
                    let ch = try channel(name, "\(vp).order")
                    guard steps.contains(where: { $0.channel == ch }) else {
                        throw fail("\(vp).order", "\(name) is not one of the policy's steps")
                    }
                    order.append(ch)
                }
                guard !order.isEmpty else { throw fail("\(vp).order", "is required") }
                variants.append(Variant(weight: w, order: order))
            }
            c.policies.append(
                Policy(
                    name: name,
                    steps: steps,
                    matchCountry: countries,
                    matchCarrier: carriers,
                    variants: variants
                )
            )
        }
        if !c.policies.isEmpty && !c.policies.contains(where: { $0.name == "default" }) {
            throw fail("policy", "no policy is named \"default\"")
        }

        var tests: [TestDestinations.Entry] = []
        for (i, tt) in try tables(t, "test_destination", "test_destination").enumerated() {
            let p = "test_destination[\(i)]"
            try onlyKeys(tt, ["destination", "code", "allow_unreserved"], p)
            guard let text = try string(tt, "destination", "\(p).destination") else {
                throw fail("\(p).destination", "is required, as ISSUE names it (\"sms:+15005550006\")")
            }
            let destination: Destination
            do { destination = try Destination.parse(text) } catch {
                let reason = if case .badArgument(let m) = error { m } else { "not a destination" }
                throw fail("\(p).destination", "'\(Validation.printable(text))': \(reason)")
            }
            guard let code = try string(tt, "code", "\(p).code"), (4...10).contains(code.count),
                code.allSatisfy({ $0.isASCII && $0.isNumber })
            else { throw fail("\(p).code", "is required: 4 to 10 digits") }
            if try bool(tt, "allow_unreserved", "\(p).allow_unreserved") != true
                && !TestDestinations.isReserved(destination)
            {
                throw fail(
                    "\(p).destination",
                    "'\(text)' is not in a range reserved for tests (+1555..., +1500555..., +447700900..., e-mail at "
                        + "example.com, .test or .invalid): a real person could be reached; set allow_unreserved = true "
                        + "if it is yours"
                )
            }
            guard !tests.contains(where: { $0.destination == destination }) else {
                throw fail("\(p).destination", "'\(text)' is listed twice")
            }
            tests.append(TestDestinations.Entry(destination: destination, code: code))
        }
        c.testDestinations = TestDestinations(tests)

        if let v = t["limits"] {
            guard let lt = v.table else { throw fail("limits", "must be a table") }
            try onlyKeys(
                lt,
                [
                    "sends_per_destination_10m", "min_gap_per_channel", "sessions_per_destination_day",
                    "prefix_sends_per_minute", "tenant_sends_per_day", "consecutive_failures_per_destination",
                    "spend_per_day", "prefix_spend_per_hour",
                ],
                "limits"
            )
            let big = 1...1_000_000_000
            if let n = try int(lt, "sends_per_destination_10m", "limits.sends_per_destination_10m", big) {
                c.limits.sendsPerDestination10m = n
            }
            if let ms = try duration(lt, "min_gap_per_channel", "limits.min_gap_per_channel") {
                c.limits.minGapPerChannelMs = ms
            }
            if let n = try int(lt, "sessions_per_destination_day", "limits.sessions_per_destination_day", big) {
                c.limits.sessionsPerDestinationDay = n
            }
            if let n = try int(lt, "prefix_sends_per_minute", "limits.prefix_sends_per_minute", big) {
                c.limits.prefixSendsPerMinute = n
            }
            if let n = try int(lt, "tenant_sends_per_day", "limits.tenant_sends_per_day", big) {
                c.limits.tenantSendsPerDay = n
            }
            if let n = try int(
                lt,
                "consecutive_failures_per_destination",
                "limits.consecutive_failures_per_destination",
                big
            ) {
                c.limits.consecutiveFailuresPerDestination = n
            }
            c.limits.spendPerDay = try money(lt, "spend_per_day", "limits.spend_per_day")
            c.limits.prefixSpendPerHour = try money(lt, "prefix_spend_per_hour", "limits.prefix_spend_per_hour")
        }
        if let v = t["prices"] {
            guard let pt = v.table else { throw fail("prices", "must be a table: [prices] sms = { default = 0.0079 }") }
            for name in pt.keys.sorted() {
                let p = "prices.\(name)"
                let ch = try channel(name, p)
                guard let tt = pt[name]?.table else {
                    throw fail(p, "must be a table such as { default = 0.0079, \"+44\" = 0.04 }")
                }
                var table = Prices.Table()
                for key in tt.keys.sorted() {
                    let kp = "\(p).\(key)"
                    if key == "default" {
                        table.default = try money(tt, key, kp)
                    } else {
                        guard key.hasPrefix("+"), (2...5).contains(key.count), key.dropFirst().allSatisfy(\.isNumber)
                        else { throw fail(kp, "'\(key)' is not default or a country calling code such as \"+44\"") }
                        table.byCountry[key] = try money(tt, key, kp)
                    }
                }
                c.prices.channels[ch] = table
            }
        }
        if c.limits.spendPerDay != nil || c.limits.prefixSpendPerHour != nil, c.prices.channels.isEmpty {
            let key = c.limits.spendPerDay != nil ? "limits.spend_per_day" : "limits.prefix_spend_per_hour"
            throw fail(key, "a spend cap needs [prices] (what a message costs per channel and country)")
        }
        return c
    }
}
