import Crypto
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import OTPDomain

/// A webhook URL the driver cannot use.
public struct WebhookURLError: Error, Sendable, Equatable, CustomStringConvertible {
    /// What is wrong with the URL.
    public var message: String

    /// Creates an error with a message.
    public init(_ message: String) { self.message = message }

    /// The message.
    public var description: String { message }
}

/// Posts each message as one JSON object to an HTTP endpoint.
///
/// Headers: `Content-Type: application/json`, `Idempotency-Key: <message_id>` and, with a secret,
/// `X-OTPD-Signature: sha256=<hex HMAC-SHA256 of the body>`. A 2xx answer accepts the message (a string
/// `provider_ref` in a JSON answer is the provider's reference), 4xx refuses it for good, and 5xx, a refused
/// connection, a malformed answer or no complete answer within the timeout are transient. One HTTP attempt
/// per call: the dispatcher retries.
public struct WebhookDriver: ChannelDriver {
    /// The largest response body read; a longer one is cut short (a 2xx is still accepted, without reference).
    public static let maxResponseBody = 64 * 1024

    /// `webhook`.
    public var name: String { "webhook" }

    /// The host to connect to (without brackets for IPv6).
    public let host: String
    /// The TCP port.
    public let port: Int
    /// The request target: path and query.
    public let path: String
    /// The bound on one call: connect plus complete answer.
    public let timeout: Duration

    private let key: [UInt8]?
    private let group: any EventLoopGroup

    /// Creates a driver posting to `url` (`http://host[:port]/path`), signing with `secret` when given.
    public init(
        url: String,
        secret: String?,
        timeout: Duration,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) throws {
        let target = try Self.parse(url)
        self.host = target.host
        self.port = target.port
        self.path = target.path
        self.timeout = timeout
        self.key = secret.map { Array($0.utf8) }
        self.group = group
    }

    // MARK: URL

