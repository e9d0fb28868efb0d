import AsyncHTTPClient
import Crypto
import EventStore
import Foundation
import NIOCore
import NIOHTTP1
import OTPDomain
import OTPServer
import OTPService
import OTPTesting
import PostgresTesting
import Synchronization
import Testing

/// One HTTP exchange with the server's HTTP side.
struct HTTPAnswer {
    var status: Int
    var body: [UInt8]
    var text: String { String(decoding: body, as: UTF8.self) }
}

func http(
    _ method: HTTPMethod,
    _ url: String,
    headers: [(String, String)] = [],
    body: [UInt8]? = nil
) async throws -> HTTPAnswer {
    var request = HTTPClientRequest(url: url)
    request.method = method
    for (k, v) in headers { request.headers.add(name: k, value: v) }
    if let body { request.body = .bytes(body) }
    let response = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
    let buffer = try await response.body.collect(upTo: 1 << 20)
    return HTTPAnswer(status: Int(response.status.code), body: Array(buffer.readableBytesView))
}

/// A session's events as (type, data) read through the service, as HISTORY shows them.
func events(_ server: TestServer, _ session: String) async throws -> [(type: String, data: [String: Any])] {
    try await server.sessions.records(StreamID(tenant: "default", session: session)).records.map { r in
        (r.type, (try? JSONSerialization.jsonObject(with: Data(r.data.utf8)) as? [String: Any]) ?? [:])
    }
}

/// Signs a Twilio callback with Twilio's own helper library (not our code).
func twilioSignature(url: String, params: [(String, String)], authToken: String) async throws -> String {
    let script = """
        import json, sys
        from twilio.request_validator import RequestValidator
        params = dict(json.loads(sys.argv[3]))
        print(RequestValidator(sys.argv[1]).compute_signature(sys.argv[2], params), end="")
        """
    let json = String(decoding: try JSONSerialization.data(withJSONObject: params.map { [$0.0, $0.1] }), as: UTF8.self)
    let r = try await run(["python3", "-c", script, authToken, url, json])
    guard r.status == 0 else { throw HarnessError("twilio signing failed: \(r.stderr)") }
    return r.stdout
}

func formBody(_ params: [(String, String)]) -> [UInt8] {
    let allowed = CharacterSet.alphanumerics.union(CharacterSet(charactersIn: "-._~"))
    func e(_ s: String) -> String { s.addingPercentEncoding(withAllowedCharacters: allowed) ?? s }
    return Array(params.map { e($0.0) + "=" + e($0.1) }.joined(separator: "&").utf8)
}

@Suite(.serialized, .heavy) struct HTTPSideTests {
    static let twilioSID = "AC" + String(repeating: "0b", count: 16)
    static let twilioToken = "the-twilio-auth-token"

    @Test func healthzAnswersOkWhileTheDatabaseAnswers() async throws {
        let server = try await TestServer.start(label: "http_health", http: true)
        let port = try #require(server.httpPort)
        let answer = try await http(.GET, "http://127.0.0.1:\(port)/healthz")
        #expect(answer.status == 200)
        #expect(answer.text == "ok")
        let missing = try await http(.GET, "http://127.0.0.1:\(port)/nothing-here")
        #expect(missing.status == 404)
        await server.stop()
    }

