import Foundation
import NIOCore
import NIOPosix
import NIOSSL

/// Sends mail to one SMTP server, one connection per mail.
///
/// Addresses and the configuration are checked before connecting (a bad one is a permanent outcome and nothing
/// is sent). Each call then connects, runs `SMTPStateMachine` through `SMTPClientHandler` within the stage
/// timeouts, and always ends with QUIT (unless the server broke the protocol or went silent) and a close.
/// Cancelling the calling task closes the connection and reports a transient outcome.
public struct SMTPClient: Sendable {
    /// Where and how mail goes.
    public let configuration: SMTPConfiguration
    private let group: any EventLoopGroup
    /// The TLS context every connection shares; nil with `.none` or when it could not be made.
    private let tlsContext: NIOSSLContext?

    /// Creates a client; the TLS context (system roots plus `trustRoots`) is made once, here.
    public init(configuration: SMTPConfiguration, group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        self.configuration = configuration
        self.group = group
        self.tlsContext =
            configuration.security == .none
            ? nil : try? NIOSSLContext(configuration: configuration.effectiveTLSConfiguration)
    }

    /// Delivers one mail and says what became of it.
    public func send(_ mail: SMTPMail) async -> SMTPOutcome {
        if let refusal = refusal(for: mail) { return refusal }
        let c = configuration
        let credentials = c.username.map { SMTPStateMachine.Credentials(username: $0, password: c.password ?? "") }
        let machine = SMTPStateMachine(
            security: c.security,
            helo: c.helo,
            credentials: credentials,
            from: mail.from.address,
            to: mail.to,
            message: MIMEMessage.render(mail)
        )
        let serverHostname = Self.sniName(c.serverName ?? c.host)
        let tls = tlsContext.map { SMTPClientHandler.StartTLS(context: $0, serverHostname: serverHostname) }
        let security = c.security
        let timeouts = c.timeouts

        let loop = group.next()
        let promise = loop.makePromise(of: SMTPOutcome.self)
        let connecting = ClientBootstrap(group: loop)
            .connectTimeout(TimeAmount(timeouts.connect))
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    if security == .implicit, let tls {
                        try sync.addHandler(
                            NIOSSLClientHandler(context: tls.context, serverHostname: tls.serverHostname)
                        )
                    }
                    try sync.addHandler(
                        SMTPClientHandler(
                            machine: machine,
                            timeouts: timeouts,
                            startTLS: security == .starttls ? tls : nil,
                            promise: promise
                        )
                    )
                }
            }
            .connect(host: c.host, port: c.port)
        connecting.whenComplete { result in
            switch result {
            case .success(let channel):
                // However the conversation ends (outcome, cancellation), the connection is closed.
                promise.futureResult.whenComplete { _ in channel.close(promise: nil) }
            case .failure(let error):
                promise.succeed(.transient(Self.connectFailure(error)))
            }
        }
        return await withTaskCancellationHandler {
            (try? await promise.futureResult.get()) ?? .transient("connection failed")
        } onCancel: {
            promise.succeed(.transient("cancelled"))
        }
    }

    /// The permanent outcome of a mail or configuration that cannot be sent, decided before connecting.
    func refusal(for mail: SMTPMail) -> SMTPOutcome? {
        let c = configuration
        guard SMTPSyntax.isValidAddress(mail.to) else { return .permanent("bad recipient address; nothing sent") }
        guard SMTPSyntax.isValidAddress(mail.from.address) else {
            return .permanent("bad sender address; nothing sent")
        }
        guard SMTPSyntax.isValidHelo(c.helo) else { return .permanent("bad EHLO name; nothing sent") }
        guard (1...65_535).contains(c.port) else { return .permanent("bad port; nothing sent") }
        if let username = c.username {
            guard c.security != .none else { return .permanent("AUTH configured without TLS; nothing sent") }
            guard let password = c.password else { return .permanent("AUTH user without a password; nothing sent") }
            guard !username.utf8.contains(0) && !password.utf8.contains(0) else {
                return .permanent("AUTH user or password contains NUL; nothing sent")
            }
        }
        if c.security != .none {
            guard tlsContext != nil else { return .permanent("TLS configuration failed; nothing sent") }
            if let name = Self.sniName(c.serverName ?? c.host), !SMTPSyntax.isValidHelo(name) {
                return .permanent("bad server name for TLS; nothing sent")
            }
        }
        return nil
    }

    /// The name for SNI and certificate checks; nil for an IP address, which NIOSSL checks against the
    /// certificate's IP addresses and must not send as SNI.
    static func sniName(_ name: String) -> String? {
        let bare = name.hasPrefix("[") && name.hasSuffix("]") ? String(name.dropFirst().dropLast()) : name
        if (try? SocketAddress(ipAddress: bare, port: 0)) != nil { return nil }
        return bare
    }

    /// Why a connection could not be opened, without the host's details.
    static func connectFailure(_ error: any Error) -> String {
        if case .connectTimeout? = error as? ChannelError { return "timeout connecting" }
        if let io = error as? IOError, io.errnoCode == ECONNREFUSED { return "connection refused" }
        if let all = error as? NIOConnectionError {
            if all.connectionErrors.isEmpty && (all.dnsAError != nil || all.dnsAAAAError != nil) {
                return "host name not resolved"
            }
            if !all.connectionErrors.isEmpty
                && all.connectionErrors.allSatisfy({ ($0.error as? IOError)?.errnoCode == ECONNREFUSED })
            {
                return "connection refused"
            }
        }
        return "connection failed"
    }
}
