import Channels
import Foundation
import OTPDomain
import OTPService
import OTPTesting
import PostgresTesting
import Synchronization
import Testing

/// Keys made with openssl for one test: an RSA service-account key and an APNs-style P-256 .p8 key.
struct PushKeys {
    let directory: String
    var rsa: String { directory + "/rsa.pem" }
    var rsaPublic: String { directory + "/rsa.pub" }
    var p8: String { directory + "/AuthKey.p8" }
    var p8Public: String { directory + "/p8.pub" }

    static func make() async throws -> PushKeys {
        let dir = NSTemporaryDirectory() + "otpd-push-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let k = PushKeys(directory: dir)
        for args in [
            ["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", k.rsa],
            ["pkey", "-in", k.rsa, "-pubout", "-out", k.rsaPublic],
            ["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", k.p8],
            ["pkey", "-in", k.p8, "-pubout", "-out", k.p8Public],
        ] {
            let r = try await run(["openssl"] + args)
            guard r.status == 0 else { throw TestSupportError("openssl \(args[0]): \(r.stderr)") }
        }
        return k
    }

    func remove() { try? FileManager.default.removeItem(atPath: directory) }
}

/// Verifies a JWT with PyJWT (not our code): returns its header and claims as JSON, or throws.
func verifyJWT(
    _ jwt: String,
    publicKey: String,
    algorithm: String
) async throws -> (
    header: [String: Any], claims: [String: Any]
) {
    let script = """
        import jwt, json, sys
        token, key, alg = sys.argv[1], open(sys.argv[2]).read(), sys.argv[3]
        claims = jwt.decode(token, key, algorithms=[alg], options={"verify_aud": False, "verify_exp": True})
        print(json.dumps({"header": jwt.get_unverified_header(token), "claims": claims}))
        """
    let r = try await run(["python3", "-c", script, jwt, publicKey, algorithm])
    guard r.status == 0, let object = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any],
        let header = object["header"] as? [String: Any], let claims = object["claims"] as? [String: Any]
    else { throw TestSupportError("the JWT does not verify: \(r.stderr)") }
    return (header, claims)
}

/// How a fake provider answers a request: status and body.
typealias Answer = @Sendable (RecordedRequest) -> (Int, String)

/// Every request answered 200 with no body.
private let ok: Answer = { _ in (200, "") }

private let renderer = MessageRenderer(settings: MessageSettings(appName: "AcmeApp"))
private let code = "482913"

private func pushMessage(to device: String, id: String = "m_push1") -> OutboundMessage {
    OutboundMessage(
        messageId: id,
        tenant: "acme",
        session: "s-1",
        to: device,
        message: renderer.render(channel: .push, code: code, app: nil, locale: "en"),
        expiresAtMs: 1_900_000_000_123
    )
}

