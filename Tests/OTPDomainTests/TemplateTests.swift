import OTPDomain
import Testing

/// Whether `code` occurs in `text` and every occurrence is one unbroken run of digits (no digit right before or
/// after it).
func hasUnbrokenCode(_ text: String, _ code: String) -> Bool {
    let chars = Array(text)
    let target = Array(code)
    var found = false
    var i = 0
    while i + target.count <= chars.count {
        if Array(chars[i..<(i + target.count)]) == target {
            let before = i > 0 ? chars[i - 1] : " "
            let after = i + target.count < chars.count ? chars[i + target.count] : " "
            if before.isNumber || after.isNumber { return false }
            found = true
            i += target.count
        } else {
            i += 1
        }
    }
    return found
}

/// How many times `part` occurs in `text`.
func occurrences(_ part: String, in text: String) -> Int {
    text.split(separator: part, omittingEmptySubsequences: false).count - 1
}

@Suite struct BuiltInTemplateRules {
    static let code = "1234567890"
    static let hash = "FA+9qCX9VSu"
    let renderer = MessageRenderer(
        settings: MessageSettings(appName: "AcmeApp", appDomain: "acme.example", androidAppHash: hash)
    )

    @Test func everyLocaleHasEveryChannel() {
        #expect(TemplateBook.builtInLocales == ["en", "es", "fr", "de", "pt", "hi", "ja"])
        for channel in DeliveryChannel.allCases {
            #expect(TemplateBook.builtIn.locales(of: channel) == TemplateBook.builtInLocales)
        }
    }

    @Test(arguments: TemplateBook.builtInLocales)
    func smsIsOneSegmentWithinRetrieverBytesAndEndsWithTheAutofillLines(locale: String) {
        let m = renderer.render(channel: .sms, code: Self.code, app: nil, locale: locale)
        #expect(m.locale == locale)
        let lines = m.text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
        #expect(lines.suffix(3) == ["", Self.hash, "@acme.example #\(Self.code)"])
        #expect(hasUnbrokenCode(lines[0], Self.code), "the body names the code: \(lines[0])")
        #expect(lines[0].contains("AcmeApp"))
        #expect(!m.text.contains("{"))
        let measure = SMSMeasure(m.text)
        #expect(measure.segments == 1, "\(locale): \(measure)")
        #expect(measure.bytes <= 140, "\(locale): \(measure.bytes) bytes")
        #expect(MessageRenderer.fitsOneSegment(m.text))
        // The scripts that can be GSM-7 are: 160 characters then, not 70.
        #expect(measure.encoding == (["hi", "ja"].contains(locale) ? .ucs2 : .gsm7), "\(locale)")
    }

    @Test(arguments: TemplateBook.builtInLocales)
    func emailSubjectStartsWithTheCodeAndEveryPartNamesAppAndCode(locale: String) throws {
        let m = renderer.render(channel: .email, code: Self.code, app: nil, locale: locale, ttlSeconds: 1_500)
        #expect(m.locale == locale)
        let subject = try #require(m.subject)
        #expect(subject.hasPrefix(Self.code + " "), "\(subject)")
        let html = try #require(m.html)
        for part in [subject, m.text, html] {
            #expect(hasUnbrokenCode(part, Self.code), "\(locale): \(part)")
            #expect(part.contains("AcmeApp"), "\(locale): \(part)")
            #expect(!part.contains("{"), "\(locale): a placeholder left in \(part)")
        }
        #expect(m.text.contains("25"), "the TTL in minutes: \(m.text)")
        #expect(html.contains("lang=\"\(locale)\""))
    }

