import OTPDomain
import OTPService

/// The server's configuration: the TOML file, then environment, then flags (`Configuration+TOML.swift` reads
/// the file). Plain nested values, passed down from `main`.
public struct Configuration: Sendable {
    /// Where the RESP port listens.
    public var listen = HostPort(host: "127.0.0.1", port: 7379)
    /// The database; nil: an embedded cluster under `dataDirectory/pg`.
    public var databaseURL: String?
    /// Connections in the pool.
    public var databasePoolSize = 8
    /// Whether commands share transactions (`group_commit`); off by default (docs/BENCHMARKS.md says why).
    public var groupCommit = false
    /// Where the secret and the embedded cluster live.
    public var dataDirectory = ".otpd"
    /// The app's name in messages.
    public var appName = "otpd"
    /// The domain of the origin-bound line (`@acme.example #123456`) in SMS.
    public var appDomain: String?
    /// The Android SMS Retriever hash line in SMS.
    public var androidAppHash: String?
    /// The operator's own message templates (`[templates.<channel>.<locale>]`) by channel and locale tag.
    public var templates: [DeliveryChannel: [String: OwnTemplate]] = [:]
    /// The tenants and their credentials; empty: single-tenant mode, no AUTH.
    public var tenants: [TenantCredential] = []
    /// Each configured channel's providers (the `log` driver where absent).
    public var channels: [DeliveryChannel: ChannelProviders] = [:]
    /// The fallback flows; empty: the built-in default.
    public var policies: [Policy] = []
    /// `[[test_destination]]`: destinations that send nothing and verify with their configured code.
    public var testDestinations = TestDestinations()
    /// Pacing and abuse limits.
    public var limits = Limits()
    /// `[prices]`: what a message costs by channel and country calling code.
    public var prices = Prices()
    /// The server secret in hex, when given inline.
    public var secret: String?
    /// The file holding the secret, when not `dataDirectory/secret`.
    public var secretFile: String?
    /// The TLS certificate chain (PEM, the server's certificate first) of the RESP port; with `tlsKey`, the
    /// port speaks TLS only.
    public var tlsCert: String?
    /// The TLS private key (PEM, unencrypted) of the RESP port.
    public var tlsKey: String?
    /// The CA certificates (PEM) that must have signed a client's certificate; nil: no client certificate asked.
    public var tlsClientCA: String?
    /// Connections served at once; past it new ones are answered `-BUSY`.
    public var maxConnections = 10_000
    /// Where the HTTP side (receipts, tracking, health) listens; nil: no HTTP side.
    public var httpListen: HostPort?
    /// The base URL providers and mail clients reach the HTTP side under; nil: `http://HOST:PORT` as bound.
    public var publicURL: String?
    /// The bearer token `GET /metrics` requires (`Authorization: Bearer <token>`); nil: no auth.
    public var metricsToken: String?
    /// The file this configuration was read from, named in errors found after parsing.
    public var file = "config"

    /// The defaults: log driver everywhere, no tenants, the built-in default policy.
    public init() {}

    /// A channel's providers (the `log` driver when not configured).
    public func channel(_ c: DeliveryChannel) -> ChannelProviders { channels[c] ?? .log }

    /// Whether any channel prints codes (development only).
    public var printsCodes: Bool { DeliveryChannel.allCases.contains { channel($0).uses("log") } }
}

/// A `HOST:PORT` pair.
public struct HostPort: Sendable, Hashable, CustomStringConvertible {
    /// A host name or address (IPv6 without brackets).
    public var host: String
    /// The port; 0 asks the system for a free one.
    public var port: Int

    /// Creates an address.
    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

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

extension Configuration {
    /// The start's one line about test destinations, nil without any: which they are, so nobody mistakes a
    /// run that sends nothing for a provider outage.
    public var testDestinationsWarning: String? {
        guard !testDestinations.isEmpty else { return nil }
        let list = testDestinations.entries.map { "\($0.destination.channel.rawValue):\($0.destination.address)" }
        return "test destinations send nothing and verify with their configured code: "
            + list.joined(separator: ", ")
    }
}
