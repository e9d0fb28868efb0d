import Foundation
import OTPDomain
import OTPService
import TOMLKit

extension Reader {
    /// The `[channel.X]` tables, each in the single-provider form (`driver = ...`) or listing providers
    /// (`providers = [...]`, each a `[provider.NAME]` table), and the `[provider.NAME]` tables: a provider listed
    /// without its table, or a table no channel lists, stops the start with the key named.
    func channels(_ t: TOMLTable) throws(ConfigurationError) -> [DeliveryChannel: ChannelProviders] {
        var tables: [String: TOMLTable] = [:]
        if let v = t["provider"] {
            guard let pt = v.table else { throw fail("provider", "must be a table of [provider.NAME] tables") }
            for name in pt.keys.sorted() {
                let p = "provider.\(name)"
                guard let table = pt[name]?.table else { throw fail(p, "must be a table") }
                guard (1...64).contains(name.count),
                    name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_" || $0 == "-") })
                else { throw fail(p, "a provider's name is 1 to 64 letters, digits, '_' or '-'") }
                guard name != "test" else { throw fail(p, "'test' names the test destinations' provider") }
                tables[name] = table
            }
        }
        var listed = Set<String>()
        var channels: [DeliveryChannel: ChannelProviders] = [:]
        if let v = t["channel"] {
            guard let ct = v.table else { throw fail("channel", "must be a table of [channel.NAME] tables") }
            for key in ct.keys.sorted() {
                let p = "channel.\(key)"
                let ch = try channel(key, p)
                guard let tt = ct[key]?.table else { throw fail(p, "must be a table") }
                guard let names = try strings(tt, "providers", "\(p).providers") else {
                    if tt["breaker_failures"] != nil || tt["breaker_cooldown"] != nil {
                        throw fail("\(p).breaker_failures", "a circuit breaker needs providers = [...]")
                    }
                    channels[ch] = ChannelProviders(single: try channelSettings(tt, ch, p))
                    continue
                }
                try onlyKeys(tt, ["providers", "breaker_failures", "breaker_cooldown"], p)
                guard !names.isEmpty else { throw fail("\(p).providers", "must name at least one provider") }
                var breaker = BreakerSettings()
                if let n = try int(tt, "breaker_failures", "\(p).breaker_failures", 1...1000) { breaker.failures = n }
                if let ms = try duration(tt, "breaker_cooldown", "\(p).breaker_cooldown") {
                    guard ms >= 1000 else { throw fail("\(p).breaker_cooldown", "must be at least 1s") }
                    breaker.cooldownMs = ms
                }
                var providers: [NamedProvider] = []
                for name in names {
                    guard !providers.contains(where: { $0.name == name }) else {
                        throw fail("\(p).providers", "names '\(name)' twice")
                    }
                    guard let table = tables[name] else {
                        throw fail("\(p).providers", "names '\(name)', which has no [provider.\(name)] table")
                    }
                    // One circuit per provider table: a channel of its own each (Twilio's SMS and its calls fail
                    // apart), so each channel lists tables of its own.
                    guard !listed.contains(name) else {
                        throw fail(
                            "\(p).providers",
                            "names '\(name)', which another channel lists; give each channel its own [provider.NAME]"
                        )
                    }
                    providers.append(
                        NamedProvider(name: name, settings: try channelSettings(table, ch, "provider.\(name)"))
                    )
                    listed.insert(name)
                }
                channels[ch] = ChannelProviders(providers: providers, breaker: breaker)
            }
        }
        if let unused = tables.keys.sorted().first(where: { !listed.contains($0) }) {
            throw fail("provider.\(unused)", "is not in any channel's providers = [...]")
        }
        return channels
    }

