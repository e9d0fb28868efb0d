import OTPDomain
import OTPService
import TOMLKit

extension Configuration {
    /// Reads the `[templates.<channel>.<locale>]` tables (the value of the top-level `templates` key, if any):
    /// each a table of strings, `text` for every channel, `subject` and `html` for e-mail, `title` for push,
    /// `ssml` for voice. Unknown channels and keys, non-string values, bad locale tags and a locale given twice
    /// (`pt-BR` and `pt_br`) are errors naming the key.
    static func ownTemplates(
        _ value: (any TOMLValueConvertible)?,
        file: String
    ) throws(ConfigurationError) -> [DeliveryChannel: [String: OwnTemplate]] {
        func fail(_ key: String, _ message: String) -> ConfigurationError {
            ConfigurationError(file: file, key: key, message: message)
        }
        guard let value else { return [:] }
        guard let channels = value.table else {
            throw fail("templates", "must be a table of [templates.CHANNEL.LOCALE] tables")
        }
        var out: [DeliveryChannel: [String: OwnTemplate]] = [:]
        for name in channels.keys.sorted() {
            let p = "templates.\(name)"
            guard let channel = DeliveryChannel(rawValue: name) else {
                throw fail(p, "unknown channel '\(name)' (sms, email, voice, push)")
            }
            guard let locales = channels[name]?.table else { throw fail(p, "must be a table of [\(p).LOCALE] tables") }
            var seen: [String: String] = [:]
            for tag in locales.keys.sorted() {
                let lp = "\(p).\(tag)"
                let locale = TemplateBook.canonicalTag(tag)
                guard Validation.isLocaleTag(locale) else {
                    throw fail(lp, "'\(tag)' is not a BCP 47 locale tag such as pt-BR")
                }
                if let other = seen[locale] { throw fail(lp, "the same locale as \(p).\(other)") }
                seen[locale] = tag
                guard let t = locales[tag]?.table else { throw fail(lp, "must be a table") }
                let allowed = OwnTemplate.keys(for: channel)
                var strings: [String: String] = [:]
                for key in t.keys.sorted() {
                    guard allowed.contains(key) else {
                        throw fail(
                            "\(lp).\(key)",
                            "unknown key (\(channel.rawValue) takes \(allowed.joined(separator: ", ")))"
                        )
                    }
                    guard let s = t[key]?.string else { throw fail("\(lp).\(key)", "must be a string") }
                    // A subject or title is one header line: a line break could add headers of its own.
                    if key == "subject" || key == "title",
                        s.unicodeScalars.contains(where: { $0.properties.generalCategory == .control })
                    {
                        throw fail("\(lp).\(key)", "must be one line without control characters")
                    }
                    strings[key] = s
                }
                guard !strings.isEmpty else {
                    throw fail(lp, "give at least one of \(allowed.joined(separator: ", "))")
                }
                out[channel, default: [:]][locale] = OwnTemplate(
                    text: strings["text"],
                    subject: strings["subject"],
                    html: strings["html"],
                    title: strings["title"],
                    ssml: strings["ssml"]
                )
            }
        }
        return out
    }

    /// The settings every message is rendered with: the app name, the origin-bound domain, the app hash.
    public var messageSettings: MessageSettings {
        MessageSettings(appName: appName, appDomain: appDomain, androidAppHash: androidAppHash)
    }

    /// The built-in templates with the configured own templates over them.
    public var templateBook: TemplateBook { TemplateBook(own: templates) }

    /// Lints every template, built-in and own, of every channel and locale, as it will be sent.
    public func lintTemplates() -> TemplateLinter.Report {
        TemplateLinter(settings: messageSettings, templates: templateBook).lint()
    }

    /// Lints every template for a start: the first template with an error stops it (an error naming
    /// `templates.<channel>.<locale>` and the reason); returns the warnings, one line each, for the start to print.
    public func checkTemplates() throws(ConfigurationError) -> [String] {
        let report = lintTemplates()
        if let bad = report.entries.first(where: { !$0.errors.isEmpty }) {
            var message = bad.errors.map { "\($0.field): \($0.message)" }.joined(separator: "; ")
            if !bad.isOwn {
                message += " (built-in template: give [\(bad.key)] of your own, or check app_name, app_domain)"
            }
            let others = report.entries.filter { !$0.errors.isEmpty }.count - 1
            if others > 0 { message += "; \(others) more template\(others == 1 ? "" : "s") with errors (otpctl lint)" }
            throw ConfigurationError(file: file, key: bad.key, message: message)
        }
        return report.entries.flatMap { e in e.warnings.map { "\(e.key): \($0.field): \($0.message)" } }
    }
}
