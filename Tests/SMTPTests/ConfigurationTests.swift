import Testing

@testable import SMTP

/// The configuration's defaults, its redacted description, and what the client refuses before connecting.
@Suite struct ConfigurationTests {
    @Test func eachSecurityHasItsUsualPortAndTheTimeoutsAreBounded() {
        #expect(SMTPConfiguration(host: "mx.example").port == 587)
        #expect(SMTPConfiguration(host: "mx.example", security: .implicit).port == 465)
        #expect(SMTPConfiguration(host: "mx.example", security: .none).port == 25)
        #expect(SMTPConfiguration(host: "mx.example", port: 2525).port == 2525)
        let t = SMTPTimeouts()
        #expect(
            [t.connect, t.greeting, t.command, t.dataEnd, t.quit] == [
                .seconds(10), .seconds(30), .seconds(30), .seconds(60), .seconds(2),
            ]
        )
        #expect(SMTPSyntax.isValidHelo(SMTPConfiguration.defaultHelo))
    }

    @Test func thePasswordNeverShowsInADescriptionOrADump() {
        let c = SMTPConfiguration(host: "mx.example", username: "otpd", password: "s3cret-pass")
        var dumped = ""
        dump(c, to: &dumped)
        for text in ["\(c)", String(reflecting: c), dumped] {
            #expect(!text.contains("s3cret-pass"))
            #expect(text.contains("mx.example"))
        }
        let credentials = SMTPStateMachine.Credentials(username: "otpd", password: "s3cret-pass")
        var dumpedCredentials = ""
        dump(credentials, to: &dumpedCredentials)
        #expect(!"\(credentials)".contains("s3cret-pass") && !dumpedCredentials.contains("s3cret-pass"))
    }

    @Test func whatCannotBeSentIsRefusedBeforeConnecting() {
        let mail = sampleMail()
        func refusal(_ c: SMTPConfiguration, _ m: SMTPMail = sampleMail()) -> SMTPOutcome? {
            SMTPClient(configuration: c).refusal(for: m)
        }
        let base = SMTPConfiguration(host: "mx.example", helo: "client.example")
        #expect(refusal(base) == nil)
        var c = base
        c.username = "otpd"
        #expect(refusal(c) == .permanent("AUTH user without a password; nothing sent"))
        c.password = "a\u{0}b"
        #expect(refusal(c) == .permanent("AUTH user or password contains NUL; nothing sent"))
        c = base
        c.helo = "two words"
        #expect(refusal(c) == .permanent("bad EHLO name; nothing sent"))
        c = base
        c.port = 0
        #expect(refusal(c) == .permanent("bad port; nothing sent"))
        c = base
        c.serverName = "bad name"
        #expect(refusal(c) == .permanent("bad server name for TLS; nothing sent"))
        c.serverName = "192.0.2.1"
        #expect(refusal(c) == nil)
        var m = mail
        m.to = "user@exa mple.com"
        #expect(refusal(base, m) == .permanent("bad recipient address; nothing sent"))
        m = mail
        m.to = "üser@example.com"
        #expect(refusal(base, m) == .permanent("bad recipient address; nothing sent"))
    }

    @Test func extraHeaderNamesMustBeShortAndPrintable() {
        var mail = sampleMail()
        mail.extraHeaders = [(String(repeating: "X", count: 77), "v"), ("X-Ok", "v"), ("", "v"), ("Ünicode", "v")]
        let names = headerFields(MIMEMessage.render(mail, boundary: "=_b")).map(\.0)
        #expect(names.filter { $0.hasPrefix("X") || $0.isEmpty || $0.hasPrefix("Ü") } == ["X-Ok"])
    }
}
