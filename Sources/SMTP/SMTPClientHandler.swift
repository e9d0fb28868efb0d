import Foundation
import NIOCore
import NIOSSL
import NIOTLS

/// Drives one `SMTPStateMachine` on a channel: frames replies within the decoder's limits, writes what the
/// machine asks for, arms each stage's timeout, adds TLS for STARTTLS, and completes `promise` with the outcome
/// and closes the connection once it is decided.
///
/// Nothing here logs: commands carry the address and AUTH lines the password, replies the server's free text.
final class SMTPClientHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// What STARTTLS needs: the context and the name to verify (nil for an IP address: no SNI, the address is
    /// checked against the certificate's).
    struct StartTLS: Sendable {
        var context: NIOSSLContext
        var serverHostname: String?
    }

    private var machine: SMTPStateMachine
    private let timeouts: SMTPTimeouts
    private let startTLS: StartTLS?
    private let promise: EventLoopPromise<SMTPOutcome>
    private var received = ReceivedBytes()
    private var decoder = SMTPReplyDecoder()
    private var deadline: Scheduled<Void>?
    private var overall: Scheduled<Void>?
    private var started = false
    private var finished = false

    init(
        machine: SMTPStateMachine,
        timeouts: SMTPTimeouts,
        startTLS: StartTLS?,
        promise: EventLoopPromise<SMTPOutcome>
    ) {
        self.machine = machine
        self.timeouts = timeouts
        self.startTLS = startTLS
        self.promise = promise
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { start(context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        start(context)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !finished else { return }
        let buffer = unwrapInboundIn(data)
        received.append(buffer.readableBytesView)
        while !finished {
            let reply: SMTPReply?
            do {
                reply = try decoder.next(from: &received)
            } catch {
                return perform(context, machine.failed(.reply(error)))
            }
            guard let reply else { return }
            perform(context, machine.receive(reply, moreBuffered: !received.isEmpty))
            // After the STARTTLS 220 nothing more was buffered (the machine checked), and whatever comes now
            // passes through TLS.
            if machine.state == .waiting(.tlsHandshake) { return }
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if case .handshakeCompleted = event as? TLSUserEvent {
            perform(context, machine.tlsEstablished())
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        perform(context, machine.failed(Self.failure(for: error)))
    }

    func channelInactive(context: ChannelHandlerContext) {
        perform(context, machine.connectionClosed())
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        disarm()
        // Only a conversation that began has an outcome here; a failed connect reports its own.
        if started && !finished {
            finished = true
            promise.succeed(.transient("connection closed"))
        }
    }

    // MARK: Actions

    private func start(_ context: ChannelHandlerContext) {
        guard !started else { return }
        started = true
        arm(context, timeouts.greeting)
        if let total = timeouts.total {
            // The conversation's bound: when it passes, the stage it is in decides (unknown after the message).
            let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            overall = context.eventLoop.scheduleTask(in: TimeAmount(total)) {
                let (handler, context) = bound.value
                handler.overall = nil
                handler.perform(context, handler.machine.timedOut())
            }
        }
    }

    private func perform(_ context: ChannelHandlerContext, _ action: SMTPStateMachine.Action) {
        guard !finished else { return }
        switch action {
        case .send(let bytes, let wait):
            write(context, bytes)
            arm(context, wait == .endOfData ? timeouts.dataEnd : timeouts.command)
        case .startTLS:
            guard let startTLS else { return perform(context, machine.failed(.tls("no TLS configuration"))) }
            do {
                let tls = try NIOSSLClientHandler(context: startTLS.context, serverHostname: startTLS.serverHostname)
                arm(context, timeouts.command)
                try context.pipeline.syncOperations.addHandler(tls, position: .first)
            } catch {
                perform(context, machine.failed(.tls("cannot start TLS")))
            }
        case .wait:
            break
        case .quit:
            write(context, SMTPStateMachine.quitCommand)
            arm(context, timeouts.quit)
        case .close(let outcome):
            finished = true
            disarm()
            overall?.cancel()
            overall = nil
            received.removeAll()
            promise.succeed(outcome)
            context.close(promise: nil)
        }
    }

    private func write(_ context: ChannelHandlerContext, _ bytes: [UInt8]) {
        var buffer = context.channel.allocator.buffer(capacity: bytes.count)
        buffer.writeBytes(bytes)
        context.writeAndFlush(wrapOutboundOut(buffer), promise: nil)
    }

    private func arm(_ context: ChannelHandlerContext, _ limit: Duration) {
        disarm()
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        deadline = context.eventLoop.scheduleTask(in: TimeAmount(limit)) {
            let (handler, context) = bound.value
            handler.deadline = nil
            handler.perform(context, handler.machine.timedOut())
        }
    }

    private func disarm() {
        deadline?.cancel()
        deadline = nil
    }

    // MARK: Errors

    /// What an error on the channel means, in words that name no peer data.
    static func failure(for error: any Error) -> SMTPStateMachine.Failure {
        if let extra = error as? NIOSSLExtraError {
            if extra == .failedToValidateHostname || extra == .serverHostnameImpossibleToMatch {
                return .tls("certificate does not match the server name")
            }
            return .tls("TLS error")
        }
        if let ssl = error as? NIOSSLError {
            switch ssl {
            case .handshakeFailed(let inner):
                // BoringSSL's text, not the server's: an untrusted, expired or otherwise unverifiable chain.
                if String(describing: inner).contains("CERTIFICATE_VERIFY_FAILED") {
                    return .tls("certificate not trusted")
                }
                return .tls("handshake error")
            case .uncleanShutdown:
                return .connection("connection closed")
            default:
                return .tls("TLS error")
            }
        }
        if let io = error as? IOError {
            switch io.errnoCode {
            case ECONNRESET: return .connection("connection reset")
            case EPIPE: return .connection("connection closed")
            default: return .connection("connection error")
            }
        }
        return .connection("connection error")
    }
}
