import Logging
import NIOCore
import NIOPosix
import NIOSSL
import OTPService
import RESP
import ServiceLifecycle
import Synchronization

/// How the RESP server listens and bounds its clients.
public struct ServerConfiguration: Sendable {
    /// Where to listen; port 0 asks the system for a free one.
    public var address: HostPort
    /// Connections served at once; past it a new one is answered `-BUSY` and closed.
    public var maxConnections = 10_000
    /// The framing limits.
    public var limits = RESPLimits.standard
    /// How long a begun request may take to arrive in full; also how long a TLS handshake may take.
    public var requestTimeout: Duration = .seconds(30)
    /// Replies are written once this many bytes are waiting, before the rest of a pipelined batch is answered,
    /// so a pipeline of large replies never piles up in memory; the write waits while the client does not read,
    /// and so does the reading of its further requests.
    public var outboundFlushBytes = 64 * 1024
    /// How long one write may wait for a client that does not read before its connection is closed (so a
    /// client that never reads cannot hold a connection, or a shutdown, for ever).
    public var writeTimeout: Duration = .seconds(30)
    /// Bytes of replies and live-feed messages that may wait for a subscribed client (SUBSCRIBE) that does not
    /// read; past it the client is sent an error and cut off.
    public var subscriberQueueBytes = 1 << 20
    /// How long a connection may stay unauthenticated when tenants are configured; then it is closed.
    public var authTimeout: Duration = .seconds(10)
    /// The TLS certificate and key; set, the port speaks TLS only (`Configuration.makeTLSContext`).
    public var tls: NIOSSLContext?

    /// Creates a configuration with the defaults.
    public init(address: HostPort) {
        self.address = address
    }
}

/// The TCP server: RESP/inline framing and the connections' commands on the event loops (`ConnectionHandler`),
/// replies in request order; behind TLS when the configuration has a certificate.
///
/// On graceful shutdown it stops accepting, closes the idle connections, lets each busy one answer the
/// requests it has read, then closes it; `run` returns once every connection is gone.
public final class RESPServer: Service {
    let configuration: ServerConfiguration
    let handler: CommandHandler
    let logger: Logger
    let group: any EventLoopGroup
    let onListening: @Sendable (HostPort) -> Void
    /// Counts the open connections (`otpd_connections`).
    let telemetry: Telemetry
    private let connections: ConnectionRegistry

    /// Creates a server; `onListening` is called with the bound address once it accepts connections.
    public init(
        configuration: ServerConfiguration,
        handler: CommandHandler,
        logger: Logger,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        telemetry: Telemetry = Telemetry(),
        onListening: @escaping @Sendable (HostPort) -> Void
    ) {
        self.configuration = configuration
        self.handler = handler
        self.logger = logger
        self.group = group
        self.telemetry = telemetry
        self.onListening = onListening
        self.connections = ConnectionRegistry(limit: configuration.maxConnections)
    }

    /// Binds, accepts and serves until graceful shutdown.
    public func run() async throws {
        let (address, limits, timeout) = (configuration.address, configuration.limits, configuration.requestTimeout)
        let tls = configuration.tls
        let requestTimeout = TimeAmount(timeout)
        let settings = ConnectionHandler.Settings(
            flushBytes: configuration.outboundFlushBytes,
            writeTimeout: configuration.writeTimeout,
            authTimeout: configuration.authTimeout
        )
        let (handler, connections, telemetry, logger) = (self.handler, self.connections, self.telemetry, self.logger)
        let server = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelOption(.backlog, value: 1024)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if let tls {
                        // A client that does not speak TLS fails the handshake, and only its connection ends.
                        try channel.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: tls))
                        try channel.pipeline.syncOperations.addHandler(TLSHandshakeDeadline(timeout: requestTimeout))
                    }
                    let partial = PartialRequestMark()
                    try channel.pipeline.syncOperations.addHandler(
                        ByteToMessageHandler(RESPRequestDecoder(limits: limits, partial: partial))
                    )
                    try channel.pipeline.syncOperations.addHandler(
                        RequestBatcher(partial: partial, requestTimeout: requestTimeout)
                    )
                    try channel.pipeline.syncOperations.addHandler(
                        ConnectionHandler(
                            handler: handler,
                            registry: connections,
                            telemetry: telemetry,
                            logger: logger,
                            settings: settings
                        )
                    )
                }
            }
            .bind(host: address.host, port: address.port).get()
        onListening(HostPort(host: address.host, port: server.localAddress?.port ?? address.port))

        try await withTaskCancellationHandler {
            try await withGracefulShutdownHandler {
                try? await server.closeFuture.get()
                await connections.drained()
            } onGracefulShutdown: {
                server.close(promise: nil)
                for c in connections.shutDown() { c.close(promise: nil) }
            }
        } onCancel: {
            server.close(promise: nil)
            for c in connections.all() { c.close(promise: nil) }
        }
    }
}

/// Gathers the requests decoded from one read into a batch, so the connection answers them in one write; and
/// ends a connection whose request, once begun, is not complete within `requestTimeout`.
///
/// A framing error, or the timeout, is passed on after the batch decoded before it, so those requests are
/// still answered before `-PROTO`. The timeout runs from the first byte of the incomplete request (each request
/// has its own), so a client that trickles bytes is cut off as one that stalls.
final class RequestBatcher: ChannelInboundHandler {
    typealias InboundIn = RESPRequest
    typealias InboundOut = [RESPRequest]

    private var batch: [RESPRequest] = []
    private let partial: PartialRequestMark
    private let requestTimeout: TimeAmount
    private var deadline: Scheduled<Void>?

    init(partial: PartialRequestMark, requestTimeout: TimeAmount) {
        self.partial = partial
        self.requestTimeout = requestTimeout
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        batch.append(unwrapInboundIn(data))
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        // A request completed in this read: the incomplete one after it, if any, is a new request with a
        // timeout of its own.
        let completedOne = !batch.isEmpty
        flush(context)
        if !partial.isSet || completedOne {
            deadline?.cancel()
            deadline = nil
        }
        if partial.isSet && deadline == nil {
            let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            deadline = context.eventLoop.scheduleTask(in: requestTimeout) {
                let (handler, context) = loopBound.value
                handler.deadline = nil
                guard handler.partial.isSet else { return }
                handler.flush(context)
                context.fireErrorCaught(RESPProtocolError.requestTimedOut)
            }
        }
        context.fireChannelReadComplete()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        flush(context)
        context.fireErrorCaught(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        deadline?.cancel()
        deadline = nil
        flush(context)
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        deadline?.cancel()
        deadline = nil
    }

    private func flush(_ context: ChannelHandlerContext) {
        guard !batch.isEmpty else { return }
        let ready = batch
        batch.removeAll(keepingCapacity: true)
        context.fireChannelRead(wrapInboundOut(ready))
    }
}
