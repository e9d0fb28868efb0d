import Foundation
import Logging
import OTPDomain
import OTPServer
import OTPService
import OTPTesting
import PostgresTesting
import Testing

/// Own templates from the configuration, the linter at start and as `otpctl lint`, and `otpctl app-hash`.
@Suite struct TemplateConfigTests {
    /// The configuration error `text` raises, or nil when it parses.
    func parseError(_ text: String) -> ConfigurationError? {
        do {
            _ = try Configuration.parse(text, file: "t.toml")
            return nil
        } catch { return error }
    }

    @Test func ownTemplatesOverrideTheirPairAndFallBackForWhatTheyLeaveOut() throws {
        let c = try Configuration.parse(
            """
            app_name = "AcmeApp"
            [templates.sms.pt-BR]
            text = "{app}: seu codigo e {code}"
            [templates.email.de]
            text = "Code: {code}"
            [templates.push.en]
            title = "{app}"
            """
        )
        #expect(c.templates[.sms]?["pt-BR"] == OwnTemplate(text: "{app}: seu codigo e {code}"))
        let r = MessageRenderer(settings: c.messageSettings, templates: c.templateBook)
        let sms = r.render(channel: .sms, code: "123456", app: nil, locale: "pt-BR")
        #expect(sms.locale == "pt-BR")
        #expect(sms.text == "AcmeApp: seu codigo e 123456")
        #expect(r.render(channel: .sms, code: "1", app: nil, locale: "pt-PT").locale == "pt")
        let email = r.render(channel: .email, code: "123456", app: nil, locale: "de-AT")
        #expect(email.text == "Code: 123456")
        #expect(email.subject == "123456 ist Ihr Code für AcmeApp")
        #expect(email.html == nil)
        let push = r.render(channel: .push, code: "123456", app: nil, locale: "en")
        #expect(push.title == "AcmeApp")
        #expect(push.text == "Your AcmeApp code is 123456.")
    }

    @Test func badTemplateTablesAreErrorsNamingTheKey() {
        let cases: [(String, String, String)] = [
            ("[templates.sms.fr]\ntxt = \"{code}\"", "templates.sms.fr.txt", "unknown key (sms takes text)"),
            ("[templates.sms.fr]\nsubject = \"{code}\"", "templates.sms.fr.subject", "unknown key (sms takes text)"),
            (
                "[templates.push.fr]\nhtml = \"{code}\"", "templates.push.fr.html",
                "unknown key (push takes title, text)"
            ),
            (
                "[templates.fax.fr]\ntext = \"{code}\"", "templates.fax",
                "unknown channel 'fax' (sms, email, voice, push)"
            ),
            ("[templates.sms.fr]\ntext = 5", "templates.sms.fr.text", "must be a string"),
            ("[templates.sms.fr]", "templates.sms.fr", "give at least one of text"),
            ("[templates.sms]\nfr = \"x\"", "templates.sms.fr", "must be a table"),
            ("templates = 1", "templates", "must be a table of [templates.CHANNEL.LOCALE] tables"),
            (
                "[templates.sms.\"fr!\"]\ntext = \"{code}\"", "templates.sms.fr!",
                "'fr!' is not a BCP 47 locale tag such as pt-BR"
            ),
            (
                "[templates.sms.pt-BR]\ntext = \"{code}\"\n[templates.sms.pt_br]\ntext = \"{code}\"",
                "templates.sms.pt_br", "the same locale as templates.sms.pt-BR"
            ),
            (
                "[templates.email.en]\nsubject = \"{code}\\nBcc: x@example.com\"", "templates.email.en.subject",
                "must be one line without control characters"
            ),
        ]
        for (toml, key, message) in cases {
            let e = parseError(toml)
            #expect(e?.key == key, "\(toml)")
            #expect(e?.message == message, "\(toml)")
            #expect(e?.file == "t.toml")
        }
    }