@Suite(.serialized, .heavy) struct FCMDriverTests {
    /// A fake Google: `/token` hands out numbered access tokens, the send endpoint answers `send`.
    static func withFakeGoogle(
        send: @escaping @Sendable (RecordedRequest) -> (Int, String),
        _ body: (FCMDriver, FakeProvider, PushKeys) async throws -> Void
    ) async throws {
        let keys = try await PushKeys.make()
        defer { keys.remove() }
        let issued = Atomic<Int>(0)
        let provider = try await FakeProvider.start { r in
            if r.path == "/token" {
                let n = issued.add(1, ordering: .relaxed).newValue
                return (200, #"{"access_token":"ya29.token-\#(n)","expires_in":3599,"token_type":"Bearer"}"#, .zero)
            }
            let (status, answer) = send(r)
            return (status, answer, .zero)
        }
        var settings = FCMSettings(
            projectID: "acme-app",
            clientEmail: "otpd@acme-app.iam.gserviceaccount.com",
            privateKeyPEM: try String(contentsOfFile: keys.rsa, encoding: .utf8),
            privateKeyID: "key-1",
            tokenURI: provider.baseURL + "/token"
        )
        settings.baseURL = provider.baseURL
        let http = ProviderHTTP()
        let driver = try FCMDriver(settings, http: http)
        do {
            try await body(driver, provider, keys)
        } catch {
            await http.shutdown()
            await provider.stop()
            throw error
        }
        await http.shutdown()
        await provider.stop()
    }

    @Test func theAssertionIsAnRS256JWTAndTheSendIsFCMsV1Shape() async throws {
        let send: Answer = { _ in (200, #"{"name":"projects/acme-app/messages/0:123"}"#) }
        try await Self.withFakeGoogle(send: send) { driver, provider, keys in
            let result = await driver.send(pushMessage(to: "device-token-abc"))
            #expect(result == .accepted(providerRef: "projects/acme-app/messages/0:123"))
            let requests = provider.requests
            #expect(requests.map(\.path) == ["/token", "/v1/projects/acme-app/messages:send"])
            let tokenRequest = requests[0]
            #expect(tokenRequest.header("Content-Type") == "application/x-www-form-urlencoded")
            #expect(tokenRequest.field("grant_type") == "urn:ietf:params:oauth:grant-type:jwt-bearer")
            let assertion = try #require(tokenRequest.field("assertion"))
            let (header, claims) = try await verifyJWT(assertion, publicKey: keys.rsaPublic, algorithm: "RS256")
            #expect(header["alg"] as? String == "RS256")
            #expect(header["kid"] as? String == "key-1")
            #expect(claims["iss"] as? String == "otpd@acme-app.iam.gserviceaccount.com")
            #expect(claims["scope"] as? String == "https://www.googleapis.com/auth/firebase.messaging")
            #expect(claims["aud"] as? String == provider.baseURL + "/token")
            let iat = try #require(claims["iat"] as? Int)
            #expect(claims["exp"] as? Int == iat + 3600)

            let send = requests[1]
            #expect(send.header("Authorization") == "Bearer ya29.token-1")
            let message = try #require(send.json?["message"] as? [String: Any])
            #expect(message["token"] as? String == "device-token-abc")
            let notification = try #require(message["notification"] as? [String: String])
            #expect(notification["title"]?.contains("AcmeApp") == true)
            #expect(notification["body"]?.contains(code) == true)
            #expect(message["data"] as? [String: String] == ["code": code])
            let android = try #require(message["android"] as? [String: String])
            #expect(android["priority"] == "high")
            #expect(android["ttl"]?.hasSuffix("s") == true)  // dropped when the code expires
            let apns = try #require((message["apns"] as? [String: Any])?["headers"] as? [String: String])
            #expect(apns == ["apns-priority": "10", "apns-expiration": "1900000000"])
        }
    }

    @Test func theAccessTokenIsCachedAndRenewedAfterA401() async throws {
        let refuseNext = Atomic<Bool>(false)
        let send: Answer = { _ in
            refuseNext.exchange(false, ordering: .relaxed)
                ? (401, #"{"error":{"code":401,"status":"UNAUTHENTICATED"}}"#) : (200, #"{"name":"n"}"#)
        }
        try await Self.withFakeGoogle(send: send) { driver, provider, _ in
            #expect(await driver.send(pushMessage(to: "d1")) == .accepted(providerRef: "n"))
            #expect(await driver.send(pushMessage(to: "d2")) == .accepted(providerRef: "n"))
            #expect(provider.requests.filter { $0.path == "/token" }.count == 1)
            refuseNext.store(true, ordering: .relaxed)
            #expect(await driver.send(pushMessage(to: "d3")) == .transientFailure("FCM UNAUTHENTICATED, HTTP 401"))
            #expect(await driver.send(pushMessage(to: "d4")) == .accepted(providerRef: "n"))
            let auth = provider.requests.filter { $0.path != "/token" }.map { $0.header("Authorization") ?? "" }
            #expect(
                auth == ["Bearer ya29.token-1", "Bearer ya29.token-1", "Bearer ya29.token-1", "Bearer ya29.token-2"]
            )
        }
    }

    @Test(arguments: [
        (404, "UNREGISTERED", false), (400, "INVALID_ARGUMENT", false), (503, "UNAVAILABLE", true),
        (429, "QUOTA_EXCEEDED", true), (403, "SENDER_ID_MISMATCH", false),
    ])
    func errorsArePermanentOrTransientAsFCMDocuments(status: Int, errorCode: String, transient: Bool) async throws {
        let body = """
            {"error":{"code":\(status),"message":"Requested entity was not found.","status":"X",\
            "details":[{"@type":"type.googleapis.com/google.firebase.fcm.v1.FcmError","errorCode":"\(errorCode)"}]}}
            """
        let send: Answer = { _ in (status, body) }
        try await Self.withFakeGoogle(send: send) { driver, _, _ in
            let reason = "FCM \(errorCode), HTTP \(status)"
            let result = await driver.send(pushMessage(to: "d1"))
            #expect(result == (transient ? .transientFailure(reason) : .permanentFailure(reason)))
        }
    }

    @Test func aKeyThatIsNotRSAStopsTheStartNamingTheFile() async throws {
        let keys = try await PushKeys.make()
        defer { keys.remove() }
        let settings = FCMSettings(
            projectID: "p",
            clientEmail: "e",
            privateKeyPEM: try String(contentsOfFile: keys.p8, encoding: .utf8),
            privateKeyID: "k",
            tokenURI: "https://oauth2.googleapis.com/token"
        )
        let http = ProviderHTTP()
        defer { Task { await http.shutdown() } }
        #expect {
            _ = try FCMDriver(settings, http: http, file: "f", key: "channel.push")
        } throws: { "\($0)".hasPrefix("f: channel.push.service_account_file:") }
    }
}

@Suite(.serialized, .heavy) struct APNsDriverTests {
    static let device = String(repeating: "ab", count: 32)

    static func withFakeAPNs(
        answer: @escaping @Sendable (RecordedRequest) -> (Int, String),
        clock: @escaping @Sendable () -> Double = { Date().timeIntervalSince1970 },
        _ body: (APNsDriver, FakeProvider, PushKeys) async throws -> Void
    ) async throws {
        let keys = try await PushKeys.make()
        let files = try await TLSFiles.make()
        defer {
            keys.remove()
            files.remove()
        }
        let provider = try await FakeProvider.start(.http2(cert: files.cert, key: files.key)) { r in
            let (status, text) = answer(r)
            return (status, text, .zero)
        }
        var settings = APNsSettings(
            teamID: "TEAM123456",
            keyID: "KEY1234567",
            privateKeyPEM: try String(contentsOfFile: keys.p8, encoding: .utf8),
            topic: "example.acme.app"
        )
        settings.baseURL = provider.baseURL
        settings.call.caFile = files.ca
        let http = ProviderHTTP()
        let driver = try APNsDriver(settings, http: http, clock: clock)
        do {
            try await body(driver, provider, keys)
        } catch {
            await http.shutdown()
            await provider.stop()
            throw error
        }
        await http.shutdown()
        await provider.stop()
    }

    @Test func aPushIsAnHTTP2PostWithAnES256ProviderTokenAndAPNsHeaders() async throws {
        try await Self.withFakeAPNs(answer: ok) { driver, provider, keys in
            let result = await driver.send(pushMessage(to: Self.device, id: "m_abc"))
            guard case .accepted = result else {
                Issue.record("not accepted: \(result)")
                return
            }
            let r = try #require(provider.requests.first)
            #expect(r.version == "HTTP/2")
            #expect(r.method == "POST")
            #expect(r.path == "/3/device/\(Self.device)")
            #expect(r.header("apns-topic") == "example.acme.app")
            #expect(r.header("apns-push-type") == "alert")
            #expect(r.header("apns-priority") == "10")
            #expect(r.header("apns-expiration") == "1900000000")
            #expect(r.header("apns-id")?.count == 36)
            let bearer = try #require(r.header("authorization"))
            #expect(bearer.hasPrefix("bearer "))
            let (header, claims) = try await verifyJWT(
                String(bearer.dropFirst("bearer ".count)),
                publicKey: keys.p8Public,
                algorithm: "ES256"
            )
            #expect(header["alg"] as? String == "ES256")
            #expect(header["kid"] as? String == "KEY1234567")
            #expect(claims["iss"] as? String == "TEAM123456")
            let json = try #require(r.json)
            let alert = try #require((json["aps"] as? [String: Any])?["alert"] as? [String: String])
            #expect(alert["body"]?.contains(code) == true)
            #expect(alert["title"]?.contains("AcmeApp") == true)
            #expect(json["code"] as? String == code)
        }
    }

    @Test func theProviderTokenIsReusedForFortyMinutesThenRenewed() async throws {
        let now = Mutex<Double>(1_800_000_000)
        let clock: @Sendable () -> Double = { now.withLock { $0 } }
        try await Self.withFakeAPNs(answer: ok, clock: clock) { driver, provider, _ in
            _ = await driver.send(pushMessage(to: Self.device))
            now.withLock { $0 += 39 * 60 }
            _ = await driver.send(pushMessage(to: Self.device))
            now.withLock { $0 += 2 * 60 }
            _ = await driver.send(pushMessage(to: Self.device))
            let tokens = provider.requests.map { $0.header("authorization") ?? "" }
            #expect(tokens.count == 3)
            #expect(tokens[0] == tokens[1])
            #expect(tokens[1] != tokens[2])
        }
    }

    @Test func goneAndBadDeviceTokensArePermanentAndAnExpiredProviderTokenIsRenewed() async throws {
        let answers = Mutex<[(Int, String)]>([
            (410, #"{"reason":"Unregistered","timestamp":1700000000000}"#), (400, #"{"reason":"BadDeviceToken"}"#),
            (403, #"{"reason":"ExpiredProviderToken"}"#), (503, #"{"reason":"ServiceUnavailable"}"#), (200, ""),
        ])
        let next: Answer = { _ in answers.withLock { $0.removeFirst() } }
        try await Self.withFakeAPNs(answer: next) { driver, provider, _ in
            #expect(await driver.send(pushMessage(to: Self.device)) == .permanentFailure("APNs Unregistered, HTTP 410"))
            #expect(
                await driver.send(pushMessage(to: Self.device)) == .permanentFailure("APNs BadDeviceToken, HTTP 400")
            )
            #expect(
                await driver.send(pushMessage(to: Self.device))
                    == .transientFailure("APNs ExpiredProviderToken, HTTP 403")
            )
            #expect(
                await driver.send(pushMessage(to: Self.device))
                    == .transientFailure("APNs ServiceUnavailable, HTTP 503")
            )
            guard case .accepted = await driver.send(pushMessage(to: Self.device)) else {
                Issue.record("the last push was not accepted")
                return
            }
            let tokens = provider.requests.map { $0.header("authorization") ?? "" }
            #expect(tokens[2] != tokens[3])  // renewed after ExpiredProviderToken
        }
    }

    @Test func aDeviceTokenThatIsNotHexIsRefusedWithoutACall() async throws {
        try await Self.withFakeAPNs(answer: ok) { driver, provider, _ in
            let result = await driver.send(pushMessage(to: "../../3/device/x"))
            #expect(result == .permanentFailure("APNs BadDeviceToken (not a hex device token)"))
            #expect(provider.requests.isEmpty)
        }
    }
}