    /// One `[channel.X]` table: the driver, then exactly that driver's keys. Files it names (tokens, passwords,
    /// keys) are read now, so a missing one stops the start with its key named.
    func channelSettings(
        _ t: TOMLTable,
        _ ch: DeliveryChannel,
        _ p: String
    ) throws(ConfigurationError) -> ChannelSettings {
        guard let driver = try string(t, "driver", "\(p).driver") else { throw fail("\(p).driver", "is required") }
        if let refusal = ChannelSettings.refusal(driver: driver, for: ch, file: file, key: p) { throw refusal }
        let common: Set<String> = ["driver", "timeout", "retries", "ca_file"]
        func call() throws(ConfigurationError) -> ProviderCall {
            var call = ProviderCall()
            if let ms = try duration(t, "timeout", "\(p).timeout") {
                guard ms >= 100 else { throw fail("\(p).timeout", "must be at least 100ms") }
                call.timeoutMs = ms
            }
            if let n = try int(t, "retries", "\(p).retries", 1...10) { call.retries = n }
            call.caFile = try string(t, "ca_file", "\(p).ca_file")
            return call
        }
        func optional(_ key: String) throws(ConfigurationError) -> String? {
            guard let v = try string(t, key, "\(p).\(key)") else { return nil }
            guard !v.isEmpty else { throw fail("\(p).\(key)", "must not be empty") }
            return v
        }
        func required(_ key: String) throws(ConfigurationError) -> String {
            guard let v = try optional(key) else { throw fail("\(p).\(key)", "is required for \(driver)") }
            return v
        }
        /// A secret given inline (`key`) or in a file (`key_file`), exactly one of them.
        func secret(_ key: String, required needed: Bool) throws(ConfigurationError) -> String? {
            let inline = try optional(key)
            let file = try optional(key + "_file")
            if inline != nil && file != nil { throw fail("\(p).\(key)", "give \(key) or \(key)_file, not both") }
            if let file { return try read(file, key: "\(p).\(key)_file", trimmed: true) }
            if inline == nil && needed { throw fail("\(p).\(key)", "is required for \(driver) (or \(key)_file)") }
            return inline
        }
        switch driver {
        case "log", "null":
            try onlyKeys(t, ["driver"], p)
            return driver == "log" ? .log : .null
        case "webhook":
            try onlyKeys(t, common.union(["url", "secret"]), p)
            var s = WebhookSettings(url: try required("url"), secret: try optional("secret"))
            s.call = try call()
            return .webhook(s)
        case "twilio":
            try onlyKeys(
                t,
                common.union([
                    "account_sid", "auth_token", "auth_token_file", "from", "messaging_service_sid", "base_url",
                ]),
                p
            )
            let from = try optional("from")
            let service = try optional("messaging_service_sid")
            let sender: TwilioSettings.Sender
            switch (from, service) {
            case (let f?, nil): sender = .from(f)
            case (nil, let m?): sender = .messagingService(m)
            case (nil, nil): throw fail("\(p).from", "is required for twilio (or messaging_service_sid)")
            case (.some, .some): throw fail("\(p).from", "give from or messaging_service_sid, not both")
            }
            switch sender {
            case .from(let f):
                let alphanumeric =
                    (1...11).contains(f.count) && f.contains(where: \.isLetter)
                    && f.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == " ") }
                guard Validation.isE164(f) || (alphanumeric && ch == .sms) else {
                    throw fail(
                        "\(p).from",
                        ch == .sms
                            ? "must be an E.164 number such as \"+15017122661\" or an alphanumeric sender id of 1 to "
                                + "11 letters and digits"
                            : "must be an E.164 number such as \"+15017122661\" (a call comes from a number)"
                    )
                }
            case .messagingService(let m):
                guard m.hasPrefix("MG"), m.count == 34, m.dropFirst(2).allSatisfy(\.isHexDigit) else {
                    throw fail("\(p).messaging_service_sid", "must be MG followed by 32 hex digits")
                }
            }
            let sid = try required("account_sid")
            guard sid.hasPrefix("AC"), sid.count == 34,
                sid.dropFirst(2).allSatisfy(\.isHexDigit)
            else { throw fail("\(p).account_sid", "must be AC followed by 32 hex digits") }
            var s = TwilioSettings(
                accountSID: sid,
                authToken: try secret("auth_token", required: true) ?? "",
                sender: sender
            )
            if let base = try optional("base_url") { s.baseURL = base }
            s.call = try call()
            return .twilio(s)
        case "smtp":
            try onlyKeys(
                t,
                common.union(["host", "port", "from", "username", "password", "password_file", "tls", "helo"]),
                p
            )
            var security = SMTPSettings.Security.starttls
            if let v = try string(t, "tls", "\(p).tls") {
                guard let parsed = SMTPSettings.Security(rawValue: v) else {
                    throw fail("\(p).tls", "must be starttls, implicit or none")
                }
                security = parsed
            }
            let defaultPort = security == .implicit ? 465 : 587
            let helo = try optional("helo")
            var s = SMTPSettings(
                host: try required("host"),
                port: try int(t, "port", "\(p).port", 1...65535) ?? defaultPort,
                from: try required("from"),
                helo: helo
            )
            s.security = security
            s.username = try optional("username")
            s.password = try secret("password", required: s.username != nil)
            if s.password != nil && s.username == nil { throw fail("\(p).username", "is required with a password") }
            if security == .none && s.username != nil {
                throw fail("\(p).tls", "\"none\" never sends AUTH: a username needs starttls or implicit")
            }
            s.call = try call()
            if t["timeout"] == nil { s.call.timeoutMs = SMTPSettings.defaultTimeoutMs }
            return .smtp(s)
        case "fcm":
            try onlyKeys(t, common.union(["project_id", "service_account_file", "base_url"]), p)
            let path = try required("service_account_file")
            let text = try read(path, key: "\(p).service_account_file", trimmed: false)
            guard let object = (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any] else {
                throw fail("\(p).service_account_file", "'\(path)' is not a JSON object")
            }
            func field(_ name: String) throws(ConfigurationError) -> String {
                guard let v = object[name] as? String, !v.isEmpty else {
                    throw fail("\(p).service_account_file", "'\(path)' has no \(name)")
                }
                return v
            }
            var s = FCMSettings(
                projectID: try required("project_id"),
                clientEmail: try field("client_email"),
                privateKeyPEM: try field("private_key"),
                privateKeyID: try field("private_key_id"),
                tokenURI: (object["token_uri"] as? String) ?? "https://oauth2.googleapis.com/token"
            )
            if let base = try optional("base_url") { s.baseURL = base }
            s.call = try call()
            return .fcm(s)
        case "apns":
            try onlyKeys(t, common.union(["team_id", "key_id", "key_file", "topic", "base_url"]), p)
            let keyPath = try required("key_file")
            func appleID(_ key: String) throws(ConfigurationError) -> String {
                let v = try required(key)
                guard v.count == 10, v.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber) }) else {
                    throw fail("\(p).\(key)", "must be the 10-character id from Apple's developer account")
                }
                return v
            }
            var s = APNsSettings(
                teamID: try appleID("team_id"),
                keyID: try appleID("key_id"),
                privateKeyPEM: try read(keyPath, key: "\(p).key_file", trimmed: false),
                topic: try required("topic")
            )
            if let base = try optional("base_url") { s.baseURL = base }
            s.call = try call()
            return .apns(s)
        default:
            throw fail("\(p).driver", "unknown driver '\(driver)' (log, null, webhook, twilio, smtp, fcm, apns)")
        }
    }

    /// A file's text, named by `key` when it cannot be read.
    func read(_ path: String, key: String, trimmed: Bool) throws(ConfigurationError) -> String {
        guard let data = FileManager.default.contents(atPath: path), let text = String(data: data, encoding: .utf8)
        else { throw fail(key, "cannot read '\(path)'") }
        guard data.count <= 1_000_000 else { throw fail(key, "'\(path)' is larger than 1 MB") }
        let value = trimmed ? text.trimmingCharacters(in: .whitespacesAndNewlines) : text
        guard !value.isEmpty else { throw fail(key, "'\(path)' is empty") }
        return value
    }
}