    @Test(arguments: TemplateBook.builtInLocales)
    func voiceReadsTheCodeDigitByDigitTwice(locale: String) throws {
        let m = renderer.render(channel: .voice, code: Self.code, app: nil, locale: locale)
        #expect(m.locale == locale)
        let separator = locale == "ja" ? "、" : ", "
        let spoken = Self.code.map(String.init).joined(separator: separator)
        #expect(occurrences(spoken, in: m.text) == 2, "\(m.text)")
        #expect(m.text.contains("AcmeApp"))
        let ssml = try #require(m.ssml)
        #expect(ssml.hasPrefix("<speak>") && ssml.hasSuffix("</speak>"))
        #expect(occurrences("<say-as interpret-as=\"digits\">\(Self.code)</say-as>", in: ssml) == 2)
        #expect(ssml.contains("<break time="))
        #expect(ssml.contains("AcmeApp"))
        #expect(!m.text.contains("{") && !ssml.contains("{"))
    }

    @Test(arguments: TemplateBook.builtInLocales)
    func pushNamesTheAppAndCarriesTheCodeInBodyAndData(locale: String) throws {
        let m = renderer.render(channel: .push, code: Self.code, app: nil, locale: locale)
        #expect(m.locale == locale)
        let title = try #require(m.title)
        #expect(title.contains("AcmeApp"))
        #expect(m.text.contains("AcmeApp"))
        #expect(hasUnbrokenCode(m.text, Self.code))
        #expect(m.dataCode == Self.code)
        #expect(!title.contains("{") && !m.text.contains("{"))
    }

    @Test func theBuiltInTemplatesLintCleanWithHashAndDomain() {
        let report = TemplateLinter(settings: renderer.settings).lint()
        #expect(report.entries.count == 4 * TemplateBook.builtInLocales.count)
        for e in report.entries {
            #expect(e.findings.isEmpty, "\(e.key): \(e.findings)")
            #expect(!e.isOwn)
        }
        #expect(report.errorCount == 0 && report.warningCount == 0)
        #expect(report.lines.last == "28 templates (0 own): 0 errors, 0 warnings")
    }

    @Test func englishReadsAsTheProtocolSays() {
        let r = MessageRenderer(settings: MessageSettings(appName: "AcmeApp", appDomain: "acme.example"))
        #expect(
            r.render(channel: .sms, code: "123456", app: nil, locale: "en").text
                == "AcmeApp: your code is 123456. Don't share it.\n\n@acme.example #123456"
        )
        let e = r.render(channel: .email, code: "123456", app: nil, locale: "en", ttlSeconds: 600)
        #expect(e.subject == "123456 is your AcmeApp code")
        #expect(
            e.text
                == "Your AcmeApp code is 123456.\n\nIt expires in 10 min. If you did not ask for it, ignore this e-mail.\n"
        )
        let p = r.render(channel: .push, code: "123456", app: nil, locale: "en")
        #expect(p.title == "AcmeApp sign-in code")
        #expect(p.text == "Your AcmeApp code is 123456.")
    }
}

@Suite struct LocaleChoice {
    @Test func aTagTakesItsLanguageCaseInsensitivelyElseEnglish() {
        let book = TemplateBook.builtIn
        let cases: [(String, String)] = [
            ("pt-BR", "pt"), ("PT_br", "pt"), ("pt", "pt"), ("de-CH", "de"), ("ja-JP", "ja"), ("hi-IN", "hi"),
            ("FR", "fr"), ("es-419", "es"), ("zh", "en"), ("zh-Hant-TW", "en"), ("", "en"), ("en-GB", "en"),
        ]
        for (tag, expected) in cases {
            #expect(book.closestLocale(tag, channel: .sms) == expected, "\(tag)")
            #expect(MessageRenderer.closestLocale(tag) == expected, "\(tag)")
        }
    }

