/// Checks every template as it will be sent: rendered with a 10-digit code, the configured app name, and for SMS
/// the app hash line and origin-bound line otpd adds.
///
/// Errors (a start stops on them): a missing `{code}` (for e-mail in the subject, the text and the HTML), an
/// unknown placeholder, an empty text, an origin-bound line that is not the SMS's last line or does not read
/// `@domain #{code}`, and an SMS over 140 bytes when an Android app hash is set (SMS Retriever ignores longer
/// ones). Warnings: an SMS of more than one segment, an e-mail subject that does not start with the code, a
/// voice script that reads the code only once.
public struct TemplateLinter: Sendable {
    /// The code templates are rendered with: the longest a session may have (10 digits).
    public static let sampleCode = "1234567890"
    /// The TTL templates are rendered with: the longest (an hour, so `{minutes}` is two digits).
    public static let sampleTTLSeconds = 3_600
    /// The most an SMS may hold for SMS Retriever to read it, in bytes.
    public static let retrieverByteLimit = 140

    /// How bad a finding is.
    public enum Severity: String, Sendable, Hashable {
        /// The template must not be sent: the start stops.
        case error
        /// Worth fixing; the start goes on.
        case warning
    }

    /// One thing wrong with a template.
    public struct Finding: Sendable, Hashable, CustomStringConvertible {
        /// Error or warning.
        public var severity: Severity
        /// The template's key it concerns (`text`, `subject`, `html`, `title`, `ssml`).
        public var field: String
        /// What is wrong (never the code: the sample code shows as `{code}`).
        public var message: String

        /// Creates a finding.
        public init(_ severity: Severity, _ field: String, _ message: String) {
            self.severity = severity
            self.field = field
            self.message = message
        }

        /// `error: text: no {code}`.
        public var description: String { "\(severity.rawValue): \(field): \(message)" }
    }

    /// What the linter found in one channel's template in one locale.
    public struct Entry: Sendable, Hashable {
        /// The channel.
        public var channel: DeliveryChannel
        /// The template's locale.
        public var locale: String
        /// Whether it is the operator's own template (else built-in).
        public var isOwn: Bool
        /// For SMS: the encoding, segments and bytes of the rendered message.
        public var sms: SMSMeasure?
        /// The findings, errors first.
        public var findings: [Finding]

        /// Creates an entry.
        public init(channel: DeliveryChannel, locale: String, isOwn: Bool, sms: SMSMeasure?, findings: [Finding]) {
            self.channel = channel
            self.locale = locale
            self.isOwn = isOwn
            self.sms = sms
            self.findings = findings
        }

        /// The errors.
        public var errors: [Finding] { findings.filter { $0.severity == .error } }
        /// The warnings.
        public var warnings: [Finding] { findings.filter { $0.severity == .warning } }
        /// The configuration key of this template: `templates.sms.en`.
        public var key: String { "templates.\(channel.rawValue).\(locale)" }

        /// One line: `sms/en  GSM-7  1 segment  112 bytes  ok` (`(own)` after the name of an own template).
        public var line: String {
            var parts = ["\(channel.rawValue)/\(locale)\(isOwn ? " (own)" : "")"]
            if let sms {
                parts.append(sms.encoding.rawValue)
                parts.append("\(sms.segments) segment\(sms.segments == 1 ? "" : "s")")
                parts.append("\(sms.bytes) bytes")
            }
            parts.append(TemplateLinter.status(errors: errors.count, warnings: warnings.count))
            return parts.joined(separator: "  ")
        }
    }

    /// Every template's entry, channel by channel and locale by locale.
    public struct Report: Sendable, Hashable {
        /// The entries.
        public var entries: [Entry]

        /// Creates a report.
        public init(entries: [Entry]) { self.entries = entries }

        /// Errors in all entries.
        public var errorCount: Int { entries.reduce(0) { $0 + $1.errors.count } }
        /// Warnings in all entries.
        public var warningCount: Int { entries.reduce(0) { $0 + $1.warnings.count } }

        /// The report as printed: each entry's line with its findings indented under it, then a summary.
        public var lines: [String] {
            var out: [String] = []
            for e in entries {
                out.append(e.line)
                out += e.findings.map { "    \($0)" }
            }
            let own = entries.filter(\.isOwn).count
            out.append(
                "\(entries.count) templates (\(own) own): "
                    + "\(errorCount) error\(errorCount == 1 ? "" : "s"), "
                    + "\(warningCount) warning\(warningCount == 1 ? "" : "s")"
            )
            return out
        }
    }

    /// The renderer whose templates and settings are checked.
    public var renderer: MessageRenderer

    /// Creates a linter for the given settings and templates.
    public init(settings: MessageSettings, templates: TemplateBook = .builtIn) {
        renderer = MessageRenderer(settings: settings, templates: templates)
    }

    /// Lints every template of every channel.
    public func lint() -> Report {
        var entries: [Entry] = []
        for channel in DeliveryChannel.allCases {
            for locale in renderer.templates.locales(of: channel) {
                entries.append(lint(channel, locale: locale))
            }
        }
        return Report(entries: entries)
    }

