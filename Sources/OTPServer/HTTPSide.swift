import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import OTPDomain
import OTPService
import Postgres
import ServiceLifecycle
import Synchronization

/// The HTTP side (Hummingbird): health, metrics, providers' receipts, the e-mail's tracking URLs and the
/// analysts' dashboard.
///
/// A receipt that arrives here runs the same `RECEIPT` command as the RESP port, on the session and step its
/// message belongs to, found through the `messages` table (by otpd's message id, the provider's reference or
/// the tracking token; nothing is parsed out of an id). Bodies over 64 KiB are refused with 413.
public final class HTTPSide: Service, Sendable {
    /// The largest request body read.
    public static let maxBody = 64 * 1024

    /// What the endpoints need beyond the command path.
    public struct Settings: Sendable {
        /// Where to listen; port 0 picks a free one.
        public var address: HostPort
        /// The configured base URL; nil: `http://HOST:PORT` as bound.
        public var publicURL: String?
        /// The auth tokens of the Twilio channels: a callback must be signed with one of them.
        public var twilioTokens: [String] = []
        /// The webhook providers' secrets by channel: a receipt must be signed with one of its message's
        /// channel's.
        public var webhookSecrets: [DeliveryChannel: [String]] = [:]
        /// The app's name, on the "show the code" page.
        public var appName = "otpd"
        /// The bearer token `GET /metrics` requires; nil: none (bind to a private address then).
        public var metricsToken: String?
        /// The tenants' credentials, for the dashboard's basic auth; empty: single-tenant, no auth.
        public var tenants: [TenantCredential] = []
        /// Creates the settings.
        public init(address: HostPort) { self.address = address }
    }

    let settings: Settings
    let pool: PGPool
    let sessions: SessionService
    let messages: Messages
    let logger: Logger
    let telemetry: Telemetry
    let analytics: AnalyticsQueries
    let authenticator: Authenticator
    let onListening: @Sendable (HostPort) -> Void
    private let bound = Mutex<String?>(nil)

    /// Creates the HTTP side; `telemetry` is what `GET /metrics` shows; `onListening` is called with the bound
    /// address once it accepts connections.
    public init(
        settings: Settings,
        pool: PGPool,
        sessions: SessionService,
        messages: Messages,
        logger: Logger,
        telemetry: Telemetry = Telemetry(),
        onListening: @escaping @Sendable (HostPort) -> Void
    ) {
        self.settings = settings
        self.pool = pool
        self.sessions = sessions
        self.messages = messages
        self.logger = logger
        self.telemetry = telemetry
        self.analytics = AnalyticsQueries(pool: pool)
        self.authenticator = Authenticator(settings.tenants)
        self.onListening = onListening
    }

    /// The base URL callbacks and tracking links are built on: the configured one, else the bound address;
    /// nil before the listener is bound (when no `public_url` is configured).
    public var publicURL: String? {
        settings.publicURL ?? bound.withLock { $0 }
    }

    /// Serves until graceful shutdown.
    public func run() async throws {
        let app = Hummingbird.Application(
            router: router(),
            configuration: .init(
                address: .hostname(settings.address.host, port: settings.address.port),
                serverName: "otpd"
            ),
            onServerRunning: { [self] (channel: any Channel) in
                let port = channel.localAddress?.port ?? settings.address.port
                let address = HostPort(host: settings.address.host, port: port)
                let host = address.host.contains(":") ? "[\(address.host)]" : address.host
                bound.withLock { $0 = "http://\(host):\(port)" }
                onListening(address)
            },
            logger: logger
        )
        try await app.run()
    }

    /// The request context: Hummingbird's, with the 64 KiB body limit.
    struct Context: RequestContext {
        var coreContext: CoreRequestContextStorage
        init(source: ApplicationRequestContextSource) { coreContext = .init(source: source) }
        var maxUploadSize: Int { HTTPSide.maxBody }
    }