    @Test func aBrokenTemplateStopsTheStartNamingChannelLocaleAndReason() async throws {
        let c = try Configuration.parse(
            """
            app_name = "AcmeApp"
            [templates.sms.fr]
            text = "{app}: bienvenue"
            """,
            file: "otpd.toml"
        )
        let error = #expect(throws: ConfigurationError.self) { try c.checkTemplates() }
        #expect(error?.key == "templates.sms.fr")
        #expect(error?.description == "otpd.toml: templates.sms.fr: text: no {code}")
        // Application's start stops on it before it opens any database.
        var unreachable = c
        unreachable.databaseURL = "postgresql://nobody@127.0.0.1:1/none"
        let start = await #expect(throws: ConfigurationError.self) {
            _ = try await Application(configuration: unreachable, logger: Logger(label: "t")).start()
        }
        #expect(start?.key == "templates.sms.fr")
    }

    @Test func aBuiltInTemplateThatBreaksSaysHowToFixIt() throws {
        var c = Configuration()
        c.appName = String(repeating: "A", count: 40)
        c.appDomain = "acme.example"
        c.androidAppHash = "FA+9qCX9VSu"
        do {
            _ = try c.checkTemplates()
            Issue.record("a 40-character app name overflows the Hindi SMS's 140 bytes")
        } catch {
            #expect(error.key == "templates.sms.hi")
            #expect(error.message.contains("SMS Retriever ignores messages over 140 bytes"))
            #expect(error.message.contains("built-in template: give [templates.sms.hi] of your own"))
            #expect(error.message.contains("1 more template with errors (otpctl lint)"))
        }
    }

    @Test func warningsDoNotStopTheStart() throws {
        let c = try Configuration.parse(
            """
            app_name = "AcmeApp"
            [templates.sms.de]
            text = "{app}: Ihr Code lautet {code}. \(String(repeating: "Bitte geben Sie ihn nicht weiter. ", count: 5))"
            """
        )
        let warnings = try c.checkTemplates()
        #expect(warnings.count == 1)
        #expect(warnings.first?.hasPrefix("templates.sms.de: text: 2 SMS segments with a 10-digit code") == true)
    }

    @Test func lintReportsEveryTemplateAndErrorsMakeItFail() throws {
        let clean = try Configuration.parse("app_name = \"AcmeApp\"\napp_domain = \"acme.example\"").lintTemplates()
        #expect(clean.errorCount == 0)
        #expect(clean.lines.first == "sms/en  GSM-7  1 segment  67 bytes  ok")
        let broken = try Configuration.parse(
            "app_name = \"AcmeApp\"\n[templates.email.en]\nsubject = \"Your {app} code\"\n"
        ).lintTemplates()
        #expect(broken.errorCount == 1)
        #expect(broken.lines.contains("email/en (own)  1 error"))
        #expect(broken.lines.contains("    error: subject: no {code}"))
    }

    @Test func otpctlLintExitsNonZeroOnAnError() async throws {
        guard let otpctl = ExecutableTests.built("otpctl") else { return }
        let dir = NSTemporaryDirectory() + "otpd-lint-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let good = dir + "/good.toml"
        try "app_name = \"AcmeApp\"\napp_domain = \"acme.example\"\nandroid_app_hash = \"FA+9qCX9VSu\"\n"
            .write(toFile: good, atomically: true, encoding: .utf8)
        let ok = try await run([otpctl, "lint", "--config", good])
        #expect(ok.status == 0, "\(ok.stderr)")
        #expect(ok.stdout.contains("sms/ja  UCS-2  1 segment  128 bytes  ok\n"))
        #expect(ok.stdout.hasSuffix("28 templates (0 own): 0 errors, 0 warnings\n"))
        let bad = dir + "/bad.toml"
        try "[templates.sms.en]\ntext = \"{app}: {cod}\"\n".write(toFile: bad, atomically: true, encoding: .utf8)
        let failed = try await run([otpctl, "lint", "--config", bad])
        #expect(failed.status == 1)
        #expect(failed.stdout.contains("    error: text: unknown placeholder {cod}"))
        let unreadable = try await run([otpctl, "lint", "--config", dir + "/missing.toml"])
        #expect(unreadable.status == 2)
        #expect(unreadable.stderr.contains("missing.toml: cannot read the file"))
    }
}

/// `otpctl app-hash`: Google's pipeline, recomputed here with openssl and the shell.
@Suite struct AndroidAppHashTests {
    /// A self-signed certificate made by openssl, as PEM and DER files, and the hash Google's shell pipeline
    /// computes for it.
    struct Certificate {
        var directory: String
        var pem: String { directory + "/cert.pem" }
        var der: String { directory + "/cert.der" }
        var reference: String
    }

    static func make(package: String) async throws -> Certificate {
        let dir = NSTemporaryDirectory() + "otpd-apphash-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let c = Certificate(directory: dir, reference: "")
        let made = try await run([
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=otpd app-hash test",
            "-keyout", dir + "/key.pem", "-out", c.pem,
        ])
        guard made.status == 0 else { throw HarnessError("openssl req failed: \(made.stderr)") }
        let der = try await run(["openssl", "x509", "-in", c.pem, "-outform", "der", "-out", c.der])
        guard der.status == 0 else { throw HarnessError("openssl x509 failed: \(der.stderr)") }
        // developers.google.com/identity/sms-retriever/verify#computing_your_apps_hash_string, with the
        // certificate from openssl instead of keytool.
        let pipeline = """
            openssl x509 -in "$CERT" -outform der | xxd -p | tr -d "[:space:]" | echo -n "$PACKAGE" `cat` \
            | sha256sum | tr -d "[:space:]-" | xxd -r -p | base64 | cut -c1-11
            """
        let ref = try await run(["bash", "-c", pipeline], environment: ["CERT": c.pem, "PACKAGE": package])
        guard ref.status == 0 else { throw HarnessError("the reference pipeline failed: \(ref.stderr)") }
        var out = c
        out.reference = ref.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        return out
    }

