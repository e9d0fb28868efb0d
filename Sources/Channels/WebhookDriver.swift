import Crypto
import Foundation
import NIOHTTP1
import NIOSSL
import OTPDomain
import OTPService

/// Posts each message as one JSON object to the team's own gateway (`http://` or `https://`).
///
/// Headers: `Content-Type: application/json`, `Idempotency-Key: <message_id>` and, with a secret,
/// `X-OTPD-Signature: sha256=<hex HMAC-SHA256 of the body>`. A 2xx answer accepts the message (a string
/// `provider_ref` in a JSON answer is the provider's reference, a decimal string `price` what it cost), 4xx
/// refuses it for good, and 5xx, a refused connection, a certificate that does not verify, a malformed answer
/// or no answer within the timeout are transient. One HTTP attempt per call: the dispatcher retries.
public struct WebhookDriver: ChannelDriver {
    /// `webhook`.
    public var name: String { "webhook" }

    let url: String
    let key: [UInt8]?
    let timeoutMs: Int64
    let tls: TLSConfiguration?
    let http: ProviderHTTP

    /// Creates a driver from its settings; `file` and `key` name the table in errors.
    public init(
        _ settings: WebhookSettings,
        http: ProviderHTTP,
        file: String = "config",
        key: String = "channel"
    ) throws(ConfigurationError) {
        try ProviderURL.check(settings.url, file: file, key: key + ".url")
        url = settings.url
        self.key = settings.secret.map { Array($0.utf8) }
        timeoutMs = settings.call.timeoutMs
        tls = try ProviderHTTP.tls(caFile: settings.call.caFile, file: file, key: key + ".ca_file")
        self.http = http
    }

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
        return JSONBody.encode(object)
    }

    /// `sha256=<hex HMAC-SHA256 of body keyed by key>`.
    public static func signature(body: [UInt8], key: [UInt8]) -> String {
        "sha256=" + Hex.encode(Array(HMAC<SHA256>.authenticationCode(for: body, using: SymmetricKey(data: key))))
    }

    /// Posts the message once and classifies the answer.
    public func send(_ message: OutboundMessage) async -> DriverResult {
        let body = Self.body(for: message)
        var headers = HTTPHeaders()
        headers.add(name: "User-Agent", value: "otpd")
        headers.add(name: "Content-Type", value: "application/json")
        headers.add(name: "Idempotency-Key", value: message.messageId)
        if let key { headers.add(name: "X-OTPD-Signature", value: Self.signature(body: body, key: key)) }
        switch await http.send(.POST, url, headers: headers, body: body, tls: tls, timeoutMs: timeoutMs) {
        case .failure(let failure): return .transientFailure(failure.reason, mayHaveBeenSent: failure.mayHaveBeenSent)
        case .success(let response): return Self.classify(response)
        }
    }

    static func classify(_ response: ProviderHTTP.Response) -> DriverResult {
        switch response.status {
        case 200..<300:
            // A gateway may say what the message cost: `"price": "0.0123"` (a decimal string).
            .accepted(
                providerRef: response.string("provider_ref"),
                price: response.string("price").flatMap(Money.init(decimal:))
            )
        case 500..<600: .transientFailure("HTTP \(response.status)")
        // 4xx, and redirects and other oddities: not followed, and retrying would not change them.
        default: .permanentFailure("HTTP \(response.status)")
        }
    }
}

/// JSON bodies with sorted keys and unescaped slashes, as every driver sends them.
enum JSONBody {
    /// Encodes strings, numbers, booleans and nested objects and arrays of them; cannot fail for those.
    static func encode(_ object: [String: Any]) -> [UInt8] {
        let data =
            (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes]))
            ?? Data("{}".utf8)
        return Array(data)
    }
}

/// Checks a provider URL at start: `http` or `https`, a host, no credentials, no fragment.
public enum ProviderURL {
    /// A provider's base URL that receives credentials, checked (`secure`) and without a trailing `/`.
    public static func base(_ url: String, file: String, key: String) throws(ConfigurationError) -> String {
        let base = url.hasSuffix("/") ? String(url.dropLast()) : url
        try check(base, file: file, key: key, secure: true)
        return base
    }

    /// Throws a configuration error naming `key` when `url` is not usable; `secure` asks for `https://` (plain
    /// `http://` only to a loopback address), for a URL that carries credentials.
    public static func check(_ url: String, file: String, key: String, secure: Bool = false) throws(ConfigurationError)
    {
        func fail(_ message: String) -> ConfigurationError {
            ConfigurationError(file: file, key: key, message: message)
        }
        guard let c = URLComponents(string: url), let scheme = c.scheme?.lowercased() else {
            throw fail("'\(url)' is not a URL (expected https://host[:port]/path)")
        }
        guard scheme == "http" || scheme == "https" else {
            throw fail("unsupported scheme '\(scheme)' (expected http or https)")
        }
        guard let host = c.host, !host.isEmpty else { throw fail("'\(url)' has no host") }
        guard c.user == nil, c.password == nil else { throw fail("must not contain credentials") }
        if let port = c.port, !(1...65_535).contains(port) { throw fail("bad port \(port)") }
        guard c.fragment == nil else { throw fail("must not have a fragment") }
        if secure && scheme == "http" && !["127.0.0.1", "::1", "[::1]", "localhost"].contains(host.lowercased()) {
            throw fail("must be https:// (credentials are sent to it; http:// only to a loopback address)")
        }
    }
}