    func router() -> Router<Context> {
        let router = Router(context: Context.self)
        router.get("/healthz") { _, _ in await self.health() }
        router.get("/metrics") { request, _ in self.metrics(request) }
        router.post("/receipts/twilio") { request, _ in await self.twilio(request) }
        router.post("/receipts/webhook") { request, _ in await self.webhook(request) }
        router.get("/o/{token}") { _, context in await self.opened(context.parameters.get("token"), image: true) }
        router.get("/c/{token}") { _, context in await self.opened(context.parameters.get("token"), image: false) }
        router.get("/dashboard") { request, _ in await self.dashboard(request, json: false) }
        router.get("/dashboard.json") { request, _ in await self.dashboard(request, json: true) }
        return router
    }

    // MARK: Endpoints

    func health() async -> Response {
        // The probe races a 1 s timer and the first to finish answers: nothing waits for a probe stuck on a
        // database that stopped answering (a libpq call is not cancellable).
        let pool = self.pool
        let answered = await withCheckedContinuation { (c: CheckedContinuation<Bool, Never>) in
            let once = Mutex(Optional(c))
            let finish: @Sendable (Bool) -> Void = { ok in once.withLock { $0.take() }?.resume(returning: ok) }
            Task { finish((try? await pool.withConnection { conn in try conn.query("SELECT 1") }) != nil) }
            Task {
                try? await Task.sleep(for: .seconds(1))
                finish(false)
            }
        }
        if !answered { telemetry.databaseError() }
        return answered ? Self.text(.ok, "ok") : Self.text(.serviceUnavailable, "database unavailable")
    }

    /// The Prometheus text exposition; with `metrics_token` set, only for `Authorization: Bearer <token>`
    /// (compared in constant time), 401 otherwise.
    func metrics(_ request: Request) -> Response {
        if let token = settings.metricsToken {
            // Compared as digests, so neither the time nor an early length check tells anything of the token.
            let given = Data(SHA256.hash(data: Array((request.headers[.authorization] ?? "").utf8)))
            let wanted = Data(SHA256.hash(data: Array(("Bearer " + token).utf8)))
            guard Self.constantTimeEqual(given.base64EncodedString(), wanted.base64EncodedString()) else {
                var headers = HTTPFields()
                headers[.contentType] = "text/plain; charset=utf-8"
                headers[.wwwAuthenticate] = "Bearer realm=\"otpd metrics\""
                return Response(
                    status: .unauthorized,
                    headers: headers,
                    body: .init(byteBuffer: ByteBuffer(string: "metrics_token required\n"))
                )
            }
        }
        var headers = HTTPFields()
        headers[.contentType] = Telemetry.contentType
        headers[.cacheControl] = "no-store"
        return Response(
            status: .ok,
            headers: headers,
            body: .init(byteBuffer: ByteBuffer(bytes: telemetry.exposition()))
        )
    }

    func twilio(_ request: Request) async -> Response {
        let body: [UInt8]
        switch await Self.body(request) {
        case .failure(let response): return response
        case .success(let b): body = b
        }
        let form = FormFields.decode(String(decoding: body, as: UTF8.self))
        guard let signature = request.headers[HTTPField.Name("X-Twilio-Signature")!], let base = publicURL,
            settings.twilioTokens.contains(where: {
                TwilioSignature.matches(signature, url: base + request.uri.string, form: form, authToken: $0)
            })
        else { return Self.text(.forbidden, "signature missing or wrong\n") }
        let fields = Dictionary(form, uniquingKeysWith: { first, _ in first })
        let found: (channel: DeliveryChannel, ref: String, outcome: ReceiptOutcome?)
        if let sid = fields["MessageSid"], let status = fields["MessageStatus"] {
            found = (.sms, sid, TwilioSignature.messageOutcome(status))
        } else if let sid = fields["CallSid"], let status = fields["CallStatus"] {
            found = (.voice, sid, TwilioSignature.callOutcome(status))
        } else {
            return Self.text(.badRequest, "expected MessageSid and MessageStatus, or CallSid and CallStatus\n")
        }
        let detail = fields["ErrorCode"].map { "Twilio error " + String($0.prefix(8).filter(\.isNumber)) }
        let messages = self.messages
        let row: Messages.Row?
        do {
            row = try await pool.withConnection { conn in
                try messages.find(providerRef: found.ref, channel: found.channel, on: conn)
            }
        } catch {
            telemetry.databaseError()
            return Self.text(.serviceUnavailable, "database unavailable\n")
        }
        // Unknown to us: 200, so Twilio does not retry it.
        guard let row else { return Self.text(.ok, "unknown message\n") }
        guard let outcome = found.outcome else { return Response(status: .noContent) }  // a status we do not record
        return await receipt(row, outcome: outcome, detail: detail)
    }

