/// The placeholders a template may use; anything else in braces that looks like one (`{cod}`) is a linter error.
public enum Placeholder: String, Sendable, Hashable, CaseIterable {
    /// The app's name (HTML-escaped in `html` and `ssml`).
    case app
    /// The code: one run of digits; in a voice `text` the digits one by one with pauses, in `ssml` a
    /// `<say-as interpret-as="digits">`.
    case code
    /// The session's TTL in whole minutes, rounded up.
    case minutes
}

/// One channel's message in one locale, as text with placeholders.
///
/// Every channel has `text` (the SMS body, the e-mail's plain-text part, the voice script, the push body). An
/// SMS template is the body only: otpd adds the Android app hash line and the origin-bound line itself.
public struct MessageTemplate: Sendable, Hashable {
    /// The SMS body, e-mail text part, voice script or push body.
    public var text: String
    /// The e-mail subject.
    public var subject: String?
    /// The e-mail HTML part; nil: the e-mail has a plain-text part only.
    public var html: String?
    /// The push title.
    public var title: String?
    /// The voice script as SSML; nil: made from `text` (each `{code}` between pauses, read as digits).
    public var ssml: String?

    /// Creates a template.
    public init(text: String, subject: String? = nil, html: String? = nil, title: String? = nil, ssml: String? = nil) {
        self.text = text
        self.subject = subject
        self.html = html
        self.title = title
        self.ssml = ssml
    }

    /// The template's fields that are set, by their configuration key.
    public var fields: [(key: String, value: String)] {
        [("subject", subject), ("title", title), ("text", text), ("html", html), ("ssml", ssml)]
            .compactMap { key, value in value.map { (key, $0) } }
    }
}

/// An operator's template from the configuration (`[templates.<channel>.<locale>]`): each key it leaves out is
/// taken from the built-in template of its locale, except that an own `text` without `html` (or `ssml`) means
/// no HTML part (and SSML made from that text), so that two parts never say different things.
public struct OwnTemplate: Sendable, Hashable {
    /// The SMS body, e-mail text part, voice script or push body.
    public var text: String?
    /// The e-mail subject.
    public var subject: String?
    /// The e-mail HTML part.
    public var html: String?
    /// The push title.
    public var title: String?
    /// The voice script as SSML.
    public var ssml: String?

    /// Creates an own template.
    public init(
        text: String? = nil,
        subject: String? = nil,
        html: String? = nil,
        title: String? = nil,
        ssml: String? = nil
    ) {
        self.text = text
        self.subject = subject
        self.html = html
        self.title = title
        self.ssml = ssml
    }

    /// The keys an own template of a channel may set.
    public static func keys(for channel: DeliveryChannel) -> [String] {
        switch channel {
        case .sms: ["text"]
        case .email: ["subject", "text", "html"]
        case .voice: ["text", "ssml"]
        case .push: ["title", "text"]
        }
    }

    /// This template completed from `base` (the built-in of its locale).
    func completed(from base: MessageTemplate) -> MessageTemplate {
        MessageTemplate(
            text: text ?? base.text,
            subject: subject ?? base.subject,
            html: html ?? (text == nil ? base.html : nil),
            title: title ?? base.title,
            ssml: ssml ?? (text == nil ? base.ssml : nil)
        )
    }
}

/// Placeholder syntax: `{name}` with a name of 1 to 32 letters, digits or `_`.
public enum TemplateText {
    /// Replaces each placeholder `value` knows, in one pass: what it inserts is never scanned again (a code or
    /// an app name holding `{code}` stays as it is). Placeholders it does not know stay as written.
    static func substitute(_ template: String, _ value: (String) -> String?) -> String {
        var out = String.UnicodeScalarView()
        let s = template.unicodeScalars
        var i = s.startIndex
        while i < s.endIndex {
            if s[i] == "{", let close = placeholderEnd(s, from: i),
                let v = value(String(String.UnicodeScalarView(s[s.index(after: i)..<close])))
            {
                out.append(contentsOf: v.unicodeScalars)
                i = s.index(after: close)
            } else {
                out.append(s[i])
                i = s.index(after: i)
            }
        }
        return String(out)
    }

    /// The placeholder names a template uses, in order, repeats included.
    static func placeholders(in template: String) -> [String] {
        var names: [String] = []
        _ = substitute(template) { name in
            names.append(name)
            return nil
        }
        return names
    }

    /// The index of the `}` closing a placeholder that opens at `open`, or nil when none does.
    private static func placeholderEnd(_ s: String.UnicodeScalarView, from open: String.Index) -> String.Index? {
        var j = s.index(after: open)
        var length = 0
        while j < s.endIndex, length <= 32 {
            let c = s[j]
            if c == "}" { return length > 0 ? j : nil }
            guard c.isASCII, c.properties.isAlphabetic || ("0"..."9").contains(c) || c == "_" else { return nil }
            length += 1
            j = s.index(after: j)
        }
        return nil
    }

    /// Escapes the five HTML (and XML) special characters: for e-mail HTML, SSML, TwiML and otpd's own pages.
    public static func escapeHTML(_ s: String) -> String {
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

    /// The SSML made from a voice text template: the text escaped, each `{code}` between pauses.
    static func ssml(fromVoiceText text: String) -> String {
        let escaped = substitute(escapeHTML(text)) { name in
            name == Placeholder.code.rawValue ? "<break time=\"500ms\"/>{code}<break time=\"1s\"/>" : nil
        }
        return "<speak>\(escaped)</speak>"
    }
}

/// Every template otpd sends from: the built-in ones, with the operator's own templates over them, and the
/// choice of the closest locale for a request's tag.
public struct TemplateBook: Sendable, Hashable {
    /// The locales every channel has built-in templates for.
    public static let builtInLocales = ["en", "es", "fr", "de", "pt", "hi", "ja"]

