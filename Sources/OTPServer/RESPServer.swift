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

/// The TCP server: RESP/inline framing on the event loop, one task per connection, replies in request order;
/// behind TLS when the configuration has a certificate.
///
/// On graceful shutdown it stops accepting, lets each connection finish the request in flight, then closes it.
public final class RESPServer: Service {
    let configuration: ServerConfiguration
    let handler: CommandHandler
    let logger: Logger
    let group: any EventLoopGroup
    let onListening: @Sendable (HostPort) -> Void
    /// Counts the open connections (`otpd_connections`).
    let telemetry: Telemetry
    private let connections = Mutex(Registry())

    private struct Registry {
        var next = 0
        var open: [Int: Entry] = [:]
        var shuttingDown = false
    }

    private struct Entry {
        var channel: any Channel
        var busy: Bool
    }

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
    }

    /// Binds, accepts and serves until graceful shutdown.
    public func run() async throws {
        let (address, limits, timeout) = (configuration.address, configuration.limits, configuration.requestTimeout)
        let tls = configuration.tls
        let requestTimeout = TimeAmount(timeout)
        let server = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .serverChannelOption(.backlog, value: 1024)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .bind(host: address.host, port: address.port) { channel in
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
                    return try NIOAsyncChannel<[RESPRequest], ByteBuffer>(wrappingChannelSynchronously: channel)
                }
            }
        onListening(HostPort(host: address.host, port: server.channel.localAddress?.port ?? address.port))

        try await withGracefulShutdownHandler {
            try await withThrowingDiscardingTaskGroup { group in
                try await server.executeThenClose { inbound in
                    for try await connection in inbound {
                        group.addTask { await self.serve(connection) }
                    }
                }
            }
        } onGracefulShutdown: {
            server.channel.close(promise: nil)
            let idle = self.connections.withLock { r -> [any Channel] in
                r.shuttingDown = true
                return r.open.values.filter { !$0.busy }.map(\.channel)
            }
            for c in idle { c.close(promise: nil) }
        }
    }

    private func register(_ channel: any Channel) -> Int? {
        connections.withLock { r -> Int? in
            guard !r.shuttingDown, r.open.count < configuration.maxConnections else { return nil }
            r.next += 1
            r.open[r.next] = Entry(channel: channel, busy: false)
            return r.next
        }
    }

    /// Marks a connection busy or idle; returns false when it should close (shutdown began while idle).
    private func setBusy(_ id: Int, _ busy: Bool) -> Bool {
        connections.withLock { r in
            r.open[id]?.busy = busy
            return !r.shuttingDown
        }
    }

    private func serve(_ connection: NIOAsyncChannel<[RESPRequest], ByteBuffer>) async {
        guard let id = register(connection.channel) else {
            try? await connection.executeThenClose { _, outbound in
                var out = ByteBuffer()
                WireError(code: .busy, message: "too many connections or shutting down").reply
                    .encode(into: &out, protocolVersion: 2)
                try await outbound.write(out)
            }
            return
        }
        telemetry.connectionsChanged(by: 1)
        defer {
            _ = connections.withLock { $0.open.removeValue(forKey: id) }
            telemetry.connectionsChanged(by: -1)
        }
        var state = handler.newConnection()
        let channel = connection.channel
        let (flushBytes, writeTimeout) = (configuration.outboundFlushBytes, configuration.writeTimeout)
        // Without a tenant yet, the connection has `authTimeout` to authenticate.
        var authDeadline: Scheduled<Void>? =
            state.tenant == nil
            ? channel.eventLoop.scheduleTask(in: .init(configuration.authTimeout)) { channel.close(promise: nil) }
            : nil
        defer { authDeadline?.cancel() }
        do {
            try await connection.executeThenClose { inbound, outbound in
                func write(_ buffer: ByteBuffer) async throws {
                    try await Self.write(buffer, to: outbound, of: channel, within: writeTimeout)
                }
                // From the first SUBSCRIBE on, every reply and message goes through the connection's queue,
                // and a writer task sends them in order while the loop goes on reading requests. Only a
                // subscribed connection has one (`startWriter`), so the others' frames stay as small as before.
                var writer: Task<Void, Never>?
                defer { handler.endSubscriptions(state) }
                var out = ByteBuffer()
                do {
                    // One batch is every request decoded from one read: its replies go out together, in
                    // writes of about `outboundFlushBytes`; but a reply that waited on the database goes out at
                    // once with those before it, so a pipeline of ISSUEs is answered as each commits, not at
                    // the end.
                    for try await batch in inbound {
                        guard setBusy(id, true) else { break }
                        out.clear()
                        for request in batch {
                            let reply = await handler.handle(request, state: &state)
                            if let q = state.subscriber {
                                if writer == nil {
                                    // The replies before the first SUBSCRIBE go first, through the queue too.
                                    q.enqueue(bytes: out)
                                    out.clear()
                                    writer = Self.startWriter(q, to: outbound, of: channel, within: writeTimeout)
                                }
                                q.enqueue(reply, protocolVersion: state.protocolVersion)
                            } else {
                                reply.encode(into: &out, protocolVersion: state.protocolVersion)
                            }
                            if state.tenant != nil, let pending = authDeadline {
                                pending.cancel()
                                authDeadline = nil
                            }
                            if state.closeAfterReply { break }
                            if out.readableBytes >= flushBytes || state.lastAnswerTook > .milliseconds(1) {
                                try await write(out)
                                out.clear()
                            }
                        }
                        if out.readableBytes > 0 { try await write(out) }
                        if state.closeAfterReply || !setBusy(id, false) { break }
                    }
                } catch let e as RESPProtocolError {
                    let error = WireError(code: .proto, message: e.reason).reply
                    if let queue = state.subscriber, writer != nil {
                        queue.enqueue(error, protocolVersion: state.protocolVersion)
                    } else {
                        out.clear()
                        error.encode(into: &out, protocolVersion: state.protocolVersion)
                        try await write(out)
                    }
                }
                handler.endSubscriptions(state)
                await writer?.value
            }
        } catch {
            logger.debug("connection ended", metadata: ["error": "\(error)"])
        }
    }

    /// Writes, closing the connection when the client has not taken the bytes within `timeout`.
    private static func write(
        _ buffer: ByteBuffer,
        to outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>,
        of channel: any Channel,
        within timeout: Duration
    ) async throws {
        let deadline = channel.eventLoop.scheduleTask(in: .init(timeout)) { channel.close(promise: nil) }
        defer { deadline.cancel() }
        try await outbound.write(buffer)
    }

    /// The subscribed connection's writer: sends what its queue holds, in order, until the queue ends.
    private static func startWriter(
        _ queue: SubscriberQueue,
        to outbound: NIOAsyncChannelOutboundWriter<ByteBuffer>,
        of channel: any Channel,
        within timeout: Duration
    ) -> Task<Void, Never> {
        queue.onCutOff = {
            // The writer ends the output once the error is written; a client that does not read even that is
            // closed after a grace.
            channel.eventLoop.scheduleTask(in: .seconds(5)) { channel.close(promise: nil) }
        }
        return Task {
            // A write fails only once the connection is closing; its loop then ends the queue.
            while let bytes = await queue.next() {
                guard (try? await write(bytes, to: outbound, of: channel, within: timeout)) != nil else { return }
            }
            // Only the output: closing while the client's requests are still unread would reset the connection,
            // and the client could lose the error before it.
            if queue.wasCutOff { channel.close(mode: .output, promise: nil) }
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
