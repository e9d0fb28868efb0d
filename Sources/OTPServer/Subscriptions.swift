import Logging
import NIOCore
import OTPDomain
import OTPService
import RESP
import Synchronization

/// A subscribed connection's outgoing bytes: its replies and the live feed's messages, in the order they were
/// queued, drained by the connection's writer. From a connection's first SUBSCRIBE on, everything it is sent
/// goes through here, so no message overtakes the `subscribe` reply before it.
///
/// Bounded: when more than `limit` bytes wait (the client reads slower than its sessions change), what waits is
/// dropped, the client is sent one error saying so, and the connection is closed, as Redis cuts off a pub/sub
/// client past its output buffer limit.
final class SubscriberQueue: LiveSubscriber {
    private struct State {
        var pending = ByteBuffer()
        var protocolVersion: Int
        var waiter: CheckedContinuation<ByteBuffer?, Never>?
        var closed = false
        var cutOff = false
        var onCutOff: @Sendable () -> Void = {}
    }

    /// The connection's id, for the log.
    let connection: Int64
    let limit: Int
    let logger: Logger
    private let state: Mutex<State>

    init(connection: Int64, protocolVersion: Int, limit: Int, logger: Logger) {
        self.connection = connection
        self.limit = limit
        self.logger = logger
        state = Mutex(State(protocolVersion: protocolVersion))
    }

    /// Whether the queue overflowed and the connection is being closed.
    var wasCutOff: Bool { state.withLock { $0.cutOff } }

    /// Called once when the queue overflows: the connection closes it.
    var onCutOff: @Sendable () -> Void {
        get { state.withLock { $0.onCutOff } }
        set { state.withLock { $0.onCutOff = newValue } }
    }

    /// Queues a reply, encoded for `protocolVersion` (which later messages use too: HELLO may change it).
    func enqueue(_ value: RESPValue, protocolVersion: Int) {
        append(protocolVersion: protocolVersion) { value.encode(into: &$0, protocolVersion: $1) }
    }

    /// Queues bytes already encoded.
    func enqueue(bytes: ByteBuffer) {
        guard bytes.readableBytes > 0 else { return }
        append(protocolVersion: nil) { buffer, _ in buffer.writeImmutableBuffer(bytes) }
    }

    /// Queues one feed message: `message session payload`, a push frame in RESP3.
    func deliver(_ message: LiveStatus, stream: String) {
        let frame = RESPValue.push([.bulk("message"), .bulk(message.session), .bulk(message.json)])
        append(protocolVersion: nil) { frame.encode(into: &$0, protocolVersion: $1) }
    }

    private func append(protocolVersion: Int?, _ write: (inout ByteBuffer, Int) -> Void) {
        typealias Outcome = (CheckedContinuation<ByteBuffer?, Never>?, ByteBuffer?, (bytes: Int, then: () -> Void)?)
        let (waiter, bytes, overflowed) = state.withLock { s -> Outcome in
            guard !s.closed else { return (nil, nil, nil) }
            if let protocolVersion { s.protocolVersion = protocolVersion }
            write(&s.pending, s.protocolVersion)
            var overflowed: (bytes: Int, then: () -> Void)?
            if s.pending.readableBytes > limit {
                overflowed = (s.pending.readableBytes, s.onCutOff)
                s.pending.clear()
                let message =
                    "subscriber too slow: more than \(limit) bytes of messages were waiting; closing the connection"
                WireError(code: .err, message: message).reply.encode(
                    into: &s.pending,
                    protocolVersion: s.protocolVersion
                )
                s.cutOff = true
                s.closed = true
            }
            guard let waiter = s.waiter else { return (nil, nil, overflowed) }
            s.waiter = nil
            defer { s.pending = ByteBuffer() }
            return (waiter, s.pending, overflowed)
        }
        if let overflowed {
            logger.warning(
                "live feed: a subscriber that does not read was cut off",
                metadata: ["connection": "\(connection)", "waiting_bytes": "\(overflowed.bytes)"]
            )
            overflowed.then()
        }
        waiter?.resume(returning: bytes)
    }

    /// The bytes queued since the last call, waiting while there are none; nil once closed and drained.
    func next() async -> ByteBuffer? {
        await withCheckedContinuation { (c: CheckedContinuation<ByteBuffer?, Never>) in
            let ready = state.withLock { s -> ByteBuffer?? in
                if s.pending.readableBytes > 0 {
                    defer { s.pending = ByteBuffer() }
                    return .some(s.pending)
                }
                if s.closed { return .some(nil) }
                s.waiter = c
                return .none
            }
            if let ready { c.resume(returning: ready) }
        }
    }

