import Foundation
import Logging
import OTPDomain

/// A message on its way to a provider.
public struct OutboundMessage: Sendable {
    /// A stable id per step: the provider's idempotency key.
    public var messageId: String
    /// The tenant that issued the session.
    public var tenant: String
    /// The caller's session id.
    public var session: String
    /// Where to send (personal data: never logged outside the log driver).
    public var to: String
    /// The rendered message.
    public var message: Message
    /// The code the message carries, for a driver that puts it somewhere of its own (the e-mail's show-the-code
    /// link); never logged (but by the log driver) or put in a reason.
    public var code: String
    /// When the session expires (Unix epoch milliseconds): the code is useless after it, so a provider may drop
    /// the message then (APNs' `apns-expiration`).
    public var expiresAtMs: Int64
    /// The message's URLs on otpd's HTTP side; nil when it has none (`http_listen` unset).
    public var links: MessageLinks?

    /// Creates a message for a driver.
    public init(
        messageId: String,
        tenant: String,
        session: String,
        to: String,
        message: Message,
        code: String = "",
        expiresAtMs: Int64 = 0,
        links: MessageLinks? = nil
    ) {
        self.messageId = messageId
        self.tenant = tenant
        self.session = session
        self.to = to
        self.message = message
        self.code = code
        self.expiresAtMs = expiresAtMs
        self.links = links
    }
}

/// A message's URLs on otpd's HTTP side, under `public_url`.
public struct MessageLinks: Sendable, Hashable {
    /// Where Twilio posts status callbacks (`{public_url}/receipts/twilio`).
    public var statusCallback: String
    /// The e-mail's open-tracking image (`{public_url}/o/<token>`).
    public var openImage: String
    /// The e-mail's "show the code" link (`{public_url}/c/<token>`).
    public var showCode: String

    /// The links of the message whose tracking token is `tracking`, under `publicURL` (no trailing slash).
    public init(publicURL: String, tracking: String) {
        statusCallback = publicURL + "/receipts/twilio"
        openImage = publicURL + "/o/" + tracking
        showCode = publicURL + "/c/" + tracking
    }
}

/// What a provider said about a message.
public enum DriverResult: Sendable, Equatable {
    /// Accepted; the provider's reference if it gave one, and the price if it reported one (Twilio's `price`).
    case accepted(providerRef: String?, price: Money? = nil)
    /// Refused for good (4xx): escalate now.
    case permanentFailure(String)
    /// Failed in a way worth retrying (5xx, refused connection, timeout). `mayHaveBeenSent`: the request may
    /// have reached the provider (a timeout after it went out); retrying the same provider is safe (its
    /// idempotency key), handing the message to another provider is not.
    case transientFailure(String, mayHaveBeenSent: Bool = false)
    /// No answer after the request went out, to a provider without idempotency (Twilio): it may have been
    /// taken, so the step fails over instead of sending again.
    case unknownOutcome(String)
}

/// Sends messages of one channel to a provider.
public protocol ChannelDriver: Sendable {
    /// The provider's name, recorded in `sent`.
    var name: String { get }
    /// Hands one message to the provider.
    func send(_ message: OutboundMessage) async -> DriverResult
}

/// Development driver: prints the message, code included, to the server's output.
public struct LogDriver: ChannelDriver {
    public var name: String { "log" }
    let write: @Sendable (String) -> Void

    /// Creates a driver printing through `write` (standard output by default).
    public init(
        write: @escaping @Sendable (String) -> Void = { line in
            FileHandle.standardOutput.write(Data((line + "\n").utf8))
        }
    ) {
        self.write = write
    }

    public func send(_ m: OutboundMessage) async -> DriverResult {
        var lines = [
            "[log driver] \(m.message.channel.rawValue) to \(m.to) (tenant \(m.tenant), session \(m.session), message \(m.messageId))"
        ]
        if let subject = m.message.subject { lines.append("  Subject: \(subject)") }
        if let title = m.message.title { lines.append("  Title: \(title)") }
        lines += m.message.text.split(separator: "\n", omittingEmptySubsequences: false).map { "  | \($0)" }
        write(lines.joined(separator: "\n"))
        return .accepted(providerRef: nil)
    }
}

/// Benchmark driver: accepts every message and prints nothing.
public struct NullDriver: ChannelDriver {
    public var name: String { "null" }
    public init() {}
    public func send(_ message: OutboundMessage) async -> DriverResult { .accepted(providerRef: nil) }
}

/// One provider of a channel, ready to call: its name, its driver and how it is called.
public struct ProviderDriver: Sendable {
    /// The provider's name (recorded in `sent` and `delivery_failed`).
    public var name: String
    /// Its driver.
    public var driver: any ChannelDriver
    /// Its call's timeout and tries (the defaults for the drivers that call nothing).
    public var call: ProviderCall
    /// Creates a provider.
    public init(name: String, driver: any ChannelDriver, call: ProviderCall = ProviderCall()) {
        self.name = name
        self.driver = driver
        self.call = call
    }
}

/// A channel's providers in order, and whether a circuit breaker skips a failing one.
public struct ChannelLineup: Sendable {
    /// At least one provider, tried in order.
    public var providers: [ProviderDriver]
    /// The breaker's settings; nil: no breaker (the single-provider form).
    public var breaker: BreakerSettings?
    /// Creates a lineup.
    public init(providers: [ProviderDriver], breaker: BreakerSettings? = nil) {
        precondition(!providers.isEmpty, "a channel has at least one provider")
        self.providers = providers
        self.breaker = breaker
    }
    /// One provider without a breaker.
    public init(_ driver: any ChannelDriver, call: ProviderCall = ProviderCall()) {
        self.init(providers: [ProviderDriver(name: driver.name, driver: driver, call: call)])
    }
}
