import Foundation
import NIOSSL
import OTPTesting
import PostgresTesting
import SMTP
import Testing

/// The client against a real server, aiosmtpd, on loopback: STARTTLS (required) and AUTH (required) by default.
@Suite(.serialized, .heavy) struct LiveServerTests {
    private let user = "otpd"
    private let password = "s3cret-pass"
    private let timeouts = SMTPTimeouts(connect: .seconds(10), greeting: .seconds(15), command: .seconds(15))

    private func configuration(
        _ server: MailServer,
        security: SMTPSecurity = .starttls,
        password: String? = nil,
        trust certificates: TLSFiles?,
        serverName: String? = nil,
        auth: Bool = true
    ) throws -> SMTPConfiguration {
        SMTPConfiguration(
            host: "127.0.0.1",
            port: server.port,
            security: security,
            username: auth ? user : nil,
            password: auth ? (password ?? self.password) : nil,
            helo: "client.test",
            trustRoots: try certificates.map { try NIOSSLCertificate.fromPEMFile($0.ca) },
            timeouts: timeouts,
            serverName: serverName
        )
    }

    private func liveMail() -> SMTPMail {
        var mail = sampleMail(
            subject: "123456 est votre code AcmeApp — à bientôt",
            text: "Votre code : 123456\n.\n.foo\n" + String(repeating: "é", count: 600) + "\n",
            html: "<p>Votre code&nbsp;: <b>123456</b></p>\n.\n"
        )
        mail.from = SMTPAddress(displayName: "AcmeApp", address: "no-reply@acme.example")
        return mail
    }

    @Test func starttlsAndAuthPlainDeliverBothPartsTheMessageIdAndTheEnvelope() async throws {
        let certificates = try await TLSFiles.make()
        defer { certificates.remove() }
        let server = try await MailServer.start(certificates: certificates)
        defer { server.stop() }
        let mail = liveMail()
        let outcome = await SMTPClient(configuration: try configuration(server, trust: certificates)).send(mail)
        #expect(outcome == .accepted("TESTQ1"))

        let messages = try server.messages()
        try #require(messages.count == 1)
        let m = messages[0]
        #expect(m["mail_from"] as? String == "no-reply@acme.example")
        #expect(m["rcpt_tos"] as? [String] == ["user@example.com"])
        let headers = m["headers"] as? [String: String] ?? [:]
        #expect(headers["Message-ID"] == "<m_0123456789abcdef01234567@acme.example>")
        #expect(headers["Subject"] == mail.subject)
        #expect(headers["From"] == "AcmeApp <no-reply@acme.example>")
        #expect(headers["To"] == "user@example.com")
        #expect(headers["Date"] == "Tue, 01 Jul 2025 10:00:00 +0000")
        #expect(headers["Auto-Submitted"] == "auto-generated")
        #expect(m["content_type"] as? String == "multipart/alternative")
        #expect((m["defects"] as? [String])?.isEmpty == true)
        let parts = m["parts"] as? [[String: Any]] ?? []
        try #require(parts.count == 2)
        let normalise = { (s: Any?) in (s as? String ?? "").replacingOccurrences(of: "\r\n", with: "\n") }
        #expect(parts[0]["content_type"] as? String == "text/plain")
        #expect(parts[0]["charset"] as? String == "utf-8")
        #expect(parts[0]["transfer_encoding"] as? String == "quoted-printable")
        #expect(normalise(parts[0]["content"]) == mail.text)
        #expect(parts[1]["content_type"] as? String == "text/html")
        #expect(normalise(parts[1]["content"]) == mail.html)
        // The server unstuffed exactly what was rendered.
        let raw = m["raw"] as? String ?? ""
        #expect(raw.contains("\r\n.\r\n.foo\r\n"))
        #expect(raw.components(separatedBy: "\r\n").allSatisfy { $0.utf8.count <= 998 })

        #expect(server.commands() == ["EHLO", "STARTTLS", "EHLO", "AUTH", "MAIL", "RCPT", "DATA", "QUIT"])
        #expect(server.authAttempts() == ["PLAIN ok"])
    }

    @Test func loginIsUsedWhenTheServerOffersNoPlain() async throws {
        let certificates = try await TLSFiles.make()
        defer { certificates.remove() }
        let server = try await MailServer.start(["--exclude-mechanism", "PLAIN"], certificates: certificates)
        defer { server.stop() }
        let outcome = await SMTPClient(configuration: try configuration(server, trust: certificates)).send(liveMail())
        #expect(outcome == .accepted("TESTQ1"))
        #expect(server.authAttempts() == ["LOGIN ok"])
        #expect(try server.messages().count == 1)
    }

    @Test func aWrongPasswordIsPermanentAndNothingIsDelivered() async throws {
        let certificates = try await TLSFiles.make()
        defer { certificates.remove() }
        let server = try await MailServer.start(certificates: certificates)
        defer { server.stop() }
        let config = try configuration(server, password: "wrong", trust: certificates)
        let outcome = await SMTPClient(configuration: config).send(liveMail())
        #expect(outcome == .permanent("authentication failed: SMTP 535 5.7.8 at AUTH"))
        #expect(server.authAttempts() == ["PLAIN refused"])
        #expect(!server.commands().contains("MAIL"))
        #expect(try server.messages().isEmpty)
    }