    static func parse(_ url: String) throws(WebhookURLError) -> (host: String, port: Int, path: String) {
        guard let schemeEnd = url.range(of: "://") else {
            throw WebhookURLError("webhook URL '\(url)' has no scheme (expected http://host[:port]/path)")
        }
        let scheme = url[..<schemeEnd.lowerBound].lowercased()
        guard scheme == "http" else {
            if scheme == "https" { throw WebhookURLError("https webhook URLs are not supported yet; use http") }
            throw WebhookURLError("unsupported webhook URL scheme '\(scheme)' (expected http)")
        }
        var rest = url[schemeEnd.upperBound...]
        if let hash = rest.firstIndex(of: "#") { rest = rest[..<hash] }
        let authorityEnd = rest.firstIndex(where: { $0 == "/" || $0 == "?" }) ?? rest.endIndex
        let authority = rest[..<authorityEnd]
        var path = String(rest[authorityEnd...])
        if path.isEmpty { path = "/" } else if path.hasPrefix("?") { path = "/" + path }
        guard !authority.contains("@") else { throw WebhookURLError("webhook URL must not contain credentials") }

        var host: Substring
        var portText: Substring?
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else {
                throw WebhookURLError("webhook URL has a bad IPv6 host")
            }
            host = authority[authority.index(after: authority.startIndex)..<close]
            let after = authority[authority.index(after: close)...]
            if !after.isEmpty {
                guard after.hasPrefix(":") else { throw WebhookURLError("webhook URL has a bad IPv6 host") }
                portText = after.dropFirst()
            }
        } else if let colon = authority.lastIndex(of: ":") {
            host = authority[..<colon]
            portText = authority[authority.index(after: colon)...]
        } else {
            host = authority
        }
        guard !host.isEmpty else { throw WebhookURLError("webhook URL has no host") }
        var port = 80
        if let portText {
            guard let p = Int(portText), (1...65_535).contains(p) else {
                throw WebhookURLError("webhook URL has a bad port '\(portText)'")
            }
            port = p
        }
        guard !path.contains(where: { $0 == " " || $0.isNewline }) else {
            throw WebhookURLError("webhook URL path must not contain spaces or line breaks")
        }
        return (String(host), port, path)
    }

    // MARK: Body and signature

    /// The JSON body for a message: sorted keys, as sent and signed.
    static func body(for m: OutboundMessage) -> [UInt8] {
        var object: [String: Any] = [
            "message_id": m.messageId,
            "tenant": m.tenant,
            "session": m.session,
            "channel": m.message.channel.rawValue,
            "to": m.to,
            "text": m.message.text,
            "locale": m.message.locale,
        ]
        switch m.message.channel {
        case .email:
            object["subject"] = m.message.subject ?? ""
            if let html = m.message.html { object["html"] = html }
        case .push:
            object["title"] = m.message.title ?? ""
            if let code = m.message.dataCode { object["data"] = ["code": code] }
        case .voice:
            if let ssml = m.message.ssml { object["ssml"] = ssml }
        case .sms:
            break
        }
        // Only strings and a dictionary of strings: serialization cannot fail.
        let data =
            (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes]))
            ?? Data("{}".utf8)
        return Array(data)
    }

    /// `sha256=<hex HMAC-SHA256 of body keyed by key>`.
    static func signature(body: [UInt8], key: [UInt8]) -> String {
        let mac = HMAC<SHA256>.authenticationCode(for: body, using: SymmetricKey(data: key))
        return "sha256="
            + mac.map { byte in
                let hex = String(byte, radix: 16)
                return byte < 16 ? "0" + hex : hex
            }.joined()
    }

    // MARK: Sending

    /// Posts the message once and classifies the answer.
    public func send(_ message: OutboundMessage) async -> DriverResult {
        let body = Self.body(for: message)
        var headers = HTTPHeaders()
        headers.add(name: "Host", value: hostHeader)
        headers.add(name: "User-Agent", value: "otpd")
        headers.add(name: "Content-Type", value: "application/json")
        headers.add(name: "Content-Length", value: String(body.count))
        headers.add(name: "Idempotency-Key", value: Self.headerSafe(message.messageId))
        headers.add(name: "Connection", value: "close")
        if let key { headers.add(name: "X-OTPD-Signature", value: Self.signature(body: body, key: key)) }
        let head = HTTPRequestHead(version: .http1_1, method: .POST, uri: path, headers: headers)

        let response: WebhookResponse
        do {
            response = try await exchange(head: head, body: body)
        } catch let failure as ExchangeFailure {
            return .transientFailure(failure.reason)
        } catch {
            return .transientFailure("request failed")
        }
        return Self.classify(response)
    }

    static func classify(_ response: WebhookResponse) -> DriverResult {
        let status = response.status
        switch status {
        case 200..<300:
            var ref: String?
            if let body = response.body, !body.isEmpty,
                let object = try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any]
            {
                ref = object["provider_ref"] as? String
            }
            return .accepted(providerRef: ref)
        case 400..<500:
            return .permanentFailure("HTTP \(status)")
        case 500..<600:
            return .transientFailure("HTTP \(status)")
        default:
            // Redirects and other oddities: not followed, and retrying would not change them.
            return .permanentFailure("HTTP \(status)")
        }
    }

    private var hostHeader: String {
        let h = host.contains(":") ? "[\(host)]" : host
        return port == 80 ? h : "\(h):\(port)"
    }

    /// A header value without line breaks (message ids are ours, but never let one split a header).
    private static func headerSafe(_ s: String) -> String {
        String(s.filter { !$0.isNewline })
    }

    private func exchange(head: HTTPRequestHead, body: [UInt8]) async throws -> WebhookResponse {
        let loop = group.next()
        let promise = loop.makePromise(of: WebhookResponse.self)
        let limit = TimeAmount(timeout)
        let deadline = loop.scheduleTask(in: limit) { promise.fail(ExchangeFailure.timeout) }
        promise.futureResult.whenComplete { _ in deadline.cancel() }

        var buffer = ByteBufferAllocator().buffer(capacity: body.count)
        buffer.writeBytes(body)
        let request = buffer
        let maxBody = Self.maxResponseBody

        let connecting = ClientBootstrap(group: loop)
            .connectTimeout(limit)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    try channel.pipeline.syncOperations.addHandler(
                        WebhookExchangeHandler(head: head, body: request, maxBody: maxBody, promise: promise)
                    )
                }
            }
            .connect(host: host, port: port)
        connecting.whenComplete { result in
            switch result {
            case .success(let channel):
                // Whatever ends the exchange (answer, error, timeout) closes the connection.
                promise.futureResult.whenComplete { _ in channel.close(promise: nil) }
            case .failure(let error):
                promise.fail(ExchangeFailure.connect(error))
            }
        }
        return try await withTaskCancellationHandler {
            try await promise.futureResult.get()
        } onCancel: {
            promise.fail(ExchangeFailure.cancelled)
        }
    }
}