    @Test func theHashMatchesGooglesPipelineForPEMAndDER() async throws {
        let package = "com.example.myapp"
        let cert = try await Self.make(package: package)
        defer { try? FileManager.default.removeItem(atPath: cert.directory) }
        #expect(cert.reference.count == 11)
        #expect(try AndroidAppHash.compute(package: package, certificateFile: cert.pem) == cert.reference)
        #expect(try AndroidAppHash.compute(package: package, certificateFile: cert.der) == cert.reference)
        // Another package, another hash.
        #expect(try AndroidAppHash.compute(package: "com.example.other", certificateFile: cert.der) != cert.reference)

        guard let otpctl = ExecutableTests.built("otpctl") else { return }
        let r = try await run([otpctl, "app-hash", "--package", package, "--keystore-cert", cert.pem])
        #expect(r.status == 0, "\(r.stderr)")
        #expect(r.stdout == cert.reference + "\n")
    }

    @Test func aFileThatIsNoCertificateIsAnErrorNamingIt() throws {
        let dir = NSTemporaryDirectory() + "otpd-apphash-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let junk = dir + "/keystore.jks"
        try Data([0xFE, 0xED, 0xFE, 0xED, 0, 0, 0, 2]).write(to: URL(fileURLWithPath: junk))
        let badPEM = dir + "/bad.pem"
        try "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n".write(
            toFile: badPEM,
            atomically: true,
            encoding: .utf8
        )
        for (file, message) in [
            (junk, "neither a PEM (-----BEGIN CERTIFICATE-----) nor a DER certificate"),
            (badPEM, "the PEM certificate is not valid base64 DER"),
            (dir + "/missing.pem", "cannot read the file"),
        ] {
            let error = #expect(throws: AndroidAppHash.Failure.self) {
                try AndroidAppHash.compute(package: "com.example.app", certificateFile: file)
            }
            #expect(error?.description.hasPrefix(file + ": ") == true)
            #expect(error?.description.contains(message) == true, "\(String(describing: error))")
        }
        #expect(throws: AndroidAppHash.Failure.self) {
            try AndroidAppHash.compute(package: "not a package", certificateFile: junk)
        }
    }
}

/// The template's locale in the `sent` event and in HISTORY, and the linter's warnings at start, on a real server.
@Suite(.serialized, .heavy) struct TemplateServerTests {
    @Test func historyShowsTheLocaleOfTheTemplateEachMessageWasRenderedFrom() async throws {
        let long = String(repeating: "Bitte geben Sie ihn nicht weiter. ", count: 5)
        let server = try await TestServer.start(
            label: "tmpl",
            config: """
                app_name = "AcmeApp"
                [templates.sms.pt-BR]
                text = "{app}: seu codigo e {code}"
                [templates.sms.de]
                text = "{app}: Ihr Code lautet {code}. \(long)"
                """
        )
        defer { Task { await server.stop() } }
        #expect(server.app.templateWarnings.count == 1)
        #expect(server.app.templateWarnings.first?.hasPrefix("templates.sms.de: text: 2 SMS segments") == true)
        let cases = [
            ("b1", "pt-BR", "pt-BR"), ("b2", "pt-PT", "pt"), ("b3", "zh-Hant-TW", "en"), ("b4", "pt-br", "pt-BR"),
        ]
        for (i, (session, tag, _)) in cases.enumerated() {
            let phone = "+1555123456\(i)"
            let issued = pairs(try await redisCLI(server.port, ["ISSUE", session, "sms:\(phone)", "LOCALE", tag]))
            #expect(issued["status"] == "pending", "\(session): \(issued)")
        }
        for (session, _, used) in cases {
            try await server.waitUntilSent(session)
            let history = try await redisCLI(server.port, ["HISTORY", session])
            let events = stride(from: 0, to: history.count, by: 10).map {
                (type: history[$0 + 3], data: history[$0 + 7])
            }
            let sent = try #require(events.first { $0.type == "sent" })
            #expect(sent.data.contains("\"locale\":\"\(used)\""), "\(session): \(sent.data)")
            // `issued` keeps the tag as asked.
            #expect(events.first?.data.contains("\"locale\":") == true)
        }
        #expect(server.log.all.contains { $0.hasPrefix("  | AcmeApp: seu codigo e ") })
    }
}
