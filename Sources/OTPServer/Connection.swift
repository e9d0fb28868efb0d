import Logging
import NIOCore
import OTPService
import RESP
import Synchronization

/// The open connections, for `maxConnections` and for a graceful shutdown: which are idle (closed at once) and
/// which are answering (closed once they have answered what they read), and when the last one is gone.
final class ConnectionRegistry: Sendable {
    private struct State {
        var next = 0
        var open: [Int: Entry] = [:]
        var shuttingDown = false
        var waiters: [CheckedContinuation<Void, Never>] = []
    }

    private struct Entry {
        var channel: any Channel
        var busy: Bool
    }

    private let limit: Int
    private let state = Mutex(State())

    init(limit: Int) {
        self.limit = limit
    }

    /// Admits a connection; nil when the server is full or shutting down.
    func register(_ channel: any Channel) -> Int? {
        state.withLock { s -> Int? in
            guard !s.shuttingDown, s.open.count < limit else { return nil }
            s.next += 1
            s.open[s.next] = Entry(channel: channel, busy: false)
            return s.next
        }
    }

    /// Marks a connection busy or idle; returns false when it should close (a shutdown began).
    func setBusy(_ id: Int, _ busy: Bool) -> Bool {
        state.withLock { s in
            s.open[id]?.busy = busy
            return !s.shuttingDown
        }
    }

    /// Forgets a connection that has closed and has nothing in flight.
    func remove(_ id: Int) {
        let waiters = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            s.open[id] = nil
            guard s.open.isEmpty else { return [] }
            defer { s.waiters = [] }
            return s.waiters
        }
        for w in waiters { w.resume() }
    }

    /// Admits no more connections, and returns the idle ones to close.
    func shutDown() -> [any Channel] {
        state.withLock { s in
            s.shuttingDown = true
            return s.open.values.filter { !$0.busy }.map(\.channel)
        }
    }

    /// Every connection, to close when the server is cancelled.
    func all() -> [any Channel] {
        state.withLock { s in
            s.shuttingDown = true
            return s.open.values.map(\.channel)
        }
    }

    /// Returns once no connection is open (call after `shutDown`).
    func drained() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let now = state.withLock { s -> Bool in
                if s.open.isEmpty { return true }
                s.waiters.append(c)
                return false
            }
            if now { c.resume() }
        }
    }
}

/// One client connection, served on its channel's event loop.
///
/// Requests are answered one at a time, in order. What needs no database (PING, ECHO, HELLO, AUTH, CLIENT, a
/// refusal) is answered right there, without a task or a thread hop, and the replies to one read go out in one
/// write. A session command runs in a task of its own; until it is answered the connection reads nothing more,
/// and its reply goes out at once with those before it, so a pipeline of ISSUEs is answered as each commits.
/// An idle connection holds no task: only its channel, its pipeline and this handler.
///
/// Back-pressure: while the channel is not writable (the client does not read its replies), the connection
/// answers and reads nothing, and if that lasts `writeTimeout` it is closed. From the first SUBSCRIBE on,
/// everything the connection is sent goes through its `SubscriberQueue`, which a writer task drains.
final class ConnectionHandler: ChannelDuplexHandler {
    typealias InboundIn = [RESPRequest]
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    struct Settings {
        var flushBytes: Int
        var writeTimeout: Duration
        var authTimeout: Duration
    }

    private let handler: CommandHandler
    private let registry: ConnectionRegistry
    private let telemetry: Telemetry
    private let logger: Logger
    private let settings: Settings
    private var state: ConnectionState

    /// The registry's id; nil before the connection is admitted and after it is forgotten.
    private var id: Int?
    private var started = false
    /// The requests read and not yet answered, from `next` on.
    private var queue: [RESPRequest] = []
    private var next = 0
    /// A framing error or request timeout, answered after the requests read before it.
    private var protocolError: RESPProtocolError?
    /// Registered as answering (a shutdown waits for it).
    private var busy = false
    /// A session command is in flight.
    private var running = false
    /// The connection is ending: nothing more is read or answered.
    private var closing = false
    /// The channel has closed.
    private var closed = false
    /// A read the channel asked for, held back while requests wait.
    private var heldRead = false
    private var out = ByteBuffer()
    private var writeDeadline: Scheduled<Void>?
    private var authDeadline: Scheduled<Void>?
    private var writer: Task<Void, Never>?
    private var subscriptionsEnded = false