/// A provider's answer: the status and the (bounded) body, nil when cut short.
struct WebhookResponse: Sendable {
    var status: Int
    var body: [UInt8]?
}

/// Why an exchange ended without an answer. Reasons name neither the code nor the destination.
enum ExchangeFailure: Error {
    case timeout
    case connect(any Error)
    case closedEarly
    case malformed
    case sendFailed
    case cancelled

    var reason: String {
        switch self {
        case .timeout: "timeout"
        case .connect(let error):
            if Self.isRefused(error) {
                "connection refused"
            } else if case .connectTimeout? = error as? ChannelError {
                "timeout"
            } else {
                "connection failed"
            }
        case .closedEarly: "connection closed before a complete answer"
        case .malformed: "malformed answer"
        case .sendFailed: "request not sent"
        case .cancelled: "cancelled"
        }
    }

    private static func isRefused(_ error: any Error) -> Bool {
        if let io = error as? IOError { return io.errnoCode == ECONNREFUSED }
        if let all = error as? NIOConnectionError {
            return !all.connectionErrors.isEmpty && all.connectionErrors.allSatisfy { isRefused($0.error) }
        }
        return false
    }
}

/// Sends one request when the connection opens and collects the answer into a promise.
private final class WebhookExchangeHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPClientResponsePart
    typealias OutboundOut = HTTPClientRequestPart

    private let head: HTTPRequestHead
    private let body: ByteBuffer
    private let maxBody: Int
    private let promise: EventLoopPromise<WebhookResponse>
    private var status: Int?
    private var collected: [UInt8] = []
    private var done = false

    init(head: HTTPRequestHead, body: ByteBuffer, maxBody: Int, promise: EventLoopPromise<WebhookResponse>) {
        self.head = head
        self.body = body
        self.maxBody = maxBody
        self.promise = promise
    }

    func channelActive(context: ChannelHandlerContext) {
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        let sent = context.eventLoop.makePromise(of: Void.self)
        let promise = self.promise
        sent.futureResult.whenFailure { _ in promise.fail(ExchangeFailure.sendFailed) }
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: sent)
        context.fireChannelActive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !done else { return }
        switch unwrapInboundIn(data) {
        case .head(let response):
            status = Int(response.status.code)
        case .body(let part):
            guard status != nil else { return fail(context, .malformed) }
            if collected.count + part.readableBytes > maxBody {
                // Enough read: the status decides, the reference is lost.
                finish(context, body: nil)
            } else {
                collected.append(contentsOf: part.readableBytesView)
            }
        case .end:
            finish(context, body: collected)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A decoder error (malformed answer) or an I/O error mid-answer.
        fail(context, error is HTTPParserError ? .malformed : .closedEarly)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if !done {
            done = true
            promise.fail(ExchangeFailure.closedEarly)
        }
        context.fireChannelInactive()
    }

    private func finish(_ context: ChannelHandlerContext, body: [UInt8]?) {
        guard !done else { return }
        done = true
        guard let status else {
            promise.fail(ExchangeFailure.malformed)
            context.close(promise: nil)
            return
        }
        promise.succeed(WebhookResponse(status: status, body: body))
        context.close(promise: nil)
    }

    private func fail(_ context: ChannelHandlerContext, _ failure: ExchangeFailure) {
        guard !done else { return }
        done = true
        promise.fail(failure)
        context.close(promise: nil)
    }
}
