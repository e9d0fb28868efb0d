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

/// Renders codes into messages phones can autofill, from the templates of a `TemplateBook`.
public struct MessageRenderer: Sendable {
    /// The locales with built-in templates.
    public static let locales = TemplateBook.builtInLocales

    /// The settings in force.
    public var settings: MessageSettings
    /// The templates: the built-in ones and the operator's own.
    public var templates: TemplateBook

    /// Creates a renderer.
    public init(settings: MessageSettings, templates: TemplateBook = .builtIn) {
        self.settings = settings
        self.templates = templates
    }

    /// The closest built-in locale for a BCP 47 tag (the tag, then its shorter prefixes, else English).
    public static func closestLocale(_ tag: String) -> String {
        TemplateBook.builtIn.closestLocale(tag, channel: .sms)
    }

    /// Renders the message of a channel from the template closest to `locale`; `ttlSeconds` (the session's
    /// TTL) gives `{minutes}`. The message's `locale` is the template's.
    public func render(
        channel: DeliveryChannel,
        code: String,
        app: String?,
        locale: String,
        ttlSeconds: Int = 600
    ) -> Message {
        let app = app ?? settings.appName
        let (used, t) = templates.template(channel, locale: locale)
        let minutes = String((max(ttlSeconds, 0) + 59) / 60)
        func fill(_ template: String, code codeText: String = code, escaped: Bool = false) -> String {
            TemplateText.substitute(template) { name in
                switch Placeholder(rawValue: name) {
                case .app: escaped ? TemplateText.escapeHTML(app) : app
                case .code: codeText
                case .minutes: minutes
                case nil: nil
                }
            }
        }
        switch channel {
        case .sms:
            return Message(channel: .sms, locale: used, text: smsText(body: fill(t.text), code: code))
        case .email:
            return Message(
                channel: .email,
                locale: used,
                text: fill(t.text),
                subject: t.subject.map { fill($0) },
                html: t.html.map { fill($0, escaped: true) }
            )
        case .voice:
            let separator = ["ja", "zh"].contains(TemplateBook.language(of: used)) ? "、" : ", "
            let spoken = code.map(String.init).joined(separator: separator)
            let ssml = t.ssml ?? TemplateText.ssml(fromVoiceText: t.text)
            return Message(
                channel: .voice,
                locale: used,
                text: fill(t.text, code: spoken),
                ssml: fill(ssml, code: "<say-as interpret-as=\"digits\">\(code)</say-as>", escaped: true)
            )
        case .push:
            return Message(
                channel: .push,
                locale: used,
                text: fill(t.text),
                title: t.title.map { fill($0) },
                dataCode: code
            )
        }
    }

    /// An SMS: the body, then (when configured) a blank line, the Android app hash line and, last, the
    /// origin-bound line `@<app_domain> #<code>`.
    func smsText(body: String, code: String) -> String {
        var scalars = body.unicodeScalars[...]
        while let last = scalars.last, last.properties.isWhitespace { scalars = scalars.dropLast() }
        var lines = [String(String.UnicodeScalarView(scalars))]
        var trailer: [String] = []
        if let hash = settings.androidAppHash { trailer.append(hash) }
        if let domain = settings.appDomain { trailer.append("@\(domain) #\(code)") }
        if !trailer.isEmpty { lines.append("") }
        lines += trailer
        return lines.joined(separator: "\n")
    }

    /// Whether a text fits one SMS segment: 160 GSM-7 septets, else 70 UCS-2 units.
    public static func fitsOneSegment(_ text: String) -> Bool {
        SMSMeasure(text).segments == 1
    }
}
