import Foundation
import NIOHTTP1
import NIOSSL
import OTPDomain
import OTPService

/// Sends SMS and voice calls through Twilio's REST API.
///
/// SMS: `POST {base_url}/2010-04-01/Accounts/{account_sid}/Messages.json` with `To`, `From` (or
/// `MessagingServiceSid`), `Body` and `StatusCallback`; voice: `.../Calls.json` with `To`, `From`, `Twiml` (the
/// code read digit by digit, twice), `StatusCallback` and `StatusCallbackEvent=completed`; form-encoded, with
/// HTTP basic auth `account_sid:auth_token`. A 2xx answer with a `sid` is accepted (the sid is the provider
/// reference receipts name); 429 and 5xx are transient; any other answer is permanent, its reason Twilio's
/// error code (never Twilio's message, which quotes the number).
public struct TwilioDriver: ChannelDriver {
    /// `twilio`.
    public var name: String { "twilio" }

    let channel: DeliveryChannel
    let settings: TwilioSettings
    let endpoint: String
    let authorization: String
    let tls: TLSConfiguration?
    let http: ProviderHTTP

    /// Creates the driver of `channel` (sms or voice); `file` and `key` name the table in errors.
    public init(
        _ settings: TwilioSettings,
        channel: DeliveryChannel,
        http: ProviderHTTP,
        file: String = "config",
        key: String = "channel"
    ) throws(ConfigurationError) {
        guard channel == .sms || channel == .voice else {
            throw ConfigurationError(file: file, key: key + ".driver", message: "twilio sends sms and voice only")
        }
        if case .messagingService = settings.sender, channel == .voice {
            throw ConfigurationError(
                file: file,
                key: key + ".messaging_service_sid",
                message: "a call needs a `from` number; a messaging service sends SMS only"
            )
        }
        let base = try ProviderURL.base(settings.baseURL, file: file, key: key + ".base_url")
        self.channel = channel
        self.settings = settings
        let resource = channel == .sms ? "Messages.json" : "Calls.json"
        endpoint = "\(base)/2010-04-01/Accounts/\(Form.escape(settings.accountSID))/\(resource)"
        authorization = "Basic " + Data("\(settings.accountSID):\(settings.authToken)".utf8).base64EncodedString()
        tls = try ProviderHTTP.tls(caFile: settings.call.caFile, file: file, key: key + ".ca_file")
        self.http = http
    }

    /// The form fields of a message, in the order sent.
    func fields(for m: OutboundMessage) -> [(String, String)] {
        var fields: [(String, String)] = [("To", m.to)]
        switch settings.sender {
        case .from(let from): fields.append(("From", from))
        case .messagingService(let sid): fields.append(("MessagingServiceSid", sid))
        }
        if channel == .sms {
            fields.append(("Body", m.message.text))
        } else {
            fields.append(("Twiml", Self.twiml(m.message)))
        }
        if let links = m.links {
            fields.append(("StatusCallback", links.statusCallback))
            if channel == .voice { fields.append(("StatusCallbackEvent", "completed")) }
        }
        return fields
    }

    /// The call's TwiML: a breath, the script (the code digit by digit, twice), in the template's language.
    static func twiml(_ message: Message) -> String {
        let language = sayLanguages[message.locale] ?? "en-US"
        let sentences = message.text.split(separator: "\n").map { TemplateText.escapeHTML(String($0)) }
        let says = sentences.map { "<Say language=\"\(language)\">\($0)</Say>" }
            .joined(separator: "<Pause length=\"1\"/>")
        return "<Response><Pause length=\"1\"/>\(says)</Response>"
    }

    /// Twilio's `<Say>` language for each built-in template locale.
    static let sayLanguages = [
        "en": "en-US", "es": "es-ES", "fr": "fr-FR", "de": "de-DE", "pt": "pt-BR", "hi": "hi-IN", "ja": "ja-JP",
    ]

    /// Posts the message once and classifies the answer.
    public func send(_ message: OutboundMessage) async -> DriverResult {
        var headers = HTTPHeaders()
        headers.add(name: "User-Agent", value: "otpd")
        headers.add(name: "Authorization", value: authorization)
        headers.add(name: "Content-Type", value: "application/x-www-form-urlencoded")
        headers.add(name: "Accept", value: "application/json")
        let body = Array(Form.encode(fields(for: message)).utf8)
        let answer = await http.send(
            .POST,
            endpoint,
            headers: headers,
            body: body,
            tls: tls,
            timeoutMs: settings.call.timeoutMs
        )
        switch answer {
        case .failure(let failure) where failure.mayHaveBeenSent: return .unknownOutcome(failure.reason)
        case .failure(let failure): return .transientFailure(failure.reason)
        case .success(let response): return Self.classify(response)
        }
    }

    static func classify(_ response: ProviderHTTP.Response) -> DriverResult {
        let status = response.status
        let code = (response.json?["code"] as? Int).map { "Twilio error \($0), " } ?? ""
        switch status {
        case 200..<300:
            // Taken, whatever the body says: without a sid no receipt will find it, but sending again would
            // send twice.
            let sid = response.string("sid").flatMap { $0.isEmpty ? nil : $0 }
            // Twilio's `price` is a negative decimal string ("-0.00750") once known, usually null at creation.
            let price = response.string("price").flatMap(Money.init(decimal:))
            return .accepted(providerRef: sid, price: price)
        case 429, 500..<600: return .transientFailure("\(code)HTTP \(status)")
        default: return .permanentFailure("\(code)HTTP \(status)")
        }
    }
}

/// `application/x-www-form-urlencoded`, as Twilio and Google's token endpoint read it.
enum Form {
    /// Unreserved characters stay; everything else is percent-encoded (spaces as `%20`).
    static func escape(_ s: String) -> String {
        var out = ""
        for byte in s.utf8 {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"),
                UInt8(ascii: "~"):
                out.unicodeScalars.append(Unicode.Scalar(byte))
            default:
                out += "%" + (byte < 16 ? "0" : "") + String(byte, radix: 16, uppercase: true)
            }
        }
        return out
    }

    /// `k=v&k=v`, in the order given.
    static func encode(_ fields: [(String, String)]) -> String {
        fields.map { escape($0.0) + "=" + escape($0.1) }.joined(separator: "&")
    }
}
