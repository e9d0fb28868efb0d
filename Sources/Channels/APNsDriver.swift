import Crypto
import Foundation
import JWTKit
import NIOHTTP1
import NIOSSL
import OTPDomain
import OTPService

/// Sends push notifications through the Apple Push Notification service, over HTTP/2.
///
/// Each message is `POST {base_url}/3/device/{device_token}` with the provider token (an ES256 JWT from the
/// team's .p8 key, reused for 40 minutes: APNs wants it renewed no sooner than every 20 and no later than
/// every 60), `apns-topic` (the bundle id), `apns-push-type: alert`, `apns-priority: 10`, `apns-expiration` at
/// the session's expiry, and `apns-id` derived from otpd's message id. 410 and `BadDeviceToken` are permanent,
/// as are other refusals; a refused provider token renews it and is transient, like 429 and 5xx.
public struct APNsDriver: ChannelDriver {
    /// `apns`.
    public var name: String { "apns" }

    let settings: APNsSettings
    let base: String
    let tls: TLSConfiguration?
    let http: ProviderHTTP
    let tokens: TokenCache

    /// How long a provider token is reused.
    static let tokenLifetime = 40.0 * 60

    /// Creates the driver; the key is parsed now, so a bad one stops the start naming `key`.
    public init(
        _ settings: APNsSettings,
        http: ProviderHTTP,
        file: String = "config",
        key: String = "channel",
        clock: @escaping @Sendable () -> Double = { Date().timeIntervalSince1970 }
    ) throws(ConfigurationError) {
        let base = try ProviderURL.base(settings.baseURL, file: file, key: key + ".base_url")
        let p256: ES256PrivateKey
        do { p256 = try ES256PrivateKey(pem: settings.privateKeyPEM) } catch {
            throw ConfigurationError(
                file: file,
                key: key + ".key_file",
                message: "is not a P-256 private key in PEM (the .p8 file from Apple)"
            )
        }
        self.settings = settings
        self.base = base
        tls = try ProviderHTTP.tls(caFile: settings.call.caFile, file: file, key: key + ".ca_file")
        self.http = http
        let keys = JWTKeyCollection()
        let kid = JWKIdentifier(string: settings.keyID)
        let team = settings.teamID
        tokens = TokenCache(clock: clock) {
            await keys.add(ecdsa: p256, kid: kid)
            let now = clock()
            let jwt = try await keys.sign(ProviderToken(iss: team, iat: Int(now)), kid: kid)
            return TokenCache.Entry(token: jwt, renewAt: now + Self.tokenLifetime)
        }
    }

    /// The claims of an APNs provider token.
    struct ProviderToken: JWTPayload {
        var iss: String
        var iat: Int
        func verify(using algorithm: some JWTAlgorithm) throws {}
    }

    /// The JSON body of a message: the alert, and the code as a custom key beside `aps`.
    static func body(for m: OutboundMessage) -> [UInt8] {
        var payload: [String: Any] = [
            "aps": ["alert": ["title": m.message.title ?? "", "body": m.message.text], "sound": "default"]
        ]
        if let code = m.message.dataCode { payload["code"] = code }
        return JSONBody.encode(payload)
    }

    /// A UUID made from otpd's message id, so a repeated message carries the same `apns-id`.
    static func apnsID(_ messageId: String) -> String {
        let b = Array(SHA256.hash(data: Array(messageId.utf8)).prefix(16))
        let hex = Hex.encode(b)
        let i = hex.startIndex
        func part(_ from: Int, _ to: Int) -> Substring {
            hex[hex.index(i, offsetBy: from)..<hex.index(i, offsetBy: to)]
        }
        return "\(part(0, 8))-\(part(8, 12))-\(part(12, 16))-\(part(16, 20))-\(part(20, 32))"
    }

    /// Sends the message once and classifies the answer.
    public func send(_ message: OutboundMessage) async -> DriverResult {
        let device = message.to
        guard (32...200).contains(device.utf8.count), device.allSatisfy(\.isHexDigit) else {
            return .permanentFailure("APNs BadDeviceToken (not a hex device token)")
        }
        let bearer: String
        do { bearer = try await tokens.token() } catch {
            return .permanentFailure("APNs provider token could not be signed")
        }
        var headers = HTTPHeaders()
        headers.add(name: "authorization", value: "bearer \(bearer)")
        headers.add(name: "apns-topic", value: settings.topic)
        headers.add(name: "apns-push-type", value: "alert")
        headers.add(name: "apns-priority", value: "10")
        headers.add(name: "apns-expiration", value: String(max(0, message.expiresAtMs / 1000)))
        headers.add(name: "apns-id", value: Self.apnsID(message.messageId))
        headers.add(name: "content-type", value: "application/json")
        let answer = await http.send(
            .POST,
            "\(base)/3/device/\(device)",
            headers: headers,
            body: Self.body(for: message),
            tls: tls,
            timeoutMs: settings.call.timeoutMs
        )
        switch answer {
        case .failure(let failure):
            return .transientFailure(failure.reason, mayHaveBeenSent: failure.mayHaveBeenSent)
        case .success(let response):
            let result = Self.classify(response)
            if case .transientFailure(let reason, _) = result, reason.contains("ExpiredProviderToken") {
                await tokens.invalidate(bearer)
            }
            return result
        }
    }

    static func classify(_ response: ProviderHTTP.Response) -> DriverResult {
        let status = response.status
        if status == 200 { return .accepted(providerRef: response.headers.first(name: "apns-id")) }
        let word = response.string("reason").map(FCMDriver.safe) ?? "error"
        let reason = "APNs \(word), HTTP \(status)"
        if status == 410 || word == "BadDeviceToken" || word == "Unregistered" { return .permanentFailure(reason) }
        // InvalidProviderToken (a wrong key_id or team_id) is permanent: a new token would be as wrong, and
        // re-signing on every push earns TooManyProviderTokenUpdates.
        if word == "ExpiredProviderToken" || status == 429
            || (500..<600).contains(status)
        {
            return .transientFailure(reason)
        }
        return .permanentFailure(reason)
    }
}
