import Channels
import Crypto
import Foundation
import NIOCore
import NIOPosix
import OTPDomain
import OTPService
import OTPTesting
import PostgresTesting
import Testing

@Suite(.heavy) struct WebhookDriverTests {
    private static let code = "482913"
    private static let phone = "+15555550123"
    private static let renderer = MessageRenderer(settings: MessageSettings(appName: "Acme"))

    private static func outbound(_ channel: DeliveryChannel, to: String = phone) -> OutboundMessage {
        OutboundMessage(
            messageId: "m-\(channel.rawValue)-1",
            tenant: "acme",
            session: "s-42",
            to: to,
            message: renderer.render(channel: channel, code: code, app: nil, locale: "en")
        )
    }

    /// Starts a provider answering `status`/`body` after `delay`, runs `body`, then stops the provider.
    private static func withProvider<T>(
        status: Int = 200,
        body answer: String = "",
        delay: Duration = .zero,
        _ run: (FakeProvider) async throws -> T
    ) async throws -> T {
        let provider = try await FakeProvider.start { _ in (status, answer, delay) }
        do {
            let result = try await run(provider)
            await provider.stop()
            return result
        } catch {
            await provider.stop()
            throw error
        }
    }

    /// Sends one message through a fresh driver and client posting to `url`.
    static func send(
        _ m: OutboundMessage,
        url: String,
        secret: String? = nil,
        timeout: Duration = .seconds(5),
        caFile: String? = nil
    ) async throws -> DriverResult {
        var settings = WebhookSettings(url: url, secret: secret)
        settings.call.timeoutMs = Int64(timeout / .milliseconds(1))
        settings.call.caFile = caFile
        let http = ProviderHTTP()
        let driver = try WebhookDriver(settings, http: http)
        let result = await driver.send(m)
        await http.shutdown()
        return result
    }

    /// Sends one message through a fresh driver pointed at `provider`.
    private static func send(
        _ m: OutboundMessage,
        to provider: FakeProvider,
        path: String = "/otp",
        secret: String? = nil,
        timeout: Duration = .seconds(5)
    ) async throws -> DriverResult {
        try await send(m, url: provider.baseURL + path, secret: secret, timeout: timeout)
    }

    private static func hmacHex(_ body: [UInt8], key: String) -> String {
        let mac = HMAC<SHA256>.authenticationCode(for: body, using: SymmetricKey(data: Array(key.utf8)))
        return mac.map { String(format: "%02x", $0) }.joined()
    }

    /// A transient reason must never leak the code or the destination.
    private static func expectTransient(_ result: DriverResult, sourceLocation: SourceLocation = #_sourceLocation) {
        guard case .transientFailure(let reason, _) = result else {
            Issue.record("expected a transient failure, got \(result)", sourceLocation: sourceLocation)
            return
        }
        #expect(!reason.isEmpty, sourceLocation: sourceLocation)
        #expect(!reason.contains(code), sourceLocation: sourceLocation)
        #expect(!reason.contains(phone), sourceLocation: sourceLocation)
    }

    // MARK: Request shape

    @Test func smsRequestHasTheContractKeysAndHeaders() async throws {
        let m = Self.outbound(.sms)
        try await Self.withProvider { provider in
            let result = try await Self.send(m, to: provider, path: "/hooks/otp?v=1")
            #expect(result == .accepted(providerRef: nil))
            let requests = provider.requests
            try #require(requests.count == 1)
            let r = requests[0]
            #expect(r.method == "POST")
            #expect(r.path == "/hooks/otp?v=1")
            #expect(r.header("Content-Type") == "application/json")
            #expect(r.header("Idempotency-Key") == m.messageId)
            #expect(r.header("User-Agent") == "otpd")
            #expect(r.header("Host") == "127.0.0.1:\(provider.port)")
            #expect(r.header("Content-Length") == String(r.body.count))
            #expect(r.version == "HTTP/1.1")
            #expect(r.header("X-OTPD-Signature") == nil)
            let json = try #require(r.json)
            #expect(Set(json.keys) == ["message_id", "tenant", "session", "channel", "to", "text", "locale"])
            #expect(json["message_id"] as? String == m.messageId)
            #expect(json["tenant"] as? String == "acme")
            #expect(json["session"] as? String == "s-42")
            #expect(json["channel"] as? String == "sms")
            #expect(json["to"] as? String == Self.phone)
            #expect(json["text"] as? String == m.message.text)
            #expect(json["locale"] as? String == "en")
            #expect((json["text"] as? String)?.contains(Self.code) == true)
        }
    }

