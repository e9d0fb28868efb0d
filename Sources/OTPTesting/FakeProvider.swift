import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// One HTTP request a `FakeProvider` received.
public struct RecordedRequest: Sendable {
    /// `POST`, `GET`, ...
    public var method: String
    /// The request target: path and query.
    public var path: String
    /// The headers, in order, as sent.
    public var headers: [(name: String, value: String)]
    /// The body bytes, exactly as sent.
    public var body: [UInt8]

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
}

/// A fake HTTP/1.1 provider on 127.0.0.1 (a random port) that records requests and answers as told.
///
/// The responder sees each request and returns the status, the body and how long to wait before answering.
/// A status of 0 or less hangs up without answering.
public final class FakeProvider: Sendable {
    /// Decides the answer to one request.
    public typealias Responder = @Sendable (RecordedRequest) async -> (status: Int, body: String, delay: Duration)

    private typealias Connection = NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>

    /// The port it listens on.
    public let port: Int
    /// `http://127.0.0.1:<port>`, to append a path to.
    public var baseURL: String { "http://127.0.0.1:\(port)" }

    private let log: Mutex<[RecordedRequest]>
    private let serverChannel: any Channel
    private let acceptLoop: Mutex<Task<Void, Never>?>

    private init(port: Int, serverChannel: any Channel) {
        self.port = port
        self.serverChannel = serverChannel
        self.log = Mutex([])
        self.acceptLoop = Mutex(nil)
    }

    /// Every request received so far, in order.
    public var requests: [RecordedRequest] { log.withLock { $0 } }

    /// Starts a provider answering every request through `respond`.
    public static func start(respond: @escaping Responder) async throws -> FakeProvider {
        let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .bind(host: "127.0.0.1", port: 0) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    return try Connection(wrappingChannelSynchronously: channel)
                }
            }
        guard let port = server.channel.localAddress?.port else {
            try? await server.channel.close()
            throw FakeProviderError.noPort
        }
        let provider = FakeProvider(port: port, serverChannel: server.channel)
        let task = Task {
            do {
                try await withThrowingDiscardingTaskGroup { group in
                    try await server.executeThenClose { inbound in
                        for try await connection in inbound {
                            group.addTask { await provider.serve(connection, respond: respond) }
                        }
                    }
                }
            } catch {
                // Stopped, or the listening socket failed: either way nothing more is served.
            }
        }
        provider.acceptLoop.withLock { $0 = task }
        return provider
    }

    /// Stops listening, drops open connections and waits until all is closed.
    public func stop() async {
        try? await serverChannel.close()
        let task = acceptLoop.withLock { $0 }
        task?.cancel()
        await task?.value
    }

    private func serve(_ connection: Connection, respond: Responder) async {
        do {
            try await exchange(connection, respond: respond)
        } catch {
            // The client went away, or the provider was stopped.
        }
    }

    private func exchange(_ connection: Connection, respond: Responder) async throws {
        try await connection.executeThenClose { inbound, outbound in
            var head: HTTPRequestHead?
            var body: [UInt8] = []
            for try await part in inbound {
                switch part {
                case .head(let h):
                    head = h
                    body = []
                case .body(let chunk):
                    body.append(contentsOf: chunk.readableBytesView)
                case .end:
                    guard let h = head else { continue }
                    head = nil
                    let request = RecordedRequest(
                        method: h.method.rawValue,
                        path: h.uri,
                        headers: h.headers.map { (name: $0.name, value: $0.value) },
                        body: body
                    )
                    log.withLock { $0.append(request) }
                    let answer = await respond(request)
                    if answer.delay > .zero { try await Task.sleep(for: answer.delay) }
                    guard answer.status > 0 else { return }  // hang up without answering
                    let bytes = ByteBuffer(string: answer.body)
                    var headers = HTTPHeaders()
                    headers.add(name: "Content-Length", value: String(bytes.readableBytes))
                    if !answer.body.isEmpty { headers.add(name: "Content-Type", value: "application/json") }
                    if !h.isKeepAlive { headers.add(name: "Connection", value: "close") }
                    let status = HTTPResponseStatus(statusCode: answer.status)
                    try await outbound.write(
                        .head(HTTPResponseHead(version: h.version, status: status, headers: headers))
                    )
                    if bytes.readableBytes > 0 { try await outbound.write(.body(.byteBuffer(bytes))) }
                    try await outbound.write(.end(nil))
                    if !h.isKeepAlive { return }
                }
            }
        }
    }
}

/// Why a `FakeProvider` could not start.
enum FakeProviderError: Error {
    case noPort
}
