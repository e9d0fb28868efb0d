import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import NIOSSL
import OTPService
import ServiceLifecycle

/// The one HTTP client every provider call goes through: async-http-client, pooled, HTTP/2 where the server
/// offers it (APNs), with connect and read timeouts, and a call's own deadline on top.
///
/// A channel's extra trust roots (`ca_file`) travel with its requests, so one client serves them all. Run it as a
/// `Service` (last in the group's order of shutdown) so its connections close when otpd stops.
public final class ProviderHTTP: Service, Sendable {
    /// The largest answer body read; a longer one is cut short (the status still decides).
    public static let maxResponseBody = 64 * 1024

    let client: HTTPClient

    /// Creates the client on `group`.
    public init(group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton) {
        var configuration = HTTPClient.Configuration()
        configuration.timeout = .init(connect: .seconds(5), read: .seconds(30))
        configuration.redirectConfiguration = .disallow  // a provider that redirects is misconfigured
        configuration.decompression = .disabled
        configuration.httpVersion = .automatic
        configuration.connectionPool = .init(idleTimeout: .seconds(60))
        // Above the dispatcher's lanes (16 messages in flight per channel): the pool must not be what queues a
        // channel's sends behind a provider that hangs.
        configuration.connectionPool.concurrentHTTP1ConnectionsPerHostSoftLimit = 64
        // A refused or failed connection fails the call at once: the dispatcher retries with its own backoff and
        // then falls back to the next channel, instead of the pool retrying until the call's deadline.
        configuration.connectionPool.retryConnectionEstablishment = false
        client = HTTPClient(eventLoopGroup: group, configuration: configuration)
    }

    /// Runs until graceful shutdown, then closes every pooled connection.
    public func run() async throws {
        try? await gracefulShutdown()
        try? await client.shutdown()
    }

    /// Closes every pooled connection (for users that run no service group: tests, otpctl).
    public func shutdown() async {
        try? await client.shutdown()
    }

    /// A provider's answer: its status, headers and (bounded) body, nil when cut short.
    public struct Response: Sendable {
        /// The HTTP status.
        public var status: Int
        /// The headers.
        public var headers: HTTPHeaders
        /// The body, nil when longer than `maxResponseBody`.
        public var body: [UInt8]?
        /// The body as a JSON object, if it is one.
        public var json: [String: Any]? {
            guard let body, !body.isEmpty else { return nil }
            return (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any]
        }
    }

    /// Sends one request and waits for its answer within `timeoutMs`; the failure, when there is no answer,
    /// is a reason naming neither a code nor a destination.
    public func send(
        _ method: HTTPMethod,
        _ url: String,
        headers: HTTPHeaders,
        body: [UInt8]?,
        tls: TLSConfiguration?,
        timeoutMs: Int64
    ) async -> Result<Response, TransportFailure> {
        var request = HTTPClientRequest(url: url)
        request.method = method
        request.headers = headers
        if let body { request.body = .bytes(body) }
        request.tlsConfiguration = tls
        do {
            let response = try await client.execute(request, timeout: .milliseconds(timeoutMs))
            var collected: [UInt8]? = []
            do {
                let buffer = try await response.body.collect(upTo: Self.maxResponseBody)
                collected = Array(buffer.readableBytesView)
            } catch is NIOTooManyBytesError {
                collected = nil
            }
            return .success(Response(status: Int(response.status.code), headers: response.headers, body: collected))
        } catch {
            return .failure(TransportFailure(error))
        }
    }

    /// The TLS configuration of a channel: the system's roots, plus those of `caFile` (PEM) when given; nil when
    /// there is nothing to add. A file that cannot be read is a configuration error naming `key`.
    public static func tls(caFile: String?, file: String, key: String) throws(ConfigurationError) -> TLSConfiguration? {
        guard let caFile else { return nil }
        let certificates: [NIOSSLCertificate]
        do { certificates = try NIOSSLCertificate.fromPEMFile(caFile) } catch {
            throw ConfigurationError(file: file, key: key, message: "cannot read PEM certificates from '\(caFile)'")
        }
        guard !certificates.isEmpty else {
            throw ConfigurationError(file: file, key: key, message: "'\(caFile)' holds no certificate")
        }
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.additionalTrustRoots = [.certificates(certificates)]
        return tls
    }
}

/// Why a call got no answer: a short reason for `delivery_failed` (never a code or a destination).
public struct TransportFailure: Error, Sendable, Equatable, CustomStringConvertible {
    /// The reason.
    public var reason: String
    /// Whether the request may have reached the provider (the deadline passed or the connection dropped after
    /// the connection was made): a provider without idempotency may have acted on it.
    public var mayHaveBeenSent: Bool

    /// Classifies a client error.
    init(_ error: any Error) {
        reason = Self.classify(error)
        if let e = error as? HTTPClientError {
            mayHaveBeenSent = [.deadlineExceeded, .readTimeout, .remoteConnectionClosed].contains(e)
        } else {
            mayHaveBeenSent = false
        }
    }

    public var description: String { reason }

    static func classify(_ error: any Error) -> String {
        if let e = error as? HTTPClientError {
            switch e {
            case .deadlineExceeded, .readTimeout, .writeTimeout, .connectTimeout: return "timeout"
            case .tlsHandshakeTimeout: return "timeout in the TLS handshake"
            case .remoteConnectionClosed: return "connection closed before a complete answer"
            case .cancelled: return "cancelled"
            case .invalidURL, .emptyHost, .emptyScheme: return "bad provider URL"
            default: return "request failed"
            }
        }
        if let e = error as? NIOSSLError {
            if case .handshakeFailed(let inner) = e, "\(inner)".contains("CERTIFICATE_VERIFY_FAILED") {
                return "TLS certificate not trusted"
            }
            return "TLS handshake failed"
        }
        if error is BoringSSLError { return "TLS handshake failed" }
        if isRefused(error) { return "connection refused" }
        if let e = error as? NIOConnectionError {
            if let inner = e.connectionErrors.first?.error { return classify(inner) }
            if e.dnsAAAAError != nil || e.dnsAError != nil { return "host not found" }
            return "connection failed"
        }
        if let e = error as? ChannelError, case .connectTimeout = e { return "timeout" }
        if error is HTTPParserError { return "malformed answer" }
        return "request failed"
    }

    private static func isRefused(_ error: any Error) -> Bool {
        if let io = error as? IOError { return io.errnoCode == ECONNREFUSED }
        if let all = error as? NIOConnectionError {
            return !all.connectionErrors.isEmpty && all.connectionErrors.allSatisfy { isRefused($0.error) }
        }
        return false
    }
}

extension ProviderHTTP.Response {
    /// A string field of a JSON answer.
    func string(_ key: String) -> String? { json?[key] as? String }
}