    @Test func anOwnTemplatesExactTagWinsOnItsChannelOnly() {
        let book = TemplateBook(own: [
            .sms: ["pt-BR": OwnTemplate(text: "{app}: seu codigo e {code}"), "zh-Hant": OwnTemplate(text: "{code}")]
        ])
        #expect(book.closestLocale("pt-BR", channel: .sms) == "pt-BR")
        #expect(book.closestLocale("pt_br", channel: .sms) == "pt-BR")
        #expect(book.closestLocale("pt-PT", channel: .sms) == "pt")
        #expect(book.closestLocale("pt", channel: .sms) == "pt")
        #expect(book.closestLocale("pt-BR", channel: .email) == "pt")
        #expect(book.closestLocale("zh-Hant-TW", channel: .sms) == "zh-Hant")
        #expect(book.closestLocale("zh-Hans", channel: .sms) == "en")
        #expect(book.locales(of: .sms) == TemplateBook.builtInLocales + ["pt-BR", "zh-Hant"])
        let r = MessageRenderer(settings: MessageSettings(appName: "AcmeApp"), templates: book)
        let m = r.render(channel: .sms, code: "123456", app: nil, locale: "PT-br")
        #expect(m.locale == "pt-BR")
        #expect(m.text == "AcmeApp: seu codigo e 123456")
    }

    @Test func ownTagsAreKeptInCanonicalCase() {
        #expect(TemplateBook.canonicalTag("PT_br") == "pt-BR")
        #expect(TemplateBook.canonicalTag("zh-hant-tw") == "zh-Hant-TW")
        #expect(TemplateBook.canonicalTag("EN") == "en")
        #expect(TemplateBook(own: [.sms: ["EN": OwnTemplate(text: "{code}")]]).isOwn(.sms, "en"))
    }
}

@Suite struct TemplateRendering {
    @Test func placeholdersAreSubstitutedInOnePass() {
        let r = MessageRenderer(settings: MessageSettings(appName: "{code}"))
        let m = r.render(channel: .sms, code: "123456", app: nil, locale: "en")
        #expect(m.text == "{code}: your code is 123456. Don't share it.")
        let own = MessageRenderer(
            settings: MessageSettings(appName: "A"),
            templates: TemplateBook(own: [.sms: ["en": OwnTemplate(text: "{code} {minutes} {app} {cod} {}")]])
        )
        #expect(
            own.render(channel: .sms, code: "42", app: "{minutes}", locale: "en").text == "42 10 {minutes} {cod} {}"
        )
    }

    @Test func theAppIsEscapedInHTMLAndSSMLOnly() throws {
        let r = MessageRenderer(settings: MessageSettings(appName: "A&B <i>"))
        let e = r.render(channel: .email, code: "123456", app: nil, locale: "en")
        #expect(e.subject == "123456 is your A&B <i> code")
        #expect(e.text.contains("A&B <i>"))
        let html = try #require(e.html)
        #expect(html.contains("A&amp;B &lt;i&gt;") && !html.contains("<i>"))
        let v = r.render(channel: .voice, code: "12", app: nil, locale: "en")
        #expect(v.text.contains("A&B <i>"))
        #expect(try #require(v.ssml).contains("A&amp;B &lt;i&gt;"))
    }

    @Test func minutesAreTheTTLRoundedUp() {
        let r = MessageRenderer(
            settings: MessageSettings(appName: "A"),
            templates: TemplateBook(own: [.sms: ["en": OwnTemplate(text: "{code} {minutes}")]])
        )
        for (ttl, minutes) in [(30, "1"), (60, "1"), (61, "2"), (600, "10"), (3600, "60")] {
            #expect(r.render(channel: .sms, code: "1", app: nil, locale: "en", ttlSeconds: ttl).text == "1 \(minutes)")
        }
    }

    @Test func anOwnTemplateTakesWhatItLeavesOutFromTheBuiltInOfItsLocale() throws {
        let book = TemplateBook(own: [
            .email: [
                "de": OwnTemplate(text: "Code: {code}"),
                "fr": OwnTemplate(subject: "{code} : code {app}"),
                "pt-BR": OwnTemplate(text: "Seu código {app}: {code}"),
            ],
            .push: ["es": OwnTemplate(text: "{code} para {app}")],
            .voice: ["en": OwnTemplate(text: "Code {code}. Again {code}.")],
        ])
        let r = MessageRenderer(settings: MessageSettings(appName: "AcmeApp"), templates: book)
        let de = r.render(channel: .email, code: "123456", app: nil, locale: "de")
        #expect(de.text == "Code: 123456")
        #expect(de.subject == "123456 ist Ihr Code für AcmeApp")
        #expect(de.html == nil)  // own text, no own html: no HTML part that would say something else
        let fr = r.render(channel: .email, code: "123456", app: nil, locale: "fr")
        #expect(fr.subject == "123456 : code AcmeApp")
        #expect(fr.text.hasPrefix("Votre code AcmeApp est 123456."))
        #expect(fr.html?.contains("123456") == true)
        let br = r.render(channel: .email, code: "123456", app: nil, locale: "pt-BR")
        #expect(br.locale == "pt-BR")
        #expect(br.subject == "123456 é o seu código AcmeApp")
        let push = r.render(channel: .push, code: "123456", app: nil, locale: "es")
        #expect(push.text == "123456 para AcmeApp")
        #expect(push.title == "Código de acceso de AcmeApp")
        let voice = r.render(channel: .voice, code: "12", app: nil, locale: "en")
        #expect(voice.text == "Code 1, 2. Again 1, 2.")
        #expect(
            voice.ssml == "<speak>Code <break time=\"500ms\"/><say-as interpret-as=\"digits\">12</say-as>"
                + "<break time=\"1s\"/>. Again <break time=\"500ms\"/><say-as interpret-as=\"digits\">12</say-as>"
                + "<break time=\"1s\"/>.</speak>"
        )
    }

    @Test func smsTrailerFollowsAnOwnBodyWithoutItsTrailingBlankLines() {
        let r = MessageRenderer(
            settings: MessageSettings(appName: "A", appDomain: "a.example", androidAppHash: "FA+9qCX9VSu"),
            templates: TemplateBook(own: [.sms: ["en": OwnTemplate(text: "Code {code}\n\n")]])
        )
        #expect(
            r.render(channel: .sms, code: "1", app: nil, locale: "en").text == "Code 1\n\nFA+9qCX9VSu\n@a.example #1"
        )
    }
}