    func webhook(_ request: Request) async -> Response {
        let body: [UInt8]
        switch await Self.body(request) {
        case .failure(let response): return response
        case .success(let b): body = b
        }
        guard let object = (try? JSONSerialization.jsonObject(with: Data(body))) as? [String: Any],
            let messageId = object["message_id"] as? String, let outcomeText = object["outcome"] as? String
        else { return Self.text(.badRequest, "expected JSON with message_id and outcome\n") }
        let detail = object["detail"] as? String
        let messages = self.messages
        let row: Messages.Row?
        do {
            row = try await pool.withConnection { conn in try messages.find(messageId: messageId, on: conn) }
        } catch {
            telemetry.databaseError()
            return Self.text(.serviceUnavailable, "database unavailable\n")
        }
        guard let row else { return Self.text(.notFound, "unknown message id\n") }
        guard let given = request.headers[HTTPField.Name("X-OTPD-Signature")!],
            settings.webhookSecrets[row.channel, default: []].contains(where: {
                Self.constantTimeEqual(given, Self.webhookSignature(body: body, secret: $0))
            })
        else { return Self.text(.forbidden, "signature missing or wrong\n") }
        let command: SessionCommand
        do {
            command = try Arguments.receipt(channel: row.channel.rawValue, outcome: outcomeText, detail: detail)
        } catch {
            return Self.text(.badRequest, "\(error)\n")
        }
        guard case .recordReceipt(_, let outcome, let checked, _) = command else {
            return Self.text(.badRequest, "\n")
        }
        return await receipt(row, outcome: outcome, detail: checked)
    }

