import Foundation
import NIOHTTP1
import OTPDomain
import OTPService
import OTPTesting
import PostgresTesting
import Testing

/// E-mail end to end: otpd's SMTP driver against a real mail server (aiosmtpd) that requires STARTTLS and AUTH,
/// then the mail's tracking image fetched from the HTTP side.
@Suite(.serialized, .heavy) struct EmailTests {
    @Test func aCodeGoesOutOverSTARTTLSAndItsOpenImageRecordsOpened() async throws {
        let files = try await TLSFiles.make()
        defer { files.remove() }
        let mail = try await MailServer.start(certificates: files)
        defer { mail.stop() }
        let server = try await TestServer.start(
            label: "email_smtp",
            config: """
                app_name = "AcmeApp"

                [channel.email]
                driver = "smtp"
                host = "127.0.0.1"
                port = \(mail.port)
                from = "AcmeApp <no-reply@acme.example>"
                username = "otpd"
                password = "s3cret-pass"
                ca_file = "\(files.ca)"
                helo = "otpd.test"

                [[policy]]
                name = "default"
                steps = [{ channel = "email", timeout = "60s", until = "opened" }]
                """,
            http: true
        )
        defer { Task { await server.stop() } }
        let port = try #require(server.httpPort)
        _ = try await redisCLI(server.port, ["ISSUE", "em1", "email:ann@example.com", "LOCALE", "fr-CA"])
        try await server.waitUntilSent("em1")
        let sent = try #require(try await events(server, "em1").first { $0.type == "sent" })
        #expect(sent.data["provider"] as? String == "smtp")
        #expect((sent.data["provider_ref"] as? String)?.hasPrefix("TESTQ") == true)  // aiosmtpd's queue id
        #expect(sent.data["locale"] as? String == "fr")
        let messageId = try #require(sent.data["message_id"] as? String)

        // What the server read: STARTTLS before AUTH, and AUTH before MAIL.
        let commands = mail.commands()
        let order = ["EHLO", "STARTTLS", "EHLO", "AUTH", "MAIL", "RCPT", "DATA"]
        #expect(Array(commands.prefix(order.count)) == order, "\(commands)")
        let received = try #require(try mail.messages().first)
        #expect(received["mail_from"] as? String == "no-reply@acme.example")
        #expect(received["rcpt_tos"] as? [String] == ["ann@example.com"])
        #expect(received["content_type"] as? String == "multipart/alternative")
        let headers = try #require(received["headers"] as? [String: String])
        #expect(headers["Message-ID"] == "<\(messageId)@acme.example>")
        #expect(headers["From"] == "AcmeApp <no-reply@acme.example>")
        let subject = try #require(headers["Subject"])
        let code = String(subject.prefix { $0.isNumber })
        #expect(code.count == 6)
        let parts = try #require(received["parts"] as? [[String: Any]])
        #expect(parts.map { $0["content_type"] as? String } == ["text/plain", "text/html"])
        let text = try #require(parts[0]["content"] as? String)
        let html = try #require(parts[1]["content"] as? String)
        #expect(text.contains(code))
        #expect(html.contains(code))

        // The HTML part carries the open image and the show-the-code link, on the HTTP side.
        let token = Secrets(secret: testSecret).trackingToken(messageId: messageId)
        let base = "http://127.0.0.1:\(port)"
        #expect(html.contains("<img src=\"\(base)/o/\(token)\""))
        #expect(html.contains("href=\"\(base)/c/\(token)#\(code)\""))
        #expect(try await events(server, "em1").map(\.type) == ["issued", "sent"])
        let image = try await http(.GET, "\(base)/o/\(token)")
        #expect(image.status == 200)
        #expect(try await events(server, "em1").map(\.type) == ["issued", "sent", "opened"])
        #expect(pairs(try await redisCLI(server.port, ["STATUS", "em1"]))["status"] == "delivered")
        #expect(pairs(try await redisCLI(server.port, ["VERIFY", "em1", code]))["result"] == "verified")
    }

    @Test func aRelayThatDoesNotOfferSTARTTLSGetsNothingAndTheStepFailsOver() async throws {
        let mail = try await MailServer.start(["--no-starttls"], certificates: nil)
        defer { mail.stop() }
        let server = try await TestServer.start(
            label: "email_plain",
            config: """
                [channel.email]
                driver = "smtp"
                host = "127.0.0.1"
                port = \(mail.port)
                from = "no-reply@acme.example"

                [[policy]]
                name = "default"
                steps = [{ channel = "email", timeout = "60s" }, { channel = "push" }]
                """
        )
        defer { Task { await server.stop() } }
        _ = try await redisCLI(server.port, ["ISSUE", "em2", "email:ann@example.com", "push:device-1"])
        let types = try await eventually(timeout: .seconds(20), "the fallback to push") { () -> [String]? in
            let t = try await events(server, "em2").map(\.type)
            return t.contains("escalated") ? t : nil
        }
        #expect(Array(types.prefix(3)) == ["issued", "delivery_failed", "escalated"])
        let failed = try #require(try await events(server, "em2").first { $0.type == "delivery_failed" })
        #expect(failed.data["permanent"] as? Bool == true)
        #expect((failed.data["reason"] as? String)?.contains("STARTTLS") == true)
        #expect(!mail.commands().contains("MAIL"))  // nothing was sent in clear
        #expect(try mail.messages().isEmpty)
    }
}