    /// Lints the template of one channel and locale.
    public func lint(_ channel: DeliveryChannel, locale: String) -> Entry {
        let template = renderer.templates.templates[channel]?[locale] ?? MessageTemplate(text: "")
        var findings: [Finding] = []
        let known = Set(Placeholder.allCases.map(\.rawValue))
        for (field, value) in template.fields {
            for name in Set(TemplateText.placeholders(in: value)) where !known.contains(name) {
                findings.append(Finding(.error, field, "unknown placeholder {\(name)} (use {app}, {code}, {minutes})"))
            }
        }
        if template.text.allSatisfy(\.isWhitespace) { findings.append(Finding(.error, "text", "is empty")) }
        func codeCount(_ s: String?) -> Int { TemplateText.placeholders(in: s ?? "").filter { $0 == "code" }.count }
        var needsCode = ["text"]
        switch channel {
        case .email:
            needsCode = ["subject", "text"] + (template.html == nil ? [] : ["html"])
            if let subject = template.subject, codeCount(subject) > 0, !subject.hasPrefix("{code}") {
                findings.append(Finding(.warning, "subject", "does not start with {code} (inbox lists show the start)"))
            }
        case .voice:
            if template.ssml != nil { needsCode.append("ssml") }
            if codeCount(template.text) == 1 {
                findings.append(Finding(.warning, "text", "reads the code once; read it twice"))
            }
        case .sms, .push: break
        }
        let values = Dictionary(template.fields.map { ($0.key, $0.value) }, uniquingKeysWith: { a, _ in a })
        for field in needsCode where codeCount(values[field]) == 0 {
            findings.append(Finding(.error, field, "no {code}"))
        }
        var measure: SMSMeasure?
        if channel == .sms {
            let text = renderer.render(
                channel: .sms,
                code: Self.sampleCode,
                app: nil,
                locale: locale,
                ttlSeconds: Self.sampleTTLSeconds
            ).text
            let m = SMSMeasure(text)
            measure = m
            findings += smsFindings(text, m)
        }
        findings = findings.filter { $0.severity == .error } + findings.filter { $0.severity == .warning }
        return Entry(
            channel: channel,
            locale: locale,
            isOwn: renderer.templates.isOwn(channel, locale),
            sms: measure,
            findings: findings
        )
    }

    /// The findings of a rendered SMS: its origin-bound line, its bytes with an app hash, its segments.
    private func smsFindings(_ text: String, _ m: SMSMeasure) -> [Finding] {
        var findings: [Finding] = []
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        let shown: (Substring) -> String = { line in
            String(line).replacing(Self.sampleCode, with: "{code}")
        }
        let added = renderer.settings.appDomain == nil ? "" : " (otpd adds `@<app_domain> #{code}` itself)"
        for (i, line) in lines.enumerated() where line.hasPrefix("@") && i != lines.count - 1 {
            findings.append(
                Finding(.error, "text", "the origin-bound line `\(shown(line))` is not the last line\(added)")
            )
        }
        if let last = lines.last, last.hasPrefix("@"), !Self.isOriginBoundLine(last, code: Self.sampleCode) {
            findings.append(
                Finding(.error, "text", "the origin-bound line `\(shown(last))` does not read `@domain #{code}`")
            )
        }
        if renderer.settings.androidAppHash != nil, m.bytes > Self.retrieverByteLimit {
            findings.append(
                Finding(
                    .error,
                    "text",
                    "\(m.bytes) bytes with a 10-digit code; SMS Retriever ignores messages over "
                        + "\(Self.retrieverByteLimit) bytes (android_app_hash is set)"
                )
            )
        }
        if m.segments > 1 {
            let why = m.firstNonGSM.map { " (UCS-2 because of '\(Character($0))')" } ?? ""
            findings.append(
                Finding(
                    .warning,
                    "text",
                    "\(m.segments) SMS segments with a 10-digit code: \(m.units) \(m.encoding.rawValue) "
                        + "\(m.encoding == .gsm7 ? "septets" : "units"), one segment holds "
                        + "\(m.singleSegmentCapacity)\(why)"
                )
            )
        }
        return findings
    }

    /// Whether a line is an origin-bound one-time-code line: `@host #code`, optionally ` @embedding-host`.
    public static func isOriginBoundLine(_ line: Substring, code: String) -> Bool {
        let parts = line.split(separator: " ", omittingEmptySubsequences: false)
        guard parts.count == 2 || parts.count == 3, isHostPart(parts[0]), parts[1] == "#" + code else { return false }
        return parts.count == 2 || isHostPart(parts[2])
    }

    /// `@` then a host name: labels of ASCII letters, digits and `-` (not at their ends), separated by dots.
    private static func isHostPart(_ part: Substring) -> Bool {
        guard part.hasPrefix("@") else { return false }
        return part.dropFirst().split(separator: ".", omittingEmptySubsequences: false).allSatisfy { label in
            (1...63).contains(label.count) && !label.hasPrefix("-") && !label.hasSuffix("-")
                && label.unicodeScalars.allSatisfy {
                    $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || $0 == "-")
                }
        }
    }

    /// `ok`, `1 warning`, `2 errors, 1 warning`.
    static func status(errors: Int, warnings: Int) -> String {
        var parts: [String] = []
        if errors > 0 { parts.append("\(errors) error\(errors == 1 ? "" : "s")") }
        if warnings > 0 { parts.append("\(warnings) warning\(warnings == 1 ? "" : "s")") }
        return parts.isEmpty ? "ok" : parts.joined(separator: ", ")
    }
}
