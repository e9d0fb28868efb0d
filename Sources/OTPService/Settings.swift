import OTPDomain

/// A `[channel.X]` table: which driver sends that channel's messages, with exactly that driver's settings.
public enum ChannelSettings: Sendable, Hashable {
    /// Development: print the message, code included, to the server's output.
    case log
    /// Benchmarks: accept every message, print nothing.
    case null
    /// A signed JSON POST to the team's own gateway.
    case webhook(WebhookSettings)
    /// Twilio's REST API (SMS and voice).
    case twilio(TwilioSettings)
    /// An SMTP relay (e-mail).
    case smtp(SMTPSettings)
    /// Firebase Cloud Messaging's HTTP v1 API (push).
    case fcm(FCMSettings)
    /// Apple Push Notification service over HTTP/2 (push).
    case apns(APNsSettings)

    /// The driver's name as the configuration writes it.
    public var driver: String {
        switch self {
        case .log: "log"
        case .null: "null"
        case .webhook: "webhook"
        case .twilio: "twilio"
        case .smtp: "smtp"
        case .fcm: "fcm"
        case .apns: "apns"
        }
    }

    /// The channels the driver can send.
    public var channels: Set<DeliveryChannel> { Self.channels(driver: driver) ?? [] }

    /// The channels the driver named `driver` can send; nil for an unknown driver.
    public static func channels(driver: String) -> Set<DeliveryChannel>? {
        switch driver {
        case "log", "null", "webhook": Set(DeliveryChannel.allCases)
        case "twilio": [.sms, .voice]
        case "smtp": [.email]
        case "fcm", "apns": [.push]
        default: nil
        }
    }

    /// How a provider is called: nil for the drivers that call none.
    public var call: ProviderCall? {
        switch self {
        case .log, .null: nil
        case .webhook(let s): s.call
        case .twilio(let s): s.call
        case .smtp(let s): s.call
        case .fcm(let s): s.call
        case .apns(let s): s.call
        }
    }
}

/// How a driver calls its provider: the timeout of one call, the tries of a transient failure, and the extra
/// trust roots of its TLS connections.
public struct ProviderCall: Sendable, Hashable {
    /// One provider call's timeout.
    public var timeoutMs: Int64 = 5_000
    /// Tries of a transient failure before the step fails over.
    public var retries = 3
    /// A PEM file of extra trust roots (`ca_file`); nil: the system's roots only.
    public var caFile: String?
    /// The defaults: 5 s, 3 tries, the system's roots.
    public init() {}
}

/// The `webhook` driver's settings.
public struct WebhookSettings: Sendable, Hashable {
    /// Where each message is POSTed (`http://` or `https://`).
    public var url: String
    /// The HMAC key of the `X-OTPD-Signature` header (and of receipts posted back); nil: unsigned.
    public var secret: String?
    /// Timeout, retries and trust roots.
    public var call = ProviderCall()
    /// Creates the settings.
    public init(url: String, secret: String? = nil) {
        self.url = url
        self.secret = secret
    }
}

/// The `twilio` driver's settings.
public struct TwilioSettings: Sendable, Hashable {
    /// Who a message comes from: the same for every message of the channel.
    public enum Sender: Sendable, Hashable {
        /// `From`: an E.164 number or an alphanumeric sender id.
        case from(String)
        /// `MessagingServiceSid`: Twilio picks the number from the service's pool (SMS only).
        case messagingService(String)
    }
    /// The account (`AC...`).
    public var accountSID: String
    /// The account's auth token: the basic-auth password and the key of callback signatures.
    public var authToken: String
    /// The sender.
    public var sender: Sender
    /// The API's base URL (`https://api.twilio.com`).
    public var baseURL = "https://api.twilio.com"
    /// Timeout, retries and trust roots.
    public var call = ProviderCall()
    /// Creates the settings.
    public init(accountSID: String, authToken: String, sender: Sender) {
        self.accountSID = accountSID
        self.authToken = authToken
        self.sender = sender
    }
}