    init(
        handler: CommandHandler,
        registry: ConnectionRegistry,
        telemetry: Telemetry,
        logger: Logger,
        settings: Settings
    ) {
        self.handler = handler
        self.registry = registry
        self.telemetry = telemetry
        self.logger = logger
        self.settings = settings
        self.state = handler.newConnection()
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { start(context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        start(context)
        context.fireChannelActive()
    }

    private func start(_ context: ChannelHandlerContext) {
        guard !started else { return }
        started = true
        let channel = context.channel
        guard let id = registry.register(channel) else {
            closing = true
            var busy = context.channel.allocator.buffer(capacity: 64)
            WireError(code: .busy, message: "too many connections or shutting down").reply
                .encode(into: &busy, protocolVersion: 2)
            context.writeAndFlush(wrapOutboundOut(busy)).whenComplete { _ in channel.close(promise: nil) }
            return
        }
        self.id = id
        telemetry.connectionsChanged(by: 1)
        // Without a tenant yet, the connection has `authTimeout` to authenticate.
        if state.tenant == nil {
            authDeadline = context.eventLoop.scheduleTask(in: .init(settings.authTimeout)) {
                channel.close(promise: nil)
            }
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !closing else { return }
        if next == queue.count {
            queue.removeAll(keepingCapacity: true)
            next = 0
        }
        queue.append(contentsOf: unwrapInboundIn(data))
        serve(context)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        guard !closing else { return }
        if let e = error as? RESPProtocolError {
            protocolError = e
            serve(context)
        } else {
            logger.debug("connection ended", metadata: ["error": "\(error)"])
            context.close(promise: nil)
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable {
            writeDeadline?.cancel()
            writeDeadline = nil
            serve(context)
        } else {
            // From the moment replies back up, not only when a request waits for them: a client that stops
            // reading after its last request would otherwise hold the connection open, unread, forever.
            waitForWritable(context)
        }
        context.fireChannelWritabilityChanged()
    }

    func channelInactive(context: ChannelHandlerContext) {
        closed = true
        closing = true
        writeDeadline?.cancel()
        authDeadline?.cancel()
        endSubscriptions()
        retireIfDone()
        context.fireChannelInactive()
    }

    /// Reads only when every request read so far is answered and the client takes its replies.
    func read(context: ChannelHandlerContext) {
        if closing || running || next < queue.count || !context.channel.isWritable {
            heldRead = true
        } else {
            context.read()
        }
    }

    /// Answers the waiting requests in order, until one waits on the database, the client stops taking replies,
    /// or none is left.
    private func serve(_ context: ChannelHandlerContext) {
        guard !closing, !running, let id else { return }
        while next < queue.count {
            guard context.channel.isWritable else {
                waitForWritable(context)
                return
            }
            if !busy {
                busy = true
                guard registry.setBusy(id, true) else { return end(context) }
            }
            let request = queue[next]
            next += 1
            switch handler.answer(request, state: &state) {
            case .now(let reply):
                guard send(reply, context) else { return }
            case .later(let pending):
                run(pending, context)
                return
            }
        }
        queue.removeAll()
        next = 0
        if let error = protocolError {
            protocolError = nil
            _ = send(WireError(code: .proto, message: error.reason).reply, context)
            return end(context)
        }
        flush(context)
        if busy {
            busy = false
            guard registry.setBusy(id, false) else { return end(context) }
        }
        if heldRead {
            heldRead = false
            context.read()
        }
    }

    /// Runs a session command off the event loop, then goes on serving with its reply.
    private func run(_ pending: CommandHandler.PendingCommand, _ context: ChannelHandlerContext) {
        running = true
        let handler = self.handler
        let loop = context.eventLoop
        let bound = NIOLoopBound((self, context), eventLoop: loop)
        Task {
            let reply = await handler.complete(pending)
            loop.execute {
                let (connection, context) = bound.value
                connection.answered(reply, context)
            }
        }
    }

    private func answered(_ reply: RESPValue, _ context: ChannelHandlerContext) {
        running = false
        guard !closed else { return retireIfDone() }
        guard send(reply, context) else { return }
        // A reply that waited on the database goes out at once, with those before it.
        flush(context)
        serve(context)
    }

    /// Adds a reply to what goes out; false when the connection is ending (QUIT).
    private func send(_ reply: RESPValue, _ context: ChannelHandlerContext) -> Bool {
        if let queue = state.subscriber {
            if writer == nil {
                // The replies before the first SUBSCRIBE go first, through the queue too.
                queue.enqueue(bytes: out)
                out.clear()
                writer = Self.startWriter(queue, to: context.channel, within: settings.writeTimeout)
            }
            queue.enqueue(reply, protocolVersion: state.protocolVersion)
        } else {
            reply.encode(into: &out, protocolVersion: state.protocolVersion)
        }
        if state.tenant != nil, let pending = authDeadline {
            pending.cancel()
            authDeadline = nil
        }
        if state.closeAfterReply {
            end(context)
            return false
        }
        if out.readableBytes >= settings.flushBytes { flush(context) }
        return true
    }

    private func flush(_ context: ChannelHandlerContext) {
        guard out.readableBytes > 0 else { return }
        context.writeAndFlush(wrapOutboundOut(out), promise: nil)
        out = ByteBuffer()
    }

    /// Answers and reads nothing until the channel is writable again; closes it if that takes `writeTimeout`.
    private func waitForWritable(_ context: ChannelHandlerContext) {
        guard writeDeadline == nil else { return }
        let channel = context.channel
        writeDeadline = context.eventLoop.scheduleTask(in: .init(settings.writeTimeout)) {
            channel.close(promise: nil)
        }
    }

    /// Ends the connection once what it has been answered is sent (or `writeTimeout` has passed).
    private func end(_ context: ChannelHandlerContext) {
        closing = true
        let channel = context.channel
        if writer != nil {
            // The writer sends what the queue holds, then closes the channel.
            endSubscriptions()
            return
        }
        let bytes = out
        out = ByteBuffer()
        context.writeAndFlush(wrapOutboundOut(bytes)).whenComplete { _ in channel.close(promise: nil) }
        let timeout = context.eventLoop.scheduleTask(in: .init(settings.writeTimeout)) { channel.close(promise: nil) }
        channel.closeFuture.whenComplete { _ in timeout.cancel() }
    }

    private func endSubscriptions() {
        guard !subscriptionsEnded else { return }
        subscriptionsEnded = true
        handler.endSubscriptions(state)
    }

    private func retireIfDone() {
        guard closed, !running, let id else { return }
        self.id = nil
        registry.remove(id)
        telemetry.connectionsChanged(by: -1)
    }

    /// The subscribed connection's writer: sends what its queue holds, in order, until the queue ends; then
    /// closes the connection (the queue ends only when the connection does).
    private static func startWriter(
        _ queue: SubscriberQueue,
        to channel: any Channel,
        within timeout: Duration
    ) -> Task<Void, Never> {
        queue.onCutOff = {
            // The writer ends the output once the error is written; a client that does not read even that is
            // closed after a grace.
            channel.eventLoop.scheduleTask(in: .seconds(5)) { channel.close(promise: nil) }
        }
        return Task {
            // A write fails only once the connection is closing.
            while let bytes = await queue.next() {
                let deadline = channel.eventLoop.scheduleTask(in: .init(timeout)) { channel.close(promise: nil) }
                defer { deadline.cancel() }
                guard (try? await channel.writeAndFlush(bytes)) != nil else { return }
            }
            // Only the output when cut off: closing while the client's requests are still unread would reset the
            // connection, and the client could lose the error before it.
            if queue.wasCutOff {
                channel.close(mode: .output, promise: nil)
            } else {
                channel.close(promise: nil)
            }
        }
    }
}