    /// The e-mail's open image or "show the code" page: the first fetch records `opened` for its step. The
    /// answer does not depend on the token, so it tells nothing about one.
    func opened(_ token: String?, image: Bool) async -> Response {
        if let token, token.count == 32, token.allSatisfy(\.isHexDigit) {
            let messages = self.messages
            let row = try? await pool.withConnection { conn in try messages.find(tracking: token, on: conn) }
            if let row, row.channel == .email {
                _ = await receipt(row, outcome: .opened, detail: nil)
            }
        }
        var headers = HTTPFields()
        headers[.cacheControl] = "no-store"
        if image {
            headers[.contentType] = "image/gif"
            return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: Self.gif)))
        }
        headers[.contentType] = "text/html; charset=utf-8"
        headers[.contentSecurityPolicy] =
            "default-src 'none'; script-src 'sha256-\(Self.showScriptHash)'; style-src 'unsafe-inline'"
        headers[HTTPField.Name("Referrer-Policy")!] = "no-referrer"
        let app = TemplateText.escapeHTML(settings.appName)
        // The code travels in the link's fragment (`/c/<token>#123456`), which browsers never send: the page reads
        // it, so the code is in no request, log or answer, and the answer is the same for every token.
        let page = """
            <!doctype html><html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">\
            <title>\(app)</title></head><body style="font-family:sans-serif;max-width:32em;margin:3em auto">\
            <h1>\(app)</h1><p>Your code:</p><p id="code" style="font-size:40px;font-weight:bold;letter-spacing:6px">\
            </p><p>Enter it in \(app). Didn't ask for a code? You can ignore the e-mail.</p>\
            <script>\(Self.showScript)</script></body></html>
            """
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(string: page)))
    }

    /// `/dashboard` and `/dashboard.json`: the last 24 hours of the tenant whose `analyst` credential came with
    /// basic auth (`tenant:token`), or of `default` in single-tenant mode.
    func dashboard(_ request: Request, json: Bool) async -> Response {
        let tenant: String
        switch analystTenant(request) {
        case .refusal(let response): return response
        case .tenant(let t): tenant = t
        }
        let figures: DashboardFigures
        do {
            figures = try await analytics.dashboard(tenant: tenant)
        } catch {
            logger.warning("http: dashboard figures not read", metadata: ["error": "\(error)"])
            return Self.text(.serviceUnavailable, "database unavailable\n")
        }
        var headers = HTTPFields()
        headers[.cacheControl] = "no-store"
        headers[HTTPField.Name("X-Content-Type-Options")!] = "nosniff"
        let body: [UInt8]
        if json {
            do { body = try Dashboard.json(figures, tenant: tenant) } catch {
                return Self.text(.internalServerError, "figures not encoded\n")
            }
            headers[.contentType] = "application/json"
        } else {
            body = Array(Dashboard.html(figures, tenant: tenant).utf8)
            headers[.contentType] = "text/html; charset=utf-8"
            headers[.contentSecurityPolicy] = Dashboard.contentSecurityPolicy
            headers[HTTPField.Name("Referrer-Policy")!] = "no-referrer"
        }
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }

    /// The dashboard's tenant: `default` without tenants; else basic auth's, when its credential is an `analyst`'s
    /// (401 without a valid credential, 403 with one lacking the role).
    func analystTenant(_ request: Request) -> TenantOrRefusal {
        if authenticator.isEmpty { return .tenant("default") }
        guard let header = request.headers[.authorization], let given = Self.basicCredentials(header),
            let credential = authenticator.credential(tenant: given.tenant, token: given.token)
        else {
            var response = Self.text(.unauthorized, "credentials required (basic auth, tenant:token)\n")
            response.headers[.wwwAuthenticate] = "Basic realm=\"otpd\""
            response.headers[.cacheControl] = "no-store"
            return .refusal(response)
        }
        guard credential.roles.contains(.analyst) else {
            var response = Self.text(.forbidden, "the credential lacks the analyst role\n")
            response.headers[.cacheControl] = "no-store"
            return .refusal(response)
        }
        return .tenant(credential.name)
    }

    /// A tenant, or the answer refusing the request.
    enum TenantOrRefusal {
        case tenant(String)
        case refusal(Response)
    }

    /// `Basic base64(tenant:token)` → (tenant, token); the token may hold colons, the tenant not.
    static func basicCredentials(_ header: String) -> (tenant: String, token: String)? {
        let parts = header.split(separator: " ", maxSplits: 1)
        guard parts.count == 2, parts[0].lowercased() == "basic",
            let data = Data(base64Encoded: parts[1].trimmingCharacters(in: .whitespaces)),
            let text = String(data: data, encoding: .utf8), let colon = text.firstIndex(of: ":")
        else { return nil }
        return (String(text[..<colon]), String(text[text.index(after: colon)...]))
    }

    /// Runs RECEIPT on the message's session and step.
    func receipt(_ row: Messages.Row, outcome: ReceiptOutcome, detail: String?) async -> Response {
        let command = SessionCommand.recordReceipt(
            channel: row.channel,
            outcome: outcome,
            detail: detail.map { String($0.prefix(256)) },
            token: row.token
        )
        do {
            _ = try await sessions.execute(command, on: row.stream)
            return Response(status: .noContent)
        } catch is Rejection {
            return Response(status: .noContent)  // nothing to record (an erased session, say): nothing to retry
        } catch {
            logger.warning("http: receipt not recorded", metadata: ["stream": "\(row.stream)", "error": "\(error)"])
            return Self.text(.serviceUnavailable, "not recorded; try again\n")
        }
    }

    // MARK: Helpers

    /// The body, at most 64 KiB (413 past it).
    static func body(_ request: Request) async -> BodyOrRefusal {
        if let length = request.headers[.contentLength].flatMap({ Int($0) }), length > maxBody {
            return .failure(text(.contentTooLarge, "body larger than 64 KiB\n"))
        }
        do {
            let buffer = try await request.body.collect(upTo: maxBody)
            return .success(Array(buffer.readableBytesView))
        } catch {
            return .failure(text(.contentTooLarge, "body larger than 64 KiB\n"))
        }
    }

    /// A request's body, or the answer refusing it.
    enum BodyOrRefusal {
        case success([UInt8])
        case failure(Response)
    }

    static func text(_ status: HTTPResponse.Status, _ text: String) -> Response {
        var headers = HTTPFields()
        headers[.contentType] = "text/plain; charset=utf-8"
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(string: text)))
    }

    /// `sha256=<hex HMAC-SHA256 of the body>`, as the webhook driver signs.
    static func webhookSignature(body: [UInt8], secret: String) -> String {
        let mac = HMAC<SHA256>.authenticationCode(for: body, using: SymmetricKey(data: Array(secret.utf8)))
        return "sha256=" + Hex.encode(Array(mac))
    }

    static func constantTimeEqual(_ a: String, _ b: String) -> Bool {
        let (x, y) = (Array(a.utf8), Array(b.utf8))
        guard x.count == y.count else { return false }
        return zip(x, y).reduce(0) { $0 | ($1.0 ^ $1.1) } == 0
    }

    /// The show-the-code page's script: the fragment's digits into the page, nothing else.
    static let showScript =
        "var c=decodeURIComponent(location.hash.slice(1));"
        + "document.getElementById('code').textContent=/^[0-9]{4,10}$/.test(c)?c:'(see the e-mail)';"

    /// The script's SHA-256 in base64, for the page's Content-Security-Policy.
    static let showScriptHash = Data(SHA256.hash(data: Array(showScript.utf8))).base64EncodedString()

    /// A transparent 1x1 GIF.
    static let gif: [UInt8] = [
        0x47, 0x49, 0x46, 0x38, 0x39, 0x61, 0x01, 0x00, 0x01, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0xFF, 0xFF,
        0xFF, 0x21, 0xF9, 0x04, 0x01, 0x00, 0x00, 0x00, 0x00, 0x2C, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00,
        0x00, 0x02, 0x02, 0x44, 0x01, 0x00, 0x3B,
    ]
}

