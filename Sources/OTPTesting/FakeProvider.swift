import Foundation
import NIOCore
import NIOHTTP1
import NIOHTTP2
import NIOPosix
import NIOSSL
import Synchronization

/// One HTTP request a `FakeProvider` received.
public struct RecordedRequest: Sendable {
    /// `POST`, `GET`, ...
    public var method: String
    /// The request target: path and query.
    public var path: String
    /// The headers, in order, as sent (HTTP/2 pseudo-headers excluded).
    public var headers: [(name: String, value: String)]
    /// The body bytes, exactly as sent.
    public var body: [UInt8]
    /// `HTTP/1.1` or `HTTP/2`.
    public var version: String

    /// The first value of a header (case-insensitive name).
    public func header(_ name: String) -> String? {
        headers.first { $0.name.caseInsensitiveCompare(name) == .orderedSame }?.value
    }

    /// The body as UTF-8 text.
    public var text: String { String(decoding: body, as: UTF8.self) }

    /// The body as a JSON object, if it is one.
    public var json: [String: Any]? {
        (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any]
    }

    /// The body as form fields (`application/x-www-form-urlencoded`), in order.
    public var form: [(String, String)] {
        text.split(separator: "&").map { pair in
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false).map {
                String($0).replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? String($0)
            }
            return (parts[0], parts.count > 1 ? parts[1] : "")
        }
    }

    /// The first value of a form field.
    public func field(_ name: String) -> String? { form.first { $0.0 == name }?.1 }
}

/// A fake HTTP provider on 127.0.0.1 (a random port) that records requests and answers as told: HTTP/1.1 in
/// clear text, HTTPS with a given certificate, or HTTP/2 over TLS only (ALPN `h2`, as APNs).
///
/// The responder sees each request and returns the status, the body and how long to wait before answering.
/// A status of 0 or less hangs up without answering.
public final class FakeProvider: Sendable {
    /// Decides the answer to one request.
    public typealias Responder = @Sendable (RecordedRequest) async -> (status: Int, body: String, delay: Duration)

    /// How the provider talks.
    public enum Transport: Sendable {
        /// HTTP/1.1 in clear text.
        case plain
        /// HTTP/1.1 over TLS with this certificate chain and key (PEM files).
        case tls(cert: String, key: String)
        /// HTTP/2 over TLS with this certificate chain and key; a client that does not offer `h2` fails.
        case http2(cert: String, key: String)
    }

    /// The port it listens on.
    public let port: Int
    /// `http://127.0.0.1:<port>` or `https://...`, to append a path to.
    public let baseURL: String

    private let recorder: Recorder
    private let serverChannel: any Channel

    private init(port: Int, scheme: String, serverChannel: any Channel, recorder: Recorder) {
        self.port = port
        self.baseURL = "\(scheme)://127.0.0.1:\(port)"
        self.serverChannel = serverChannel
        self.recorder = recorder
    }

    /// Every request received so far, in order.
    public var requests: [RecordedRequest] { recorder.log.withLock { $0 } }