/// The `smtp` driver's settings.
public struct SMTPSettings: Sendable, Hashable {
    /// How the connection is protected.
    public enum Security: String, Sendable, Hashable {
        /// Plain text, then STARTTLS; refuses to send when the server does not offer it (the default).
        case starttls
        /// TLS from the first byte (SMTPS, port 465).
        case implicit
        /// No TLS at all (a loopback relay); AUTH is then never sent.
        case none
    }
    /// The default bound on one whole conversation (greeting to the answer after the message): 15 s.
    public static let defaultTimeoutMs: Int64 = 15_000
    /// The relay's host.
    public var host: String
    /// The relay's port (default: 587 for STARTTLS and none, 465 for implicit TLS).
    public var port: Int
    /// The sender, `Name <address>`: the same for every message.
    public var from: String
    /// The AUTH user, if the relay needs one.
    public var username: String?
    /// The AUTH password.
    public var password: String?
    /// How the connection is protected.
    public var security = Security.starttls
    /// The EHLO name; nil: the machine's host name (or `localhost` when that is not a usable name).
    public var helo: String?
    /// Timeout, retries and trust roots.
    public var call = ProviderCall()
    /// Creates the settings.
    public init(host: String, port: Int, from: String, helo: String? = nil) {
        self.host = host
        self.port = port
        self.from = from
        self.helo = helo
    }
}

/// The `fcm` driver's settings.
public struct FCMSettings: Sendable, Hashable {
    /// The Firebase project.
    public var projectID: String
    /// The service account's e-mail (the JWT's issuer).
    public var clientEmail: String
    /// The service account's RSA private key, PEM.
    public var privateKeyPEM: String
    /// The key's id (the JWT's `kid`).
    public var privateKeyID: String
    /// Where the JWT is exchanged for an access token.
    public var tokenURI: String
    /// The FCM API's base URL (`https://fcm.googleapis.com`).
    public var baseURL = "https://fcm.googleapis.com"
    /// Timeout, retries and trust roots.
    public var call = ProviderCall()
    /// Creates the settings.
    public init(projectID: String, clientEmail: String, privateKeyPEM: String, privateKeyID: String, tokenURI: String) {
        self.projectID = projectID
        self.clientEmail = clientEmail
        self.privateKeyPEM = privateKeyPEM
        self.privateKeyID = privateKeyID
        self.tokenURI = tokenURI
    }
}

/// The `apns` driver's settings.
public struct APNsSettings: Sendable, Hashable {
    /// The Apple developer team (the token's issuer).
    public var teamID: String
    /// The key's id (the token's `kid`).
    public var keyID: String
    /// The .p8 key (a P-256 private key, PEM).
    public var privateKeyPEM: String
    /// The app's bundle id (`apns-topic`).
    public var topic: String
    /// The API's base URL (`https://api.push.apple.com`; `https://api.sandbox.push.apple.com` for development).
    public var baseURL = "https://api.push.apple.com"
    /// Timeout, retries and trust roots.
    public var call = ProviderCall()
    /// Creates the settings.
    public init(teamID: String, keyID: String, privateKeyPEM: String, topic: String) {
        self.teamID = teamID
        self.keyID = keyID
        self.privateKeyPEM = privateKeyPEM
        self.topic = topic
    }
}

/// Pacing and abuse limits (`[limits]`).
public struct Limits: Sendable, Hashable {
    /// Sends to one address in 10 minutes (ISSUE and RESEND refused past it).
    public var sendsPerDestination10m = 5
    /// The gap between two sends to one address on one channel.
    public var minGapPerChannelMs: Int64 = 30_000
    /// Sessions started for one address in a day.
    public var sessionsPerDestinationDay = 10
    /// Sends per minute to one country calling code; past it SMS and voice are skipped for e-mail or push.
    public var prefixSendsPerMinute = 600
    /// A tenant's sends in a day.
    public var tenantSendsPerDay = 1_000_000
    /// Wrong codes in a row for one address across sessions; then ISSUE is refused until an operator clears it.
    public var consecutiveFailuresPerDestination = 100
    /// A tenant's spend over the last 24 hours past which its ISSUEs are refused; nil: no cap.
    public var spendPerDay: Money?
    /// A country calling code's spend (per tenant) over the last hour past which it loses SMS and voice at
    /// ISSUE, or is refused without another channel; nil: no cap.
    public var prefixSpendPerHour: Money?
    /// The defaults.
    public init() {}
}