/// Twilio's request signature and status words.
public enum TwilioSignature {
    /// `base64(HMAC-SHA1(auth_token, url + each form key and value, sorted by key))`, as Twilio documents it.
    public static func compute(url: String, form: [(String, String)], authToken: String) -> String {
        var data = url
        for (k, v) in form.sorted(by: { $0.0 == $1.0 ? $0.1 < $1.1 : $0.0 < $1.0 }) { data += k + v }
        let mac = HMAC<Insecure.SHA1>.authenticationCode(
            for: Array(data.utf8),
            using: SymmetricKey(data: Array(authToken.utf8))
        )
        return Data(mac).base64EncodedString()
    }

    /// Whether `signature` is Twilio's for this request (compared in constant time).
    public static func matches(_ signature: String, url: String, form: [(String, String)], authToken: String) -> Bool {
        HTTPSide.constantTimeEqual(signature, compute(url: url, form: form, authToken: authToken))
    }

    /// A message status's receipt: `delivered`, `read` → delivered, opened; `undelivered`, `failed` → failed.
    static func messageOutcome(_ status: String) -> ReceiptOutcome? {
        switch status {
        case "delivered": .delivered
        case "read": .opened
        case "undelivered", "failed": .failed
        default: nil
        }
    }

    /// A call status's receipt: `completed` → delivered; `busy`, `no-answer`, `failed`, `canceled` → failed.
    static func callOutcome(_ status: String) -> ReceiptOutcome? {
        switch status {
        case "completed": .delivered
        case "busy", "no-answer", "failed", "canceled": .failed
        default: nil
        }
    }
}

/// `application/x-www-form-urlencoded` bodies.
enum FormFields {
    /// The pairs in order (`+` is a space; bad percent escapes are kept as written).
    static func decode(_ text: String) -> [(String, String)] {
        text.split(separator: "&", omittingEmptySubsequences: true).map { pair in
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            let key = unescape(parts[0])
            let value = parts.count > 1 ? unescape(parts[1]) : ""
            return (key, value)
        }
    }

    static func unescape(_ s: Substring) -> String {
        let spaced = s.replacingOccurrences(of: "+", with: " ")
        return spaced.removingPercentEncoding ?? spaced
    }
}
