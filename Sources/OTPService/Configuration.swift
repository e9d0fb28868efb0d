import Crypto
import Foundation
import OTPDomain
import TOMLKit

/// What a credential may run.
public enum Role: String, Sendable, Hashable, CaseIterable {
    case service
    case gateway
    case auditor
    case analyst
}

/// One `[[tenant]]` entry: a tenant name, a token (kept as its SHA-256) and roles.
public struct TenantCredential: Sendable, Hashable {
    /// The tenant's name.
    public var name: String
    /// SHA-256 of the token.
    public var tokenSHA256: [UInt8]
    /// What the credential may run.
    public var roles: Set<Role>

    /// Creates a credential from a clear token.
    public init(name: String, token: String, roles: Set<Role>) {
        self.init(name: name, tokenSHA256: Array(SHA256.hash(data: Array(token.utf8))), roles: roles)
    }

    /// Creates a credential from a token's SHA-256.
    public init(name: String, tokenSHA256: [UInt8], roles: Set<Role>) {
        self.name = name
        self.tokenSHA256 = tokenSHA256
        self.roles = roles
    }
}

/// A `[channel.X]` table: which driver sends that channel's messages, and its settings.
public struct ChannelSettings: Sendable, Hashable {
    /// `log`, `webhook`, `twilio` or `smtp`.
    public var driver: String
    /// The webhook or API URL.
    public var url: String?
    /// The HMAC key for webhook signatures.
    public var secret: String?
    /// A provider call's timeout.
    public var timeoutMs: Int64 = 5_000
    /// Tries of a transient failure.
    public var retries: Int = 3
    /// SMTP host.
    public var host: String?
    /// SMTP port.
    public var port: Int?
    /// SMTP sender.
    public var from: String?

    /// The development default: print the message.
    public static let log = ChannelSettings(driver: "log")
}

/// Pacing and abuse limits (`[limits]`).
public struct Limits: Sendable, Hashable {
    public var sendsPerDestination10m = 5
    public var minGapPerChannelMs: Int64 = 30_000
    public var sessionsPerDestinationDay = 10
    public var prefixSendsPerMinute = 600
    public var tenantSendsPerDay = 1_000_000
    public var consecutiveFailuresPerDestination = 100
    public init() {}
}

/// The server's configuration: the TOML file, then environment, then flags.
public struct Configuration: Sendable {
    public var listen = "127.0.0.1:7379"
    public var databaseURL: String?
    public var dataDirectory = ".otpd"
    public var appName = "otpd"
    public var appDomain: String?
    public var androidAppHash: String?
    public var tenants: [TenantCredential] = []
    public var channels: [Channel: ChannelSettings] = [:]
    public var policies: [Policy] = []
    public var limits = Limits()
    public var secret: String?
    public var secretFile: String?
    public var tlsCert: String?
    public var tlsKey: String?
    public var maxConnections = 10_000

    /// The defaults: log driver everywhere, no tenants, the built-in default policy.
    public init() {}

    /// The settings of a channel (the `log` driver when not configured).
    public func channel(_ c: Channel) -> ChannelSettings { channels[c] ?? .log }

    /// Whether any channel prints codes (development only).
    public var printsCodes: Bool { Channel.allCases.contains { channel($0).driver == "log" } }

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

/// A configuration problem: the file, the key and what is wrong.
public struct ConfigurationError: Error, Sendable, CustomStringConvertible {
    public var file: String
    public var key: String?
    public var message: String
    public var description: String {
        if let key { return "\(file): \(key): \(message)" }
        return "\(file): \(message)"
    }
}

/// Parses durations written `500ms`, `15s`, `2m` (or a bare integer of seconds).
public enum DurationText {
    /// The duration in milliseconds, or nil when malformed.
    public static func milliseconds(_ text: String) -> Int64? {
        let t = text.trimmingCharacters(in: .whitespaces)
        let units: [(String, Int64)] = [("ms", 1), ("s", 1000), ("m", 60_000), ("h", 3_600_000)]
        for (suffix, factor) in units where t.hasSuffix(suffix) {
            guard let n = Int64(t.dropLast(suffix.count)), n >= 0 else { return nil }
            return n * factor
        }
        return Int64(t).map { $0 * 1000 }
    }
}

private struct Reader {
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