    /// The built-in templates alone.
    public static let builtIn = TemplateBook()

    /// The templates by channel, then by locale tag (canonical case: `pt-BR`).
    public private(set) var templates: [DeliveryChannel: [String: MessageTemplate]]
    /// The (channel, locale) pairs whose template is the operator's own.
    public private(set) var own: Set<Key>

    /// A channel and a locale tag.
    public struct Key: Sendable, Hashable {
        /// The channel.
        public var channel: DeliveryChannel
        /// The locale tag (canonical case).
        public var locale: String
        /// Creates a key.
        public init(channel: DeliveryChannel, locale: String) {
            self.channel = channel
            self.locale = locale
        }
    }

    /// The built-in templates with `own` over them: an own template for a (channel, locale) replaces the built-in
    /// one of that pair, completed from the built-in of the same locale (for a locale with no built-in one, of
    /// the closest built-in locale: its language, else English). Tags are matched case-insensitively, `_` as `-`.
    public init(own: [DeliveryChannel: [String: OwnTemplate]] = [:]) {
        var all = BuiltInTemplates.all
        var ownKeys = Set<Key>()
        for (channel, byLocale) in own {
            for (tag, template) in byLocale {
                let locale = Self.canonicalTag(tag)
                let builtIns = BuiltInTemplates.all[channel] ?? [:]
                let base = builtIns[Self.lookup(locale, in: Array(builtIns.keys)) ?? "en"]
                all[channel, default: [:]][locale] = template.completed(from: base ?? MessageTemplate(text: ""))
                ownKeys.insert(Key(channel: channel, locale: locale))
            }
        }
        templates = all
        self.own = ownKeys
    }

    /// A channel's locales: the built-in ones in their order, then the others in alphabetical order.
    public func locales(of channel: DeliveryChannel) -> [String] {
        let tags = templates[channel].map { Array($0.keys) } ?? []
        let builtIn = Self.builtInLocales.filter(tags.contains)
        return builtIn + tags.filter { !Self.builtInLocales.contains($0) }.sorted()
    }

    /// Whether the template of a channel and locale is the operator's own.
    public func isOwn(_ channel: DeliveryChannel, _ locale: String) -> Bool {
        own.contains(Key(channel: channel, locale: locale))
    }

    /// The locale of the template used for a BCP 47 tag: the tag itself, else the tag with subtags cut from the
    /// end (`zh-Hant-TW`, `zh-Hant`, `zh`: RFC 4647 lookup), else `en`. Case-insensitive; `_` counts as `-`.
    public func closestLocale(_ tag: String, channel: DeliveryChannel) -> String {
        let tags = templates[channel].map { Array($0.keys) } ?? []
        return Self.lookup(tag, in: tags) ?? "en"
    }

    /// The template used for a channel and a request's tag, and its locale.
    public func template(_ channel: DeliveryChannel, locale tag: String) -> (locale: String, template: MessageTemplate)
    {
        let locale = closestLocale(tag, channel: channel)
        let template = templates[channel]?[locale] ?? BuiltInTemplates.all[channel]?["en"] ?? MessageTemplate(text: "")
        return (locale, template)
    }

    /// A tag's language subtag, lowercase (`PT_br` → `pt`).
    public static func language(of tag: String) -> String {
        String(tag.lowercased().split(whereSeparator: { $0 == "-" || $0 == "_" }).first ?? "")
    }

    /// A tag in canonical case: the language lowercase, a 4-letter script titlecased, a 2-letter region
    /// uppercase, the rest lowercase (`PT_br` → `pt-BR`, `zh-hant-tw` → `zh-Hant-TW`).
    public static func canonicalTag(_ tag: String) -> String {
        let subtags = tag.split(separator: "-", omittingEmptySubsequences: false).flatMap {
            $0.split(separator: "_", omittingEmptySubsequences: false)
        }
        var out: [String] = []
        for (i, sub) in subtags.enumerated() {
            let afterSingleton = out.contains { $0.count == 1 }
            if i > 0 && !afterSingleton && sub.count == 4 && sub.allSatisfy(\.isLetter) {
                out.append(sub.prefix(1).uppercased() + sub.dropFirst().lowercased())
            } else if i > 0 && !afterSingleton && sub.count == 2 && sub.allSatisfy(\.isLetter) {
                out.append(sub.uppercased())
            } else {
                out.append(sub.lowercased())
            }
        }
        return out.joined(separator: "-")
    }

    /// RFC 4647 lookup of a tag among `tags` (case-insensitive, `_` as `-`): the tag, then shorter and shorter
    /// prefixes of it (a singleton left at the end goes too); nil when none matches.
    static func lookup(_ tag: String, in tags: [String]) -> String? {
        let byKey = Dictionary(tags.map { ($0.lowercased(), $0) }, uniquingKeysWith: { first, _ in first })
        var subtags = tag.lowercased().split(separator: "-", omittingEmptySubsequences: false).flatMap {
            $0.split(separator: "_", omittingEmptySubsequences: false)
        }
        while !subtags.isEmpty {
            if let found = byKey[subtags.joined(separator: "-")] { return found }
            subtags.removeLast()
            if subtags.count > 1, subtags.last?.count == 1 { subtags.removeLast() }
        }
        return nil
    }
}