    @Test func emailRequestHasSubjectAndHTML() async throws {
        let m = Self.outbound(.email, to: "ann@example.com")
        let subject = try #require(m.message.subject)
        let html = try #require(m.message.html)
        try await Self.withProvider { provider in
            let result = try await Self.send(m, to: provider)
            #expect(result == .accepted(providerRef: nil))
            let json = try #require(provider.requests.first?.json)
            #expect(
                Set(json.keys) == [
                    "message_id", "tenant", "session", "channel", "to", "text", "locale",
                    "subject", "html",
                ]
            )
            #expect(json["channel"] as? String == "email")
            #expect(json["to"] as? String == "ann@example.com")
            #expect(json["subject"] as? String == subject)
            #expect(json["html"] as? String == html)
            #expect(json["text"] as? String == m.message.text)
        }
    }

    @Test func pushRequestHasTitleAndDataCode() async throws {
        let m = Self.outbound(.push, to: "device-token-1")
        let title = try #require(m.message.title)
        try await Self.withProvider { provider in
            let result = try await Self.send(m, to: provider)
            #expect(result == .accepted(providerRef: nil))
            let json = try #require(provider.requests.first?.json)
            #expect(
                Set(json.keys) == [
                    "message_id", "tenant", "session", "channel", "to", "text", "locale",
                    "title", "data",
                ]
            )
            #expect(json["channel"] as? String == "push")
            #expect(json["title"] as? String == title)
            let data = try #require(json["data"] as? [String: Any])
            #expect(data.count == 1)
            #expect(data["code"] as? String == Self.code)
        }
    }

    @Test func voiceRequestHasSSML() async throws {
        let m = Self.outbound(.voice)
        let ssml = try #require(m.message.ssml)
        try await Self.withProvider { provider in
            let result = try await Self.send(m, to: provider)
            #expect(result == .accepted(providerRef: nil))
            let json = try #require(provider.requests.first?.json)
            #expect(Set(json.keys) == ["message_id", "tenant", "session", "channel", "to", "text", "locale", "ssml"])
            #expect(json["ssml"] as? String == ssml)
        }
    }

    @Test func bodyIsCompactJSONWithSortedKeys() async throws {
        try await Self.withProvider { provider in
            _ = try await Self.send(Self.outbound(.sms), to: provider)
            let text = try #require(provider.requests.first?.text)
            #expect(text.hasPrefix("{\"channel\":\"sms\",\"locale\":\"en\",\"message_id\":"))
        }
    }

    @Test func signatureIsHMACOfTheExactBodyWhenASecretIsSet() async throws {
        let secret = "s3cr3t-ключ"
        try await Self.withProvider { provider in
            let result = try await Self.send(Self.outbound(.email), to: provider, secret: secret)
            #expect(result == .accepted(providerRef: nil))
            let r = try #require(provider.requests.first)
            #expect(r.header("X-OTPD-Signature") == "sha256=" + Self.hmacHex(r.body, key: secret))
        }
    }

    @Test func noSignatureWithoutASecret() async throws {
        try await Self.withProvider { provider in
            _ = try await Self.send(Self.outbound(.push), to: provider, secret: nil)
            let r = try #require(provider.requests.first)
            #expect(r.header("X-OTPD-Signature") == nil)
        }
    }

    // MARK: Answers

    @Test func okWithProviderRefIsAcceptedWithTheRef() async throws {
        try await Self.withProvider(status: 200, body: #"{"provider_ref":"abc","other":1}"#) { provider in
            let result = try await Self.send(Self.outbound(.sms), to: provider)
            #expect(result == .accepted(providerRef: "abc"))
        }
    }

    @Test func createdWithoutBodyIsAcceptedWithoutRef() async throws {
        try await Self.withProvider(status: 201, body: "") { provider in
            let result = try await Self.send(Self.outbound(.sms), to: provider)
            #expect(result == .accepted(providerRef: nil))
        }
    }

    @Test func okWithNonJSONOrNonStringRefIsAcceptedWithoutRef() async throws {
        try await Self.withProvider(status: 202, body: "queued") { provider in
            let result = try await Self.send(Self.outbound(.sms), to: provider)
            #expect(result == .accepted(providerRef: nil))
        }
        try await Self.withProvider(status: 200, body: #"{"provider_ref":42}"#) { provider in
            let result = try await Self.send(Self.outbound(.sms), to: provider)
            #expect(result == .accepted(providerRef: nil))
        }
    }

    @Test(arguments: [400, 404, 422])
    func clientErrorsArePermanent(status: Int) async throws {
        try await Self.withProvider(status: status, body: #"{"error":"no"}"#) { provider in
            let result = try await Self.send(Self.outbound(.sms), to: provider)
            #expect(result == .permanentFailure("HTTP \(status)"))
        }
    }

    @Test(arguments: [500, 503])
    func serverErrorsAreTransient(status: Int) async throws {
        try await Self.withProvider(status: status) { provider in
            let result = try await Self.send(Self.outbound(.sms), to: provider)
            #expect(result == .transientFailure("HTTP \(status)"))
            Self.expectTransient(result)
        }
    }

    @Test func refusedConnectionIsTransient() async throws {
        let listener = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .bind(host: "127.0.0.1", port: 0).get()
        let port = try #require(listener.localAddress?.port)
        try await listener.close()
        let result = try await Self.send(Self.outbound(.sms), url: "http://127.0.0.1:\(port)/otp", secret: "k")
        Self.expectTransient(result)
        #expect(result == .transientFailure("connection refused", mayHaveBeenSent: false))
    }

    @Test func slowProviderTimesOutAsTransient() async throws {
        try await Self.withProvider(status: 200, body: #"{"provider_ref":"late"}"#, delay: .seconds(3)) { provider in
            let result = try await Self.send(Self.outbound(.sms), to: provider, timeout: .milliseconds(300))
            Self.expectTransient(result)
            // The request went out: retried with the same idempotency key, never handed to another provider.
            #expect(result == .transientFailure("timeout", mayHaveBeenSent: true))
        }
    }

    @Test func hangUpWithoutAnswerIsTransient() async throws {
        try await Self.withProvider(status: 0) { provider in
            let result = try await Self.send(Self.outbound(.sms), to: provider)
            Self.expectTransient(result)
            #expect(provider.requests.count == 1)
        }
    }

    @Test func oversizedAnswerIsCutShortAndStillClassifiedByStatus() async throws {
        let big = #"{"provider_ref":"big","pad":""# + String(repeating: "x", count: 100_000) + #""}"#
        try await Self.withProvider(status: 200, body: big) { provider in
            let result = try await Self.send(Self.outbound(.sms), to: provider)
            #expect(result == .accepted(providerRef: nil))
        }
    }

    @Test(arguments: [
        "garbage\r\n\r\n", "HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{\"provider_ref\"", "HTTP/1.1 abc\r\n\r\n",
    ])
    func malformedAnswerIsTransient(answer: String) async throws {
        let server = try await RawServer.start(answer: answer)
        let result = try await Self.send(
            Self.outbound(.sms),
            url: "http://127.0.0.1:\(server.port)/otp",
            timeout: .seconds(2)
        )
        try? await server.channel.close()
        Self.expectTransient(result)
    }

    // MARK: HTTPS

    @Test func httpsWithTheCAFileIsAcceptedAndWithoutItIsTransient() async throws {
        let files = try await TLSFiles.make()
        defer { files.remove() }
        let provider = try await FakeProvider.start(.tls(cert: files.cert, key: files.key)) { _ in
            (200, #"{"provider_ref":"tls-1"}"#, .zero)
        }
        defer { Task { await provider.stop() } }
        #expect(provider.baseURL.hasPrefix("https://"))
        let trusted = try await Self.send(Self.outbound(.sms), url: provider.baseURL + "/otp", caFile: files.ca)
        #expect(trusted == .accepted(providerRef: "tls-1"))
        #expect(provider.requests.count == 1)
        // The system's roots do not include the test CA: the handshake fails, nothing is posted, and it is
        // transient (retried, then escalated like a 5xx).
        let untrusted = try await Self.send(Self.outbound(.sms), url: provider.baseURL + "/otp")
        Self.expectTransient(untrusted)
        #expect(untrusted == .transientFailure("TLS certificate not trusted"))
        #expect(provider.requests.count == 1)
    }

    @Test func aMissingOrEmptyCAFileIsAConfigurationErrorNamingTheKey() throws {
        var settings = WebhookSettings(url: "https://127.0.0.1:1/otp")
        settings.call.caFile = "/nonexistent/ca.pem"
        let http = ProviderHTTP()
        defer { Task { await http.shutdown() } }
        #expect {
            _ = try WebhookDriver(settings, http: http, file: "otpd.toml", key: "channel.sms")
        } throws: { error in
            "\(error)".hasPrefix("otpd.toml: channel.sms.ca_file: cannot read")
        }
    }

    // MARK: URLs

    @Test(arguments: [
        "http://hooks.example.com:8080/v1/otp?x=1", "HTTPS://example.com", "http://[::1]:9000/h",
        "https://gw.example.com/otp",
    ])
    func acceptsHTTPAndHTTPSURLs(url: String) throws {
        try ProviderURL.check(url, file: "f", key: "channel.sms.url")
    }

    @Test func providerURLsCarryingCredentialsMustBeHTTPSButToLoopback() throws {
        try ProviderURL.check("https://api.twilio.com", file: "f", key: "k", secure: true)
        try ProviderURL.check("http://127.0.0.1:9000", file: "f", key: "k", secure: true)
        try ProviderURL.check("http://localhost:9000", file: "f", key: "k", secure: true)
        try ProviderURL.check("http://gateway.internal/otp", file: "f", key: "k")  // the webhook keeps http
        #expect {
            try ProviderURL.check("http://api.twilio.com", file: "f", key: "channel.sms.base_url", secure: true)
        } throws: { "\($0)".hasPrefix("f: channel.sms.base_url: must be https://") }
    }

    @Test(arguments: [
        "ftp://example.com/otp", "example.com/otp", "http:///otp", "http://u:p@example.com/",
        "http://example.com/#frag", "not a url",
    ])
    func rejectsUnusableURLsNamingTheKey(url: String) {
        #expect {
            try ProviderURL.check(url, file: "f", key: "channel.sms.url")
        } throws: { error in
            "\(error)".hasPrefix("f: channel.sms.url: ")
        }
    }
}

/// A TCP server that answers every connection's first bytes with fixed raw text, then hangs up.
private struct RawServer {
    let channel: any NIOCore.Channel
    let port: Int

    static func start(answer: String) async throws -> RawServer {
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelInitializer { child in
                child.eventLoop.makeCompletedFuture {
                    try child.pipeline.syncOperations.addHandler(RawAnswerHandler(answer: answer))
                }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        let port = try #require(channel.localAddress?.port)
        return RawServer(channel: channel, port: port)
    }
}

private final class RawAnswerHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    private let answer: String
    private var answered = false

    init(answer: String) { self.answer = answer }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !answered else { return }
        answered = true
        let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
        context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: answer))).whenComplete { _ in
            loopBound.value.close(promise: nil)
        }
    }
}
