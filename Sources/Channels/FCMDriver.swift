import Foundation
import JWTKit
import NIOHTTP1
import NIOSSL
import OTPDomain
import OTPService

/// Sends push notifications through Firebase Cloud Messaging's HTTP v1 API.
///
/// Access tokens come from Google's OAuth 2 token endpoint (the service account's `token_uri`) in exchange for a
/// JWT assertion signed RS256 with the service account's key, and are cached until a minute before they expire.
/// Each message is `POST {base_url}/v1/projects/{project_id}/messages:send` with `message.token`,
/// `notification.title` and `.body`, `data.code`, and high priority on Android and iOS. `UNREGISTERED` and
/// `INVALID_ARGUMENT` are permanent (the device token is gone or wrong), as are other refusals; 401 renews the
/// access token and is transient, like 429 and 5xx.
public struct FCMDriver: ChannelDriver {
    /// `fcm`.
    public var name: String { "fcm" }

    let settings: FCMSettings
    let endpoint: String
    let tls: TLSConfiguration?
    let http: ProviderHTTP
    let tokens: TokenCache

    /// The OAuth scope of FCM's send API.
    static let scope = "https://www.googleapis.com/auth/firebase.messaging"

    /// Creates the driver; the key is parsed now, so a bad one stops the start naming `key`.
    public init(
        _ settings: FCMSettings,
        http: ProviderHTTP,
        file: String = "config",
        key: String = "channel",
        clock: @escaping @Sendable () -> Double = { Date().timeIntervalSince1970 }
    ) throws(ConfigurationError) {
        let base = try ProviderURL.base(settings.baseURL, file: file, key: key + ".base_url")
        try ProviderURL.check(settings.tokenURI, file: file, key: key + ".service_account_file", secure: true)
        let rsa: Insecure.RSA.PrivateKey
        do { rsa = try Insecure.RSA.PrivateKey(pem: settings.privateKeyPEM) } catch {
            throw ConfigurationError(
                file: file,
                key: key + ".service_account_file",
                message: "private_key is not an RSA private key of at least 2048 bits in PEM"
            )
        }
        self.settings = settings
        endpoint = "\(base)/v1/projects/\(Form.escape(settings.projectID))/messages:send"
        let tls = try ProviderHTTP.tls(caFile: settings.call.caFile, file: file, key: key + ".ca_file")
        self.tls = tls
        self.http = http
        let keys = JWTKeyCollection()
        let kid = JWKIdentifier(string: settings.privateKeyID)
        let s = settings
        tokens = TokenCache(clock: clock) {
            await keys.add(rsa: rsa, digestAlgorithm: .sha256, kid: kid)
            return try await Self.exchange(settings: s, keys: keys, kid: kid, now: clock(), http: http, tls: tls)
        }
    }

    /// The claims of Google's JWT bearer assertion.
    struct Assertion: JWTPayload {
        var iss: String
        var scope: String
        var aud: String
        var iat: Int
        var exp: Int
        func verify(using algorithm: some JWTAlgorithm) throws {}
    }

    /// Exchanges a fresh assertion for an access token at the service account's `token_uri`.
    static func exchange(
        settings: FCMSettings,
        keys: JWTKeyCollection,
        kid: JWKIdentifier,
        now: Double,
        http: ProviderHTTP,
        tls: TLSConfiguration?
    ) async throws -> TokenCache.Entry {
        let iat = Int(now)
        let claims = Assertion(
            iss: settings.clientEmail,
            scope: scope,
            aud: settings.tokenURI,
            iat: iat,
            exp: iat + 3600
        )
        let jwt = try await keys.sign(claims, kid: kid)
        var headers = HTTPHeaders()
        headers.add(name: "User-Agent", value: "otpd")
        headers.add(name: "Content-Type", value: "application/x-www-form-urlencoded")
        let form = Form.encode([("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"), ("assertion", jwt)])
        let answer = await http.send(
            .POST,
            settings.tokenURI,
            headers: headers,
            body: Array(form.utf8),
            tls: tls,
            timeoutMs: settings.call.timeoutMs
        )
        switch answer {
        case .failure(let failure):
            throw TokenFailure(reason: "OAuth token exchange: \(failure.reason)", permanent: false)
        case .success(let response):
            guard (200..<300).contains(response.status), let token = response.string("access_token") else {
                let error = response.string("error").map { " (\(Self.safe($0)))" } ?? ""
                throw TokenFailure(
                    reason: "OAuth token refused: HTTP \(response.status)\(error)",
                    permanent: (400..<500).contains(response.status) && response.status != 429
                )
            }
            let lifetime = (response.json?["expires_in"] as? Int) ?? 3600
            // Renewed a minute before it expires (or halfway, for a token shorter-lived than two minutes).
            return TokenCache.Entry(token: token, renewAt: now + Double(max(lifetime - 60, lifetime / 2)))
        }
    }