    @Test func aTwilioCallbackSignedByTwiliosLibraryRecordsDeliveredAndAWrongSignatureRecordsNothing() async throws {
        let twilio = try await FakeProvider.start { r in
            let sid = r.path.hasSuffix("Calls.json") ? "CA" : "SM"
            return (201, #"{"sid":"\#(sid)00000000000000000000000000000001"}"#, .zero)
        }
        let server = try await TestServer.start(
            label: "http_twilio",
            config: """
                [channel.sms]
                driver = "twilio"
                account_sid = "\(Self.twilioSID)"
                auth_token = "\(Self.twilioToken)"
                from = "+15550001111"
                base_url = "\(twilio.baseURL)"
                """,
            http: true
        )
        let port = try #require(server.httpPort)
        _ = try await redisCLI(server.port, ["ISSUE", "tw1", "sms:+15555550123"])
        try await server.waitUntilSent("tw1")
        let sent = try #require(try await events(server, "tw1").first { $0.type == "sent" })
        #expect(sent.data["provider"] as? String == "twilio")
        #expect(sent.data["provider_ref"] as? String == "SM00000000000000000000000000000001")
        // The StatusCallback Twilio was given is the one it will post to.
        let callback = try #require(twilio.requests.first?.field("StatusCallback"))
        #expect(callback == "http://127.0.0.1:\(port)/receipts/twilio")

        let params = [
            ("AccountSid", Self.twilioSID), ("MessageSid", "SM00000000000000000000000000000001"),
            ("MessageStatus", "delivered"), ("SmsSid", "SM00000000000000000000000000000001"),
            ("To", "+15555550123"), ("ApiVersion", "2010-04-01"),
        ]
        // A wrong signature (signed with another token): 403, nothing recorded.
        let forged = try await twilioSignature(url: callback, params: params, authToken: "not-the-token")
        let refused = try await http(
            .POST,
            callback,
            headers: [("Content-Type", "application/x-www-form-urlencoded"), ("X-Twilio-Signature", forged)],
            body: formBody(params)
        )
        #expect(refused.status == 403)
        let unsigned = try await http(
            .POST,
            callback,
            headers: [("Content-Type", "application/x-www-form-urlencoded")],
            body: formBody(params)
        )
        #expect(unsigned.status == 403)
        #expect(try await events(server, "tw1").map(\.type) == ["issued", "sent"])

        let signature = try await twilioSignature(url: callback, params: params, authToken: Self.twilioToken)
        let accepted = try await http(
            .POST,
            callback,
            headers: [("Content-Type", "application/x-www-form-urlencoded"), ("X-Twilio-Signature", signature)],
            body: formBody(params)
        )
        #expect(accepted.status == 204)
        let after = try await events(server, "tw1")
        #expect(after.map(\.type) == ["issued", "sent", "delivered"])
        #expect(after.last?.data["step"] as? Int == 1)
        #expect(after.last?.data["channel"] as? String == "sms")
        // The same callback again: accepted, nothing more recorded.
        let repeated = try await http(
            .POST,
            callback,
            headers: [("Content-Type", "application/x-www-form-urlencoded"), ("X-Twilio-Signature", signature)],
            body: formBody(params)
        )
        #expect(repeated.status == 204)
        #expect(try await events(server, "tw1").count == 3)

        // A message Twilio knows and we do not: 200 (so Twilio does not retry), nothing recorded.
        var unknown = params
        unknown[1] = ("MessageSid", "SM99999999999999999999999999999999")
        let unknownSignature = try await twilioSignature(url: callback, params: unknown, authToken: Self.twilioToken)
        let ignored = try await http(
            .POST,
            callback,
            headers: [("Content-Type", "application/x-www-form-urlencoded"), ("X-Twilio-Signature", unknownSignature)],
            body: formBody(unknown)
        )
        #expect(ignored.status == 200)
        await server.stop()
        await twilio.stop()
    }

    @Test func aWebhookReceiptOverHTTPIsRecordedExactlyAsRECEIPTOverRESP() async throws {
        let gateway = try await FakeProvider.start { _ in (200, #"{"provider_ref":"gw-1"}"#, .zero) }
        let secret = "gateway-shared-secret"
        let server = try await TestServer.start(
            label: "http_webhook",
            config: """
                [channel.sms]
                driver = "webhook"
                url = "\(gateway.baseURL)/sms"
                secret = "\(secret)"
                """,
            http: true
        )
        let port = try #require(server.httpPort)
        for (session, phone) in [("wh-http", "+15555550123"), ("wh-resp", "+15555550124")] {
            _ = try await redisCLI(server.port, ["ISSUE", session, "sms:" + phone])
            try await server.waitUntilSent(session)
        }
        let messageId = try #require(
            gateway.requests.compactMap { $0.json }.first { $0["session"] as? String == "wh-http" }?["message_id"]
                as? String
        )
        let url = "http://127.0.0.1:\(port)/receipts/webhook"
        func post(_ object: [String: String], signedWith key: String?) async throws -> HTTPAnswer {
            let body = Array(try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]))
            var headers = [("Content-Type", "application/json")]
            if let key {
                let mac = HMAC<SHA256>.authenticationCode(for: body, using: SymmetricKey(data: Array(key.utf8)))
                headers.append(("X-OTPD-Signature", "sha256=" + mac.map { String(format: "%02x", $0) }.joined()))
            }
            return try await http(.POST, url, headers: headers, body: body)
        }
        #expect(try await post(["message_id": "m_unknown", "outcome": "delivered"], signedWith: secret).status == 404)
        #expect(try await post(["message_id": messageId, "outcome": "delivered"], signedWith: "wrong").status == 403)
        #expect(try await post(["message_id": messageId, "outcome": "delivered"], signedWith: nil).status == 403)
        #expect(try await events(server, "wh-http").map(\.type) == ["issued", "sent"])

        let receipt = ["message_id": messageId, "outcome": "delivered", "detail": "carrier DLR 000"]
        #expect(try await post(receipt, signedWith: secret).status == 204)
        #expect(try await post(receipt, signedWith: secret).status == 204)  // repeated: accepted, nothing more
        #expect(
            try await redisCLI(server.port, ["RECEIPT", "wh-resp", "sms", "delivered", "carrier DLR 000"]) == ["OK"]
        )