extension Configuration {
    /// What the start says about receipts that cannot come back: a provider that posts receipts without the
    /// HTTP side to receive them, or callback and tracking URLs built from an address providers cannot reach.
    public var receiptWarnings: [String] {
        let receipting = channels.filter { $0.value.uses("twilio") || $0.value.uses("smtp") }.keys.map(\.rawValue)
            .sorted()
        guard !receipting.isEmpty else { return [] }
        let names = receipting.joined(separator: ", ")
        guard let listen = httpListen else {
            return [
                "no http_listen: \(names) cannot report delivery or opens back, so those steps wait out their timeouts"
            ]
        }
        var warnings: [String] = []
        if channel(.email).uses("smtp") {
            // Opens are seen through the HTML part's image and link: a template without one reports none.
            let book = templateBook
            for locale in book.locales(of: .email) where book.templates[.email]?[locale]?.html == nil {
                warnings.append(
                    "templates.email.\(locale) has no html: its e-mails report no opens, so an e-mail step "
                        + "waiting until opened waits out its timeout"
                )
            }
        }
        let local = ["127.0.0.1", "::1", "localhost", "0.0.0.0", "::"].contains(listen.host)
        if publicURL == nil && local {
            warnings.append(
                "no public_url: \(names) callbacks and e-mail links will name http://\(listen) as bound, which "
                    + "providers and mail clients cannot reach; set public_url"
            )
        }
        return warnings
    }
}
