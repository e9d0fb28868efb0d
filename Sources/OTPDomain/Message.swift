/// A rendered message for one channel, ready for a driver.
public struct Message: Sendable, Hashable {
    /// The channel the message is for.
    public var channel: DeliveryChannel
    /// The template locale actually used.
    public var locale: String
    /// The plain text (SMS body, e-mail text part, voice script, push body).
    public var text: String
    /// The e-mail subject.
    public var subject: String?
    /// The e-mail HTML part.
    public var html: String?
    /// The push title.
    public var title: String?
    /// The voice script as SSML.
    public var ssml: String?
    /// The code, for the push data field only; nil on other channels.
    public var dataCode: String?
}

/// Settings that shape every message.
public struct MessageSettings: Sendable, Hashable {
    /// The brand named in messages.
    public var appName: String
    /// The domain of the origin-bound autofill line (`@domain #code`), if any.
    public var appDomain: String?
    /// The Android SMS Retriever app hash, if any.
    public var androidAppHash: String?

    /// Creates settings.
    public init(appName: String = "otpd", appDomain: String? = nil, androidAppHash: String? = nil) {
        self.appName = appName
        self.appDomain = appDomain
        self.androidAppHash = androidAppHash
    }
}

/// Renders codes into messages phones can autofill, from the built-in templates.
public struct MessageRenderer: Sendable {
    /// The locales with built-in templates.
    public static let locales = ["en"]

    /// The settings in force.
    public var settings: MessageSettings

    /// Creates a renderer.
    public init(settings: MessageSettings) { self.settings = settings }

    /// The closest configured locale for a BCP 47 tag (its language, else English).
    public static func closestLocale(_ tag: String) -> String {
        let language = tag.split(separator: "-").first.map { $0.lowercased() } ?? "en"
        return locales.contains(language) ? language : "en"
    }

    /// Renders the message of a channel.
    public func render(channel: DeliveryChannel, code: String, app: String?, locale: String) -> Message {
        let app = app ?? settings.appName
        let used = Self.closestLocale(locale)
        switch channel {
        case .sms:
            var lines = ["\(app): your code is \(code). Don't share it."]
            var trailer: [String] = []
            if let hash = settings.androidAppHash { trailer.append(hash) }
            if let domain = settings.appDomain { trailer.append("@\(domain) #\(code)") }
            if !trailer.isEmpty { lines.append("") }
            lines += trailer
            return Message(channel: .sms, locale: used, text: lines.joined(separator: "\n"))
        case .email:
            let subject = "\(code) is your \(app) code"
            let text =
                "Your \(app) code is \(code).\n\nIt expires soon. If you did not ask for it, ignore this e-mail.\n"
            let safeApp = Self.escapeHTML(app)
            let html = """
                <!doctype html><html><body style="font-family:sans-serif">\
                <p>Your \(safeApp) code is</p>\
                <p style="font-size:32px;font-weight:bold;letter-spacing:4px">\(code)</p>\
                <p>It expires soon. If you did not ask for it, ignore this e-mail.</p></body></html>
                """
            return Message(channel: .email, locale: used, text: text, subject: subject, html: html)
        case .voice:
            let spoken = code.map(String.init).joined(separator: ", ")
            let text = "Your \(app) code is \(spoken). Again: \(spoken)."
            let say = "<say-as interpret-as=\"digits\">\(code)</say-as>"
            let ssml =
                "<speak>Your \(Self.escapeHTML(app)) code is <break time=\"500ms\"/>\(say)"
                + "<break time=\"1s\"/>Again: \(say)</speak>"
            return Message(channel: .voice, locale: used, text: text, ssml: ssml)
        case .push:
            return Message(
                channel: .push,
                locale: used,
                text: "Your \(app) code is \(code).",
                title: "\(app) sign-in code",
                dataCode: code
            )
        }
    }

    /// Escapes the five HTML special characters.
    static func escapeHTML(_ s: String) -> String {
        var out = ""
        for ch in s {
            switch ch {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.append(ch)
            }
        }
        return out
    }

    /// Whether a text fits one SMS segment: 160 GSM-7 characters, else 70 UCS-2 characters.
    public static func fitsOneSegment(_ text: String) -> Bool {
        let gsm = text.unicodeScalars.allSatisfy { gsm7.contains($0) }
        return gsm ? text.unicodeScalars.count <= 160 : text.utf16.count <= 70
    }

    private static let gsm7: Set<Unicode.Scalar> = Set(
        ("@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
            + "¿abcdefghijklmnopqrstuvwxyzäöñüà").unicodeScalars
    )
}
