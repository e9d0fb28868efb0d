import Foundation
import NIOCore
import NIOSSL

/// How the connection to the mail server is protected.
public enum SMTPSecurity: String, Sendable {
    /// Plain text first, then `STARTTLS` (RFC 3207); a server that does not offer it gets nothing but `QUIT`.
    case starttls
    /// TLS from the first byte (SMTPS, port 465 style, RFC 8314).
    case implicit
    /// Plain text throughout; `AUTH` is then never sent.
    case none
}

/// The bounds on each stage of a conversation with the mail server.
///
/// RFC 5321 section 4.5.3.2 asks a client to wait minutes at each stage (5 for the greeting, MAIL and RCPT,
/// 2 for DATA, 10 after the final dot). An OTP is worth seconds, not minutes, and a failure here is retried or
/// escalated, so the defaults are deliberately shorter but still generous for a healthy relay: 10 s to connect,
/// 30 s for the greeting (which covers the handshake with implicit TLS), 30 s for each other reply (and for the
/// STARTTLS handshake), 60 s after the final dot, when the server may be scanning the message, and 2 s for the
/// answer to `QUIT`, which changes nothing. A timeout after the final dot leaves the outcome unknown: the server
/// may still deliver the message.
public struct SMTPTimeouts: Sendable, Equatable {
    /// Opening the TCP connection.
    public var connect: Duration
    /// From the connection to the complete greeting (with implicit TLS, the handshake included).
    public var greeting: Duration
    /// Each reply to a command, and the STARTTLS handshake.
    public var command: Duration
    /// The reply after the final `.` of the message.
    public var dataEnd: Duration
    /// The reply to `QUIT`; after it the connection is closed regardless.
    public var quit: Duration
    /// The whole conversation, from the connection to the answer after the message; nil: only the stages'.
    public var total: Duration?

    /// Creates the bounds; each has a default.
    public init(
        connect: Duration = .seconds(10),
        greeting: Duration = .seconds(30),
        command: Duration = .seconds(30),
        dataEnd: Duration = .seconds(60),
        quit: Duration = .seconds(2),
        total: Duration? = nil
    ) {
        self.connect = connect
        self.greeting = greeting
        self.command = command
        self.dataEnd = dataEnd
        self.quit = quit
        self.total = total
    }
}

/// Where and how to deliver mail: one server, its protection, credentials and bounds.
public struct SMTPConfiguration: Sendable {
    /// The server's host name or IP address.
    public var host: String
    /// The server's TCP port.
    public var port: Int
    /// Plain text, STARTTLS or implicit TLS. With `.starttls` a server that does not offer STARTTLS gets nothing
    /// after EHLO but QUIT, and the outcome is permanent.
    public var security: SMTPSecurity
    /// The AUTH user; nil sends no AUTH. AUTH is only ever sent over TLS, so with `.none` a user is refused.
    public var username: String?
    /// The AUTH password; required with `username`. Never logged nor put into an outcome.
    public var password: String?
    /// The name sent with EHLO (a domain or an address literal).
    public var helo: String
    /// Trust roots (from a PEM `ca_file`) added to the system's; nil trusts the system roots alone.
    public var trustRoots: [NIOSSLCertificate]?
    /// The name checked against the server's certificate and sent as SNI; nil uses `host`. An IP address is
    /// checked against the certificate's IP addresses and sends no SNI.
    public var serverName: String?
    /// A complete TLS configuration that replaces the one made from `trustRoots` (to pin roots, say).
    public var tlsConfiguration: TLSConfiguration?
    /// The bound on each stage of the conversation.
    public var timeouts: SMTPTimeouts

    /// Creates a configuration. Without a port, the security's usual one: 587 (STARTTLS), 465 (implicit) or 25.
    public init(
        host: String,
        port: Int? = nil,
        security: SMTPSecurity = .starttls,
        username: String? = nil,
        password: String? = nil,
        helo: String = SMTPConfiguration.defaultHelo,
        trustRoots: [NIOSSLCertificate]? = nil,
        timeouts: SMTPTimeouts = SMTPTimeouts(),
        serverName: String? = nil,
        tlsConfiguration: TLSConfiguration? = nil
    ) {
        self.host = host
        self.port = port ?? Self.defaultPort(for: security)
        self.security = security
        self.username = username
        self.password = password
        self.helo = helo
        self.trustRoots = trustRoots
        self.serverName = serverName
        self.tlsConfiguration = tlsConfiguration
        self.timeouts = timeouts
    }

    /// The usual port of each kind of security: 587, 465 or 25.
    public static func defaultPort(for security: SMTPSecurity) -> Int {
        switch security {
        case .starttls: 587
        case .implicit: 465
        case .none: 25
        }
    }

    /// This machine's host name (`gethostname`, no resolver lookup) when it is a usable EHLO name, else
    /// `localhost`.
    public static var defaultHelo: String {
        var buffer = [CChar](repeating: 0, count: 256)
        guard gethostname(&buffer, buffer.count - 1) == 0 else { return "localhost" }
        let name = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return SMTPSyntax.isValidHelo(name) ? name : "localhost"
    }

    /// The TLS configuration a connection uses: `tlsConfiguration`, or the system roots plus `trustRoots`.
    var effectiveTLSConfiguration: TLSConfiguration {
        if let tlsConfiguration { return tlsConfiguration }
        var tls = TLSConfiguration.makeClientConfiguration()
        if let trustRoots, !trustRoots.isEmpty { tls.additionalTrustRoots = [.certificates(trustRoots)] }
        // Our close waits for the server's close_notify at most this long; the outcome is known by then.
        tls.shutdownTimeout = .seconds(2)
        return tls
    }
}

extension SMTPConfiguration: CustomStringConvertible, CustomReflectable {
    /// The configuration with the password redacted, safe for logs.
    public var description: String {
        "SMTPConfiguration(host: \(host), port: \(port), security: \(security.rawValue), "
            + "username: \(username ?? "nil"), password: \(password == nil ? "nil" : "***"), helo: \(helo), "
            + "trustRoots: \(trustRoots?.count ?? 0), serverName: \(serverName ?? "nil"), timeouts: \(timeouts))"
    }

    /// A mirror without the password, so `dump` cannot print it either.
    public var customMirror: Mirror {
        Mirror(
            self,
            children: [
                "host": host, "port": port, "security": security, "username": username as Any,
                "password": password == nil ? "nil" : "***", "helo": helo, "serverName": serverName as Any,
                "timeouts": timeouts,
            ]
        )
    }
}