    func duration(_ t: TOMLTable, _ key: String, _ path: String) throws(ConfigurationError) -> Int64? {
        guard let v = t[key] else { return nil }
        if let n = v.int, n >= 0 { return Int64(n) * 1000 }
        guard let s = v.string, let ms = DurationText.milliseconds(s) else {
            throw fail(path, "must be a duration such as \"500ms\", \"15s\" or \"2m\"")
        }
        return ms
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

    func channel(_ name: String, _ path: String) throws(ConfigurationError) -> Channel {
        guard let c = Channel(rawValue: name) else {
            throw fail(path, "unknown channel '\(name)' (sms, email, voice, push)")
        }
        return c
    }

    mutating func configuration(_ t: TOMLTable) throws(ConfigurationError) -> Configuration {
        try onlyKeys(
            t,
            [
                "listen", "database_url", "data_dir", "app_name", "app_domain", "android_app_hash", "tenant",
                "channel", "policy", "limits", "secret", "secret_file", "tls_cert", "tls_key",
                "max_connections",
            ],
            ""
        )
        var c = Configuration()
        if let v = try string(t, "listen", "listen") {
            guard HostPort(v) != nil else { throw fail("listen", "must be HOST:PORT") }
            c.listen = v
        }
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
        if let n = try int(t, "max_connections", "max_connections", 1...1_000_000) { c.maxConnections = n }

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

        if let v = t["channel"] {
            guard let ct = v.table else { throw fail("channel", "must be a table of [channel.NAME] tables") }
            for key in ct.keys {
                let p = "channel.\(key)"
                let ch = try channel(key, p)
                guard let tt = ct[key]?.table else { throw fail(p, "must be a table") }
                try onlyKeys(tt, ["driver", "url", "secret", "timeout", "retries", "host", "port", "from"], p)
                guard let driver = try string(tt, "driver", "\(p).driver") else {
                    throw fail("\(p).driver", "is required")
                }
                guard ["log", "webhook", "twilio", "smtp", "null"].contains(driver) else {
                    throw fail("\(p).driver", "unknown driver '\(driver)' (log, webhook, twilio, smtp)")
                }
                if driver == "smtp" && ch != .email { throw fail("\(p).driver", "smtp sends e-mail only") }
                var s = ChannelSettings(driver: driver)
                s.url = try string(tt, "url", "\(p).url")
                if (driver == "webhook" || driver == "twilio") && s.url == nil {
                    throw fail("\(p).url", "is required for \(driver)")
                }
                s.secret = try string(tt, "secret", "\(p).secret")
                if let ms = try duration(tt, "timeout", "\(p).timeout") { s.timeoutMs = ms }
                if let n = try int(tt, "retries", "\(p).retries", 1...10) { s.retries = n }
                s.host = try string(tt, "host", "\(p).host")
                s.port = try int(tt, "port", "\(p).port", 1...65535)
                s.from = try string(tt, "from", "\(p).from")
                if driver == "smtp" && (s.host == nil || s.from == nil) { throw fail(p, "smtp needs host and from") }
                c.channels[ch] = s
            }
        }

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
                try onlyKeys(st, ["channel", "timeout", "until"], sp)
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
                steps.append(Step(channel: ch, timeoutMs: try duration(st, "timeout", "\(sp).timeout"), until: until))
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
                var order: [Channel] = []
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

        if let v = t["limits"] {
            guard let lt = v.table else { throw fail("limits", "must be a table") }
            try onlyKeys(
                lt,
                [
                    "sends_per_destination_10m", "min_gap_per_channel", "sessions_per_destination_day",
                    "prefix_sends_per_minute", "tenant_sends_per_day", "consecutive_failures_per_destination",
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
        }
        return c
    }
}

/// A `HOST:PORT` pair.
public struct HostPort: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int

    /// Parses `HOST:PORT` (`[::1]:PORT` for IPv6).
    public init?(_ text: String) {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]),
            (0...65535).contains(port)
        else { return nil }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { return nil }
        self.host = host
        self.port = port
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}