    @Test func anUntrustedCertificateIsTransientAndNothingFollowsStarttls() async throws {
        let certificates = try await TLSFiles.make()
        defer { certificates.remove() }
        let server = try await MailServer.start(certificates: certificates)
        defer { server.stop() }
        let outcome = await SMTPClient(configuration: try configuration(server, trust: nil)).send(liveMail())
        #expect(outcome == .transient("TLS handshake failed: certificate not trusted"))
        #expect(server.commands() == ["EHLO", "STARTTLS"])
        #expect(server.authAttempts().isEmpty)
        #expect(try server.messages().isEmpty)
    }

    @Test func theCertificateMustNameTheServerOrItsAddress() async throws {
        // Only DNS:localhost in the certificate: connecting to 127.0.0.1 needs the name.
        let certificates = try await TLSFiles.make(ipAddress: false)
        defer { certificates.remove() }
        let server = try await MailServer.start(certificates: certificates)
        defer { server.stop() }
        let mismatch = SMTPOutcome.transient("TLS handshake failed: certificate does not match the server name")
        let wrong = try configuration(server, trust: certificates, serverName: "mx.other.example")
        #expect(await SMTPClient(configuration: wrong).send(liveMail()) == mismatch)
        let byAddress = try configuration(server, trust: certificates)
        #expect(await SMTPClient(configuration: byAddress).send(liveMail()) == mismatch)
        #expect(try server.messages().isEmpty)
        #expect(!server.commands().contains("AUTH"))
        // The name in the certificate, sent as SNI, works.
        let right = try configuration(server, trust: certificates, serverName: "localhost")
        #expect(await SMTPClient(configuration: right).send(liveMail()) == .accepted("TESTQ1"))
    }

    @Test func aServerWithoutStarttlsGetsNothingButEhloAndQuit() async throws {
        let server = try await MailServer.start(["--no-starttls"], certificates: nil)
        defer { server.stop() }
        let outcome = await SMTPClient(configuration: try configuration(server, trust: nil)).send(liveMail())
        #expect(outcome == .permanent("server does not offer STARTTLS; nothing sent"))
        #expect(server.commands() == ["EHLO", "QUIT"])
        #expect(try server.messages().isEmpty)
    }

    @Test func plainTextWithoutAuthWhenConfiguredSoThenTheClosedPortIsRefused() async throws {
        let server = try await MailServer.start(["--no-starttls"], certificates: nil)
        let config = try configuration(server, security: .none, trust: nil, auth: false)
        let outcome = await SMTPClient(configuration: config).send(liveMail())
        #expect(outcome == .accepted("TESTQ1"))
        #expect(server.commands() == ["EHLO", "MAIL", "RCPT", "DATA", "QUIT"])
        #expect(try server.messages().count == 1)
        server.stop()
        #expect(await SMTPClient(configuration: config).send(liveMail()) == .transient("connection refused"))
    }

    @Test func implicitTLSDelivers() async throws {
        let certificates = try await TLSFiles.make()
        defer { certificates.remove() }
        let server = try await MailServer.start(["--implicit"], certificates: certificates)
        defer { server.stop() }
        let config = try configuration(server, security: .implicit, trust: certificates)
        #expect(await SMTPClient(configuration: config).send(liveMail()) == .accepted("TESTQ1"))
        #expect(server.commands() == ["EHLO", "AUTH", "MAIL", "RCPT", "DATA", "QUIT"])
        let untrusted = try configuration(server, security: .implicit, trust: nil)
        #expect(
            await SMTPClient(configuration: untrusted).send(liveMail())
                == .transient("TLS handshake failed: certificate not trusted")
        )
        #expect(try server.messages().count == 1)
    }

    @Test func badInputIsRefusedBeforeConnecting() async throws {
        // Port 9 on loopback: nothing is ever reached, because nothing connects.
        let config = SMTPConfiguration(host: "127.0.0.1", port: 9, security: .none, helo: "client.test")
        var mail = liveMail()
        for bad in ["user@example.com\r\nRCPT TO:<x@y.example>", "<user@example.com>", "user @example.com", "nobody"] {
            mail.to = bad
            #expect(
                await SMTPClient(configuration: config).send(mail) == .permanent("bad recipient address; nothing sent")
            )
        }
        mail = liveMail()
        mail.from.address = "no-reply@acme.example>"
        #expect(await SMTPClient(configuration: config).send(mail) == .permanent("bad sender address; nothing sent"))
        var withAuth = config
        withAuth.username = user
        withAuth.password = password
        #expect(
            await SMTPClient(configuration: withAuth).send(liveMail())
                == .permanent("AUTH configured without TLS; nothing sent")
        )
    }
}