    /// Starts a provider answering every request through `respond`.
    public static func start(
        _ transport: Transport = .plain,
        respond: @escaping Responder
    ) async throws -> FakeProvider {
        let sink = Recorder()
        var ssl: NIOSSLContext?
        var http2 = false
        switch transport {
        case .plain: break
        case .tls(let cert, let key), .http2(let cert, let key):
            var c = TLSConfiguration.makeServerConfiguration(
                certificateChain: try NIOSSLCertificate.fromPEMFile(cert).map { .certificate($0) },
                privateKey: .privateKey(try NIOSSLPrivateKey(file: key, format: .pem))
            )
            if case .http2 = transport {
                c.applicationProtocols = ["h2"]
                http2 = true
            }
            ssl = try NIOSSLContext(configuration: c)
        }
        let context = ssl
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    let sync = channel.pipeline.syncOperations
                    if let context { try sync.addHandler(NIOSSLServerHandler(context: context)) }
                    if http2 {
                        _ = try sync.configureHTTP2Pipeline(
                            mode: .server,
                            connectionConfiguration: .init(),
                            streamConfiguration: .init()
                        ) { stream in
                            stream.eventLoop.makeCompletedFuture {
                                try stream.pipeline.syncOperations.addHandler(
                                    HTTP2FramePayloadToHTTP1ServerCodec()
                                )
                                try stream.pipeline.syncOperations.addHandler(
                                    Exchange(version: "HTTP/2", recorder: sink, respond: respond)
                                )
                            }
                        }
                    } else {
                        try sync.configureHTTPServerPipeline()
                        try sync.addHandler(Exchange(version: "HTTP/1.1", recorder: sink, respond: respond))
                    }
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        guard let port = server.localAddress?.port else {
            try? await server.close()
            throw FakeProviderError.noPort
        }
        return FakeProvider(port: port, scheme: ssl == nil ? "http" : "https", serverChannel: server, recorder: sink)
    }

    /// Starts a plain HTTP/1.1 provider answering every request through `respond`.
    public static func start(respond: @escaping Responder) async throws -> FakeProvider {
        try await start(.plain, respond: respond)
    }

    /// Stops listening (open connections are left to their clients).
    public func stop() async {
        try? await serverChannel.close()
    }
}

/// Where every connection's handler appends what it received.
final class Recorder: Sendable {
    let log = Mutex<[RecordedRequest]>([])
}

/// Collects one request at a time, asks the responder, writes its answer.
private final class Exchange: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let version: String
    let recorder: Recorder
    let respond: FakeProvider.Responder
    private var head: HTTPRequestHead?
    private var body: [UInt8] = []

    init(version: String, recorder: Recorder, respond: @escaping FakeProvider.Responder) {
        self.version = version
        self.recorder = recorder
        self.respond = respond
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h):
            head = h
            body = []
        case .body(let chunk):
            body.append(contentsOf: chunk.readableBytesView)
        case .end:
            guard let h = head else { return }
            head = nil
            let request = RecordedRequest(
                method: h.method.rawValue,
                path: h.uri,
                headers: h.headers.filter { !$0.name.hasPrefix(":") }.map { (name: $0.name, value: $0.value) },
                body: body,
                version: version
            )
            recorder.log.withLock { $0.append(request) }
            let respond = self.respond
            let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
            let loop = context.eventLoop
            let keepAlive = h.isKeepAlive
            let responseVersion = h.version
            Task {
                let answer = await respond(request)
                if answer.delay > .zero { try? await Task.sleep(for: answer.delay) }
                loop.execute {
                    let context = bound.value
                    guard answer.status > 0 else {
                        context.close(promise: nil)  // hang up without answering
                        return
                    }
                    let bytes = ByteBuffer(string: answer.body)
                    var headers = HTTPHeaders()
                    headers.add(name: "Content-Length", value: String(bytes.readableBytes))
                    if !answer.body.isEmpty { headers.add(name: "Content-Type", value: "application/json") }
                    if !keepAlive { headers.add(name: "Connection", value: "close") }
                    let status = HTTPResponseStatus(statusCode: answer.status)
                    context.write(
                        NIOAny(
                            HTTPServerResponsePart.head(
                                HTTPResponseHead(version: responseVersion, status: status, headers: headers)
                            )
                        ),
                        promise: nil
                    )
                    if bytes.readableBytes > 0 {
                        context.write(NIOAny(HTTPServerResponsePart.body(.byteBuffer(bytes))), promise: nil)
                    }
                    let done = context.writeAndFlush(NIOAny(HTTPServerResponsePart.end(nil)))
                    if !keepAlive { done.whenComplete { _ in bound.value.close(promise: nil) } }
                }
            }
        }
    }
}

/// Why a `FakeProvider` could not start.
enum FakeProviderError: Error {
    case noPort
}