@Suite struct SMSMeasureRules {
    @Test func gsm7CountsExtensionCharactersTwiceAndPacksSevenBits() {
        let plain = SMSMeasure(String(repeating: "a", count: 160))
        #expect(plain.encoding == .gsm7 && plain.units == 160 && plain.segments == 1 && plain.bytes == 140)
        let euro = SMSMeasure("€[]")
        #expect(euro.encoding == .gsm7 && euro.units == 6 && euro.bytes == 6)
        #expect(SMSMeasure(String(repeating: "a", count: 159) + "€").segments == 2)
        #expect(SMSMeasure(String(repeating: "a", count: 161)).segments == 2)
        #expect(SMSMeasure(String(repeating: "a", count: 306)).segments == 2)
        #expect(SMSMeasure(String(repeating: "a", count: 307)).segments == 3)
        // An escape pair is never split: 152 plain then a 2-septet character starts the second part.
        #expect(SMSMeasure(String(repeating: "a", count: 152) + "€" + String(repeating: "a", count: 152)).segments == 3)
    }

    @Test func anEmojiOrDevanagariMakesTheWholeTextUCS2() {
        let emoji = SMSMeasure("Your code 🔐 123456")
        #expect(emoji.encoding == .ucs2)
        #expect(emoji.units == 19)  // the emoji is a surrogate pair
        #expect(emoji.bytes == 38)
        #expect(emoji.firstNonGSM == "🔐")
        let hindi = SMSMeasure("कोड 123456")
        #expect(hindi.encoding == .ucs2 && hindi.units == 10)
        #expect(SMSMeasure(String(repeating: "क", count: 70)).segments == 1)
        #expect(SMSMeasure(String(repeating: "क", count: 71)).segments == 2)
        #expect(SMSMeasure(String(repeating: "क", count: 134)).segments == 2)
        #expect(SMSMeasure(String(repeating: "क", count: 135)).segments == 3)
        #expect(SMSMeasure("código").encoding == .ucs2)
        #expect(SMSMeasure("é è à ü ñ Ñ ¿ ¡").encoding == .gsm7)
    }
}

