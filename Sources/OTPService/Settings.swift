import OTPDomain

/// A `[channel.X]` table: which driver sends that channel's messages, with exactly that driver's settings.
public enum ChannelSettings: Sendable, Hashable {
    /// Development: print the message, code included, to the server's output.
    case log
    /// Benchmarks: accept every message, print nothing.
    case null
    /// A signed JSON POST to the team's own gateway.
    case webhook(WebhookSettings)
    /// Twilio's REST API (configured, not yet sent by this version).
    case twilio(TwilioSettings)
    /// An SMTP relay (configured, not yet sent by this version).
    case smtp(SMTPSettings)

    /// The driver's name as the configuration writes it.
    public var driver: String {
        switch self {
        case .log: "log"
        case .null: "null"
        case .webhook: "webhook"
        case .twilio: "twilio"
        case .smtp: "smtp"
        }
    }

    /// How a provider is called: nil for the drivers that call none.
    public var call: ProviderCall? {
        switch self {
        case .log, .null: nil
        case .webhook(let s): s.call
        case .twilio(let s): s.call
        case .smtp(let s): s.call
        }
    }
}

/// How a driver calls its provider: the timeout of one call and the tries of a transient failure.
public struct ProviderCall: Sendable, Hashable {
    /// One provider call's timeout.
    public var timeoutMs: Int64 = 5_000
    /// Tries of a transient failure before the step fails over.
    public var retries = 3
    /// The defaults: 5 s, 3 tries.
    public init() {}
}

/// The `webhook` driver's settings.
public struct WebhookSettings: Sendable, Hashable {
    /// Where each message is POSTed (`http://HOST[:PORT]/PATH`).
    public var url: String
    /// The HMAC key of the `X-OTPD-Signature` header; nil: unsigned.
    public var secret: String?
    /// Timeout and retries.
    public var call = ProviderCall()
    /// Creates the settings.
    public init(url: String, secret: String? = nil) {
        self.url = url
        self.secret = secret
    }
}

/// The `twilio` driver's settings.
public struct TwilioSettings: Sendable, Hashable {
    /// The API's base URL.
    public var url: String
    /// Timeout and retries.
    public var call = ProviderCall()
    /// Creates the settings.
    public init(url: String) { self.url = url }
}

/// The `smtp` driver's settings.
public struct SMTPSettings: Sendable, Hashable {
    /// The relay's host.
    public var host: String
    /// The relay's port (nil: the submission default).
    public var port: Int?
    /// The sender, `Name <address>`.
    public var from: String
    /// Timeout and retries.
    public var call = ProviderCall()
    /// Creates the settings.
    public init(host: String, port: Int? = nil, from: String) {
        self.host = host
        self.port = port
        self.from = from
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
