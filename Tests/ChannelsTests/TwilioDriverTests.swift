import Channels
import Foundation
import OTPDomain
import OTPService
import OTPTesting
import PostgresTesting
import Testing

@Suite(.heavy) struct TwilioDriverTests {
    static let sid = "AC" + String(repeating: "0a", count: 16)
    static let token = "twilio-auth-token"
    static let phone = "+15555550123"
    static let code = "482913"
    static let renderer = MessageRenderer(settings: MessageSettings(appName: "AcmeApp", appDomain: "acme.example"))

    static func message(_ channel: DeliveryChannel, links: Bool = true) -> OutboundMessage {
        OutboundMessage(
            messageId: "m_0011",
            tenant: "acme",
            session: "s-1",
            to: phone,
            message: renderer.render(channel: channel, code: code, app: nil, locale: "en"),
            links: links ? MessageLinks(publicURL: "https://otp.acme.example", tracking: "t") : nil
        )
    }

    /// Sends through a driver pointed at a fresh fake Twilio answering `status` / `body`.
    static func send(
        _ m: OutboundMessage,
        channel: DeliveryChannel,
        sender: TwilioSettings.Sender = .from("+15550001111"),
        status: Int = 201,
        body: String = #"{"sid": "SM0123456789abcdef0123456789abcdef", "status": "queued"}"#
    ) async throws -> (DriverResult, [RecordedRequest]) {
        let provider = try await FakeProvider.start { _ in (status, body, .zero) }
        var settings = TwilioSettings(accountSID: sid, authToken: token, sender: sender)
        settings.baseURL = provider.baseURL
        let http = ProviderHTTP()
        let driver = try TwilioDriver(settings, channel: channel, http: http)
        let result = await driver.send(m)
        await http.shutdown()
        await provider.stop()
        return (result, provider.requests)
    }

    @Test func smsIsAFormPostToMessagesJSONWithBasicAuthAndTheStatusCallback() async throws {
        let m = Self.message(.sms)
        let (result, requests) = try await Self.send(m, channel: .sms)
        #expect(result == .accepted(providerRef: "SM0123456789abcdef0123456789abcdef"))
        let r = try #require(requests.first)
        #expect(requests.count == 1)
        #expect(r.method == "POST")
        #expect(r.path == "/2010-04-01/Accounts/\(Self.sid)/Messages.json")
        let basic = "Basic " + Data("\(Self.sid):\(Self.token)".utf8).base64EncodedString()
        #expect(r.header("Authorization") == basic)
        #expect(r.header("Content-Type") == "application/x-www-form-urlencoded")
        #expect(r.form.map(\.0) == ["To", "From", "Body", "StatusCallback"])
        #expect(r.field("To") == Self.phone)
        #expect(r.field("From") == "+15550001111")
        #expect(r.field("Body") == m.message.text)
        #expect(r.field("Body")?.hasSuffix("@acme.example #\(Self.code)") == true)
        #expect(r.field("StatusCallback") == "https://otp.acme.example/receipts/twilio")
        // The exact encoding: spaces as %20, '+' and '#' escaped.
        #expect(r.text.contains("To=%2B15555550123&From=%2B15550001111&Body=AcmeApp%3A%20your%20code"))
    }

    @Test func aMessagingServiceSendsMessagingServiceSidInsteadOfFrom() async throws {
        let (_, requests) = try await Self.send(
            Self.message(.sms, links: false),
            channel: .sms,
            sender: .messagingService("MG" + String(repeating: "1", count: 32))
        )
        let r = try #require(requests.first)
        #expect(r.form.map(\.0) == ["To", "MessagingServiceSid", "Body"])
        #expect(r.field("MessagingServiceSid") == "MG" + String(repeating: "1", count: 32))
    }