    /// Why no access token could be had.
    struct TokenFailure: Error {
        var reason: String
        var permanent: Bool
    }

    /// The JSON body of a message.
    static func body(for m: OutboundMessage) -> [UInt8] {
        var data: [String: Any] = [:]
        if let code = m.message.dataCode { data["code"] = code }
        // Dropped when the code expires: a notification that arrives later shows a dead code.
        let left = max(0, (m.expiresAtMs - Int64(Date().timeIntervalSince1970 * 1000)) / 1000)
        var apnsHeaders = ["apns-priority": "10"]
        if m.expiresAtMs > 0 { apnsHeaders["apns-expiration"] = String(m.expiresAtMs / 1000) }
        var android: [String: Any] = ["priority": "high"]
        if m.expiresAtMs > 0 { android["ttl"] = "\(left)s" }
        let message: [String: Any] = [
            "token": m.to,
            "notification": ["title": m.message.title ?? "", "body": m.message.text],
            "data": data,
            "android": android,
            "apns": ["headers": apnsHeaders],
        ]
        return JSONBody.encode(["message": message])
    }

    /// Sends the message once and classifies the answer.
    public func send(_ message: OutboundMessage) async -> DriverResult {
        let bearer: String
        do { bearer = try await tokens.token() } catch let failure as TokenFailure {
            return failure.permanent ? .permanentFailure(failure.reason) : .transientFailure(failure.reason)
        } catch {
            return .transientFailure("OAuth token exchange failed")
        }
        var headers = HTTPHeaders()
        headers.add(name: "User-Agent", value: "otpd")
        headers.add(name: "Authorization", value: "Bearer \(bearer)")
        headers.add(name: "Content-Type", value: "application/json; charset=utf-8")
        let answer = await http.send(
            .POST,
            endpoint,
            headers: headers,
            body: Self.body(for: message),
            tls: tls,
            timeoutMs: settings.call.timeoutMs
        )
        switch answer {
        case .failure(let failure):
            return .transientFailure(failure.reason, mayHaveBeenSent: failure.mayHaveBeenSent)
        case .success(let response):
            if response.status == 401 { await tokens.invalidate(bearer) }
            return Self.classify(response)
        }
    }

    static func classify(_ response: ProviderHTTP.Response) -> DriverResult {
        let status = response.status
        if (200..<300).contains(status) { return .accepted(providerRef: response.string("name")) }
        let error = response.json?["error"] as? [String: Any]
        let details = error?["details"] as? [[String: Any]] ?? []
        let fcmCode = details.lazy.compactMap { $0["errorCode"] as? String }.first
        let code = fcmCode ?? (error?["status"] as? String)
        let reason = "FCM \(code.map(safe) ?? "error"), HTTP \(status)"
        if code == "UNREGISTERED" || code == "INVALID_ARGUMENT" { return .permanentFailure(reason) }
        if status == 401 || status == 429 || (500..<600).contains(status) { return .transientFailure(reason) }
        return .permanentFailure(reason)
    }

    /// A provider's error word, kept to letters, digits and `_` (it goes into an event).
    static func safe(_ s: String) -> String {
        String(s.prefix(64).filter { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "_") })
    }
}