@Suite struct TemplateLinterRules {
    static let settings = MessageSettings(appName: "AcmeApp", appDomain: "acme.example", androidAppHash: "FA+9qCX9VSu")

    func lint(
        _ channel: DeliveryChannel,
        _ template: OwnTemplate,
        locale: String = "en",
        settings: MessageSettings = settings
    ) -> TemplateLinter.Entry {
        TemplateLinter(settings: settings, templates: TemplateBook(own: [channel: [locale: template]]))
            .lint(channel, locale: locale)
    }

    @Test func aMissingCodeIsAnErrorOnEveryChannel() {
        #expect(
            lint(.sms, OwnTemplate(text: "Welcome to {app}")).errors.map(\.description) == ["error: text: no {code}"]
        )
        #expect(lint(.push, OwnTemplate(text: "Open {app}")).errors.map(\.field) == ["text"])
        #expect(lint(.voice, OwnTemplate(text: "Hello")).errors.map(\.field) == ["text"])
        let email = lint(.email, OwnTemplate(text: "Code: {code}", subject: "Your {app} code"))
        #expect(email.errors.map(\.field) == ["subject"])
        let html = lint(.email, OwnTemplate(text: "Code: {code}", html: "<p>{app}</p>"))
        #expect(html.errors.map(\.field) == ["html"])
        #expect(lint(.sms, OwnTemplate(text: "  ")).errors.map(\.message).contains("is empty"))
    }

    @Test func anUnknownPlaceholderIsAnError() {
        let e = lint(.sms, OwnTemplate(text: "{app}: {cod} is your code {code}"))
        #expect(e.errors.map(\.message) == ["unknown placeholder {cod} (use {app}, {code}, {minutes})"])
        #expect(e.line.hasSuffix("1 error"))
    }

    @Test func anOriginBoundLineThatIsNotLastIsAnError() {
        let e = lint(.sms, OwnTemplate(text: "Code {code}\n@acme.example #{code}"))
        #expect(e.errors.count == 1)
        #expect(e.errors.first?.message.contains("`@acme.example #{code}` is not the last line") == true)
        #expect(e.errors.first?.message.contains("otpd adds") == true)
    }

    @Test func aMalformedOriginBoundLineIsAnError() {
        let plain = MessageSettings(appName: "AcmeApp")
        for bad in ["@acme.example {code}", "@acme.example #{code}x", "@acme.example code {code}", "@ #{code}"] {
            let e = lint(.sms, OwnTemplate(text: "{app} code {code}\n\n\(bad)"), settings: plain)
            #expect(e.errors.count == 1, "\(bad)")
            #expect(e.errors.first?.message.contains("does not read `@domain #{code}`") == true, "\(bad)")
        }
        let good = lint(
            .sms,
            OwnTemplate(text: "{app} code {code}\n\n@acme.example #{code} @embed.example"),
            settings: plain
        )
        #expect(good.findings.isEmpty)
        // A configured app_domain that is not a host makes every SMS fail.
        let url = MessageSettings(appName: "AcmeApp", appDomain: "https://acme.example")
        let report = TemplateLinter(settings: url).lint()
        #expect(report.entries.filter { $0.channel == .sms }.allSatisfy { $0.errors.count == 1 })
    }

    @Test func twoSegmentsAreAWarning() {
        let long = "{app}: " + String(repeating: "x", count: 150) + " {code}"
        let e = lint(.sms, OwnTemplate(text: long), settings: MessageSettings(appName: "AcmeApp"))
        #expect(e.errors.isEmpty)
        #expect(e.sms?.segments == 2)
        #expect(
            e.warnings.map(\.message) == [
                "2 SMS segments with a 10-digit code: 170 GSM-7 septets, one segment holds 160"
            ]
        )
        #expect(e.line == "sms/en (own)  GSM-7  2 segments  149 bytes  1 warning")
    }

    @Test func moreThan140BytesWithAnAppHashIsAnError() {
        // UCS-2: 79 units of body and the 39 of the trailer (blank line, hash, origin line) are 236 bytes.
        let text = "{app} " + String(repeating: "क", count: 60) + " {code}"
        let e = lint(.sms, OwnTemplate(text: text), locale: "hi")
        #expect(e.sms?.encoding == .ucs2)
        #expect(e.sms?.bytes == 236)
        #expect(
            e.errors.map(\.message) == [
                "\(e.sms?.bytes ?? 0) bytes with a 10-digit code; SMS Retriever ignores messages over 140 bytes "
                    + "(android_app_hash is set)"
            ]
        )
        #expect(e.warnings.first?.message.hasSuffix("one segment holds 70 (UCS-2 because of 'क')") == true)
        // Without the hash the same text only warns.
        let noHash = lint(.sms, OwnTemplate(text: text), locale: "hi", settings: MessageSettings(appName: "AcmeApp"))
        #expect(noHash.errors.isEmpty && noHash.warnings.count == 1)
    }

    @Test func anEmojiMakesATemplateUCS2() {
        let e = lint(.sms, OwnTemplate(text: "🔐 {app} {code}"), settings: MessageSettings(appName: "AcmeApp"))
        #expect(e.sms?.encoding == .ucs2)
        #expect(e.line == "sms/en (own)  UCS-2  1 segment  42 bytes  ok")
    }

    @Test func warningsForSubjectOrderAndASingleReading() {
        #expect(
            lint(.email, OwnTemplate(subject: "Your code: {code}")).warnings.map(\.field) == ["subject"]
        )
        #expect(
            lint(.voice, OwnTemplate(text: "Your code is {code}.")).warnings.map(\.message) == [
                "reads the code once; read it twice"
            ]
        )
    }

    @Test func theReportListsEveryTemplateThenASummary() {
        let book = TemplateBook(own: [.sms: ["pt-BR": OwnTemplate(text: "{app}: {cod}")]])
        let report = TemplateLinter(settings: Self.settings, templates: book).lint()
        #expect(report.entries.count == 29)
        #expect(report.errorCount == 2)
        let lines = report.lines
        #expect(lines.first?.hasPrefix("sms/en  GSM-7  1 segment  ") == true)
        #expect(lines.first?.hasSuffix(" bytes  ok") == true)
        let i = lines.firstIndex { $0.hasPrefix("sms/pt-BR (own)") } ?? 0
        #expect(lines[i].hasSuffix("2 errors"))
        #expect(lines[i + 1] == "    error: text: unknown placeholder {cod} (use {app}, {code}, {minutes})")
        #expect(lines[i + 2] == "    error: text: no {code}")
        #expect(lines.contains("email/en  ok"))
        #expect(lines.last == "29 templates (1 own): 2 errors, 0 warnings")
        #expect(!lines.joined().contains(TemplateLinter.sampleCode))
    }
}

@Suite struct SentLocaleRules {
    @Test func theHandOffRecordsTheTemplatesLocaleInSent() throws {
        let g = try issuedSession()
        let d = try g.when(
            .recordHandOff(token: 1, messageId: "m1", provider: "log", providerRef: nil, locale: "pt-BR"),
            at: 100
        )
        #expect(
            d.events == [
                .sent(
                    .init(
                        step: 1,
                        channel: .sms,
                        messageId: "m1",
                        provider: "log",
                        providerRef: nil,
                        token: 1,
                        locale: "pt-BR"
                    )
                )
            ]
        )
        #expect(g.and(d.events, at: 100).state.status == .sent)
    }
}