    @Test func voiceIsACallWithTwiMLReadingTheCodeTwiceAndACompletedCallback() async throws {
        let (result, requests) = try await Self.send(
            Self.message(.voice),
            channel: .voice,
            body: #"{"sid": "CA0123456789abcdef0123456789abcdef"}"#
        )
        #expect(result == .accepted(providerRef: "CA0123456789abcdef0123456789abcdef"))
        let r = try #require(requests.first)
        #expect(r.path == "/2010-04-01/Accounts/\(Self.sid)/Calls.json")
        #expect(r.form.map(\.0) == ["To", "From", "Twiml", "StatusCallback", "StatusCallbackEvent"])
        #expect(r.field("StatusCallbackEvent") == "completed")
        let twiml = try #require(r.field("Twiml"))
        #expect(twiml.hasPrefix("<Response><Pause length=\"1\"/><Say language=\"en-US\">"))
        #expect(twiml.hasSuffix("</Say></Response>"))
        let spoken = Self.code.map(String.init).joined(separator: ", ")
        #expect(twiml.components(separatedBy: spoken).count - 1 == 2)  // digit by digit, twice
        #expect(!twiml.contains(Self.code))  // never as one number a voice would read "four hundred..."
    }

    @Test func twilioErrorsArePermanentWithTheirCodeButWithoutTwiliosMessage() async throws {
        let body = #"{"code": 21211, "message": "The 'To' number +15555550123 is not valid.", "status": 400}"#
        let (result, _) = try await Self.send(Self.message(.sms), channel: .sms, status: 400, body: body)
        #expect(result == .permanentFailure("Twilio error 21211, HTTP 400"))
    }

    @Test(arguments: [429, 500, 503])
    func rateLimitsAndServerErrorsAreTransient(status: Int) async throws {
        let (result, _) = try await Self.send(Self.message(.sms), channel: .sms, status: status, body: "")
        #expect(result == .transientFailure("HTTP \(status)"))
    }

    @Test func anAcceptedAnswerWithoutASidIsStillAccepted() async throws {
        // Sending again would send twice; the message just cannot be found by a receipt.
        let (result, _) = try await Self.send(Self.message(.sms), channel: .sms, status: 201, body: "{}")
        #expect(result == .accepted(providerRef: nil))
    }

    @Test func aPriceTwilioReportsComesWithTheAcceptanceAndANullOneDoesNot() async throws {
        let priced = #"{"sid": "SM0123456789abcdef0123456789abcdef", "price": "-0.00750", "price_unit": "USD"}"#
        let (result, _) = try await Self.send(Self.message(.sms), channel: .sms, body: priced)
        #expect(result == .accepted(providerRef: "SM0123456789abcdef0123456789abcdef", price: Money(micros: 7_500)))
        let unpriced = #"{"sid": "SM0123456789abcdef0123456789abcdef", "price": null}"#
        let (later, _) = try await Self.send(Self.message(.sms), channel: .sms, body: unpriced)
        #expect(later == .accepted(providerRef: "SM0123456789abcdef0123456789abcdef", price: nil))
    }

    @Test func noAnswerAfterTheRequestWentOutIsAnUnknownOutcomeNotARetry() async throws {
        let provider = try await FakeProvider.start { _ in (201, #"{"sid":"SMlate"}"#, .seconds(3)) }
        var settings = TwilioSettings(accountSID: Self.sid, authToken: Self.token, sender: .from("+15550001111"))
        settings.baseURL = provider.baseURL
        settings.call.timeoutMs = 300
        let http = ProviderHTTP()
        let result = try await TwilioDriver(settings, channel: .sms, http: http).send(Self.message(.sms))
        await http.shutdown()
        await provider.stop()
        #expect(result == .unknownOutcome("timeout"))
        #expect(provider.requests.count == 1)
    }

    @Test func voiceNeedsAFromNumber() throws {
        let settings = TwilioSettings(accountSID: Self.sid, authToken: Self.token, sender: .messagingService("MG1"))
        let http = ProviderHTTP()
        defer { Task { await http.shutdown() } }
        #expect {
            _ = try TwilioDriver(settings, channel: .voice, http: http, file: "f", key: "channel.voice")
        } throws: { "\($0)".hasPrefix("f: channel.voice.messaging_service_sid:") }
    }
}