    /// Ends the queue: what waits is still drained, nothing more is queued.
    func close() {
        let waiter = state.withLock { s -> CheckedContinuation<ByteBuffer?, Never>? in
            s.closed = true
            defer { s.waiter = nil }
            return s.pending.readableBytes == 0 ? s.waiter : nil
        }
        waiter?.resume(returning: nil)
    }
}

extension ConnectionState {
    /// Whether the connection is in RESP2's subscribed mode, where only SUBSCRIBE, UNSUBSCRIBE, PING and QUIT
    /// may be sent (RESP3 has no such mode: its messages are push frames).
    var inSubscribedMode: Bool { protocolVersion == 2 && !subscriptions.isEmpty }
}

extension CommandHandler {
    /// The commands a RESP2 connection may send while subscribed, as in Redis.
    static let subscribedModeCommands: Set<String> = ["SUBSCRIBE", "UNSUBSCRIBE", "PING", "QUIT"]

    /// In RESP2's subscribed mode: the refusal of a command it does not allow, or Redis's answer to PING there
    /// (`pong` and the message, as an array); nil for a command that runs as usual. Synchronous on purpose: it
    /// keeps these values out of the async frame every request goes through.
    static func subscribedModeReply(_ name: String, _ raw: [ByteBuffer], sent: String) -> RESPValue? {
        guard subscribedModeCommands.contains(name) else {
            let message =
                "Can't execute '\(Validation.printable(sent).lowercased())': only SUBSCRIBE / UNSUBSCRIBE / PING / QUIT "
                + "are allowed in this context"
            return WireError(code: .err, message: message).reply
        }
        return name == "PING" ? .array([.bulk("pong"), raw.first.map(RESPValue.bulkString) ?? .bulk("")]) : nil
    }

    /// `SUBSCRIBE session [session ...]`: one `subscribe` reply per session, each followed, once read, by the
    /// session's current state and then a message per event.
    func subscribe(_ args: [String], state: inout ConnectionState) throws -> RESPValue {
        guard let feed, let tenant = state.tenant else {
            throw WireError(code: .err, message: "this server has no live feed")
        }
        let ids = try args.map { try Arguments.sessionID($0) }
        let adding = Set(ids).subtracting(state.subscriptions.keys).count
        guard state.subscriptions.count + adding <= Self.subscriptionLimit else {
            throw WireError(
                code: .err,
                message: "too many subscriptions: at most \(Self.subscriptionLimit) sessions per connection"
            )
        }
        let queue = subscriberQueue(&state)
        for id in ids {
            let stream = StreamID(tenant: tenant, session: id).text
            let added = state.subscriptions[id] == nil
            if added { state.subscriptions[id] = stream }
            queue.enqueue(
                .push([.bulk("subscribe"), .bulk(id), .integer(Int64(state.subscriptions.count))]),
                protocolVersion: state.protocolVersion
            )
            if added { feed.subscribe(stream, queue) }
        }
        return .nothing
    }

    /// `UNSUBSCRIBE [session ...]`: from the sessions named, or from all; one `unsubscribe` reply each (one with a
    /// null session when there was none).
    func unsubscribe(_ args: [String], state: inout ConnectionState) throws -> RESPValue {
        let ids = args.isEmpty ? state.subscriptions.keys.sorted() : try args.map { try Arguments.sessionID($0) }
        let queue = subscriberQueue(&state)
        if ids.isEmpty {
            // Subscribed to nothing: one reply with a null session, as in Redis.
            queue.enqueue(.push([.bulk("unsubscribe"), .null, .integer(0)]), protocolVersion: state.protocolVersion)
        }
        for id in ids {
            if let stream = state.subscriptions.removeValue(forKey: id) { feed?.unsubscribe(stream, queue) }
            queue.enqueue(
                .push([.bulk("unsubscribe"), .bulk(id), .integer(Int64(state.subscriptions.count))]),
                protocolVersion: state.protocolVersion
            )
        }
        return .nothing
    }

    /// Leaves every subscription when the connection ends.
    func endSubscriptions(_ state: ConnectionState) {
        guard let queue = state.subscriber else { return }
        for stream in state.subscriptions.values { feed?.unsubscribe(stream, queue) }
        queue.close()
    }

    /// Sessions one connection may follow at once.
    static let subscriptionLimit = 10_000

    private func subscriberQueue(_ state: inout ConnectionState) -> SubscriberQueue {
        if let queue = state.subscriber { return queue }
        let queue = SubscriberQueue(
            connection: state.id,
            protocolVersion: state.protocolVersion,
            limit: subscriberQueueLimit,
            logger: logger
        )
        state.subscriber = queue
        return queue
    }
}