        let overHTTP = try await events(server, "wh-http")
        let overRESP = try await events(server, "wh-resp")
        #expect(overHTTP.map(\.type) == ["issued", "sent", "delivered"])
        #expect(overRESP.map(\.type) == ["issued", "sent", "delivered"])
        let a = try #require(overHTTP.last?.data as? [String: AnyHashable])
        let b = try #require(overRESP.last?.data as? [String: AnyHashable])
        #expect(a == b)
        await server.stop()
        await gateway.stop()
    }

    @Test func theFirstFetchOfAnEmailsTrackingURLRecordsOpenedAndABadTokenLooksTheSame() async throws {
        let gateway = try await FakeProvider.start { _ in (200, "", .zero) }
        let server = try await TestServer.start(
            label: "http_open",
            config: """
                [channel.email]
                driver = "webhook"
                url = "\(gateway.baseURL)/email"

                [[policy]]
                name = "default"
                steps = [{ channel = "email", timeout = "60s", until = "opened" }]
                """,
            http: true
        )
        let port = try #require(server.httpPort)
        _ = try await redisCLI(server.port, ["ISSUE", "op1", "email:ann@example.com"])
        try await server.waitUntilSent("op1")
        let messageId = try #require(gateway.requests.first?.json?["message_id"] as? String)
        let token = Secrets(secret: testSecret).trackingToken(messageId: messageId)

        let bad = try await http(.GET, "http://127.0.0.1:\(port)/o/" + String(repeating: "0", count: 32))
        let image = try await http(.GET, "http://127.0.0.1:\(port)/o/\(token)")
        #expect(image.status == 200)
        #expect(Array(image.body.prefix(6)) == Array("GIF89a".utf8))
        #expect(bad.status == image.status && bad.body == image.body)
        let shown = try await http(.GET, "http://127.0.0.1:\(port)/c/\(token)")
        let shownBad = try await http(.GET, "http://127.0.0.1:\(port)/c/nonsense")
        #expect(shown.status == 200 && shown.text == shownBad.text)
        let types = try await events(server, "op1").map(\.type)
        #expect(types == ["issued", "sent", "opened"])  // once, whatever was fetched after
        await server.stop()
        await gateway.stop()
    }

    @Test func bodiesOver64KiBAreRefusedWith413() async throws {
        let server = try await TestServer.start(label: "http_limit", http: true)
        let port = try #require(server.httpPort)
        let big = [UInt8](repeating: UInt8(ascii: "a"), count: 64 * 1024 + 1)
        let answer = try await http(
            .POST,
            "http://127.0.0.1:\(port)/receipts/webhook",
            headers: [("Content-Type", "application/json")],
            body: big
        )
        #expect(answer.status == 413)
        await server.stop()
    }
}