/// A configuration problem: the file, the key and what is wrong.
public struct ConfigurationError: Error, Sendable, CustomStringConvertible {
    /// The file (or `config` when the configuration did not come from one).
    public var file: String
    /// The key, dotted (`channel.sms.url`), or nil for the file as a whole.
    public var key: String?
    /// What is wrong.
    public var message: String

    /// Creates an error.
    public init(file: String, key: String?, message: String) {
        self.file = file
        self.key = key
        self.message = message
    }

    public var description: String {
        if let key { return "\(file): \(key): \(message)" }
        return "\(file): \(message)"
    }
}

extension ChannelSettings {
    /// The error for a driver put on a channel it cannot send (`smtp` on sms, say), naming `key.driver`.
    public func refusal(for channel: DeliveryChannel, file: String, key: String) -> ConfigurationError? {
        Self.refusal(driver: driver, for: channel, file: file, key: key)
    }

    /// The same check by the driver's name, before its settings are read.
    public static func refusal(
        driver: String,
        for channel: DeliveryChannel,
        file: String,
        key: String
    ) -> ConfigurationError? {
        guard let channels = channels(driver: driver), !channels.contains(channel) else { return nil }
        let names = channels.map(\.rawValue).sorted().joined(separator: " and ")
        let what = names == "email" ? "e-mail" : names
        return ConfigurationError(file: file, key: key + ".driver", message: "\(driver) sends \(what) only")
    }
}

/// One provider of a channel: its name (the `[provider.NAME]` table's, or the driver's in the single-provider
/// form), recorded in `sent` and `delivery_failed`, and its driver's settings.
public struct NamedProvider: Sendable, Hashable {
    /// The name HISTORY and `otpd_provider_state` show.
    public var name: String
    /// The driver and its keys.
    public var settings: ChannelSettings
    /// Creates a named provider.
    public init(name: String, settings: ChannelSettings) {
        self.name = name
        self.settings = settings
    }
}

/// A channel's providers in the order they are tried, and the circuit breaker that skips a failing one.
public struct ChannelProviders: Sendable, Hashable {
    /// At least one, in order: a step's message goes to the first whose circuit is closed, and a provider that
    /// fails it hands it to the next.
    public var providers: [NamedProvider]
    /// The circuit breaker of the `providers = [...]` form; nil in the single-provider form (`driver = ...`),
    /// where every session tries its one provider.
    public var breaker: BreakerSettings?

    /// The single-provider form: the provider is named after its driver.
    public init(single settings: ChannelSettings) {
        providers = [NamedProvider(name: settings.driver, settings: settings)]
        breaker = nil
    }

    /// The `providers = [...]` form.
    public init(providers: [NamedProvider], breaker: BreakerSettings) {
        self.providers = providers
        self.breaker = breaker
    }

    /// The `log` driver alone: a channel not configured.
    public static let log = ChannelProviders(single: .log)

    /// The first provider's settings.
    public var first: ChannelSettings { providers[0].settings }

    /// Whether any provider uses the driver named `driver`.
    public func uses(_ driver: String) -> Bool { providers.contains { $0.settings.driver == driver } }
}

/// When a provider's circuit opens, and for how long (`breaker_failures`, `breaker_cooldown`).
public struct BreakerSettings: Sendable, Hashable {
    /// Failed hand-offs in a row that open the circuit.
    public var failures = 5
    /// How long an open circuit skips the provider before one message probes it.
    public var cooldownMs: Int64 = 30_000
    /// The defaults: 5 failures, 30 s.
    public init() {}
}
