import Foundation
import NIOCore
import NIOEmbedded
import NIOSSL
import Testing

@testable import SMTP

/// The handler on an `EmbeddedChannel`: the exact bytes the client writes, the limits, STARTTLS and timeouts.
@Suite struct HandlerTests {
    @Test func happyPathWritesExactlyTheseBytes() throws {
        let message = "Subject: x\r\n\r\n.\r\n.foo\r\nbar\r\n"
        let c = try EmbeddedConversation(conversation(message: message))
        #expect(try c.written() == "")
        try c.server("220 mx.example ESMTP ready\r\n")
        #expect(try c.written() == "EHLO client.example\r\n")
        try c.server("250-mx.example\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250 8BITMIME\r\n")
        #expect(try c.written() == "MAIL FROM:<no-reply@acme.example>\r\n")
        try c.server("250 2.1.0 Ok\r\n")
        #expect(try c.written() == "RCPT TO:<user@example.com>\r\n")
        try c.server("250 2.1.5 Ok\r\n")
        #expect(try c.written() == "DATA\r\n")
        try c.server("354 End data with <CR><LF>.<CR><LF>\r\n")
        #expect(try c.written() == "Subject: x\r\n\r\n..\r\n..foo\r\nbar\r\n.\r\n")
        try c.server("250 2.0.0 Ok: queued as 4F3A21C0\r\n")
        #expect(try c.written() == "QUIT\r\n")
        #expect(c.outcome == nil)
        try c.server("221 2.0.0 Bye\r\n")
        #expect(c.outcome == .accepted("4F3A21C0"))
        #expect(c.isClosed)
    }

    @Test func aRenderedMailGoesOutDotStuffedWithEveryLineWithinTheLimit() throws {
        var mail = sampleMail(text: ".\n.foo\n" + String(repeating: "x", count: 2000) + "\n")
        mail.html = nil
        let rendered = MIMEMessage.render(mail)
        let c = try EmbeddedConversation(conversation(message: rendered))
        for line in ["220 mx\r\n", "250 mx\r\n", "250 ok\r\n", "250 ok\r\n", "354 go\r\n"] { try c.server(line) }
        let written = try c.written()
        let body = written.components(separatedBy: "\r\n\r\n").dropFirst().joined(separator: "\r\n\r\n")
        #expect(body.hasPrefix("..\r\n..foo\r\n"))
        #expect(written.hasSuffix("\r\n.\r\n"))
        let lines = written.components(separatedBy: "\r\n")
        #expect(lines.allSatisfy { $0.utf8.count <= 998 })
        #expect(!written.contains("\n\n") && !written.replacingOccurrences(of: "\r\n", with: "").contains("\n"))
    }

    @Test func fourHundredAtRcptIsTransientAfterQuit() throws {
        let c = try EmbeddedConversation(conversation())
        for line in ["220 mx\r\n", "250 mx\r\n", "250 ok\r\n"] { try c.server(line) }
        _ = try c.written()
        try c.server("451 4.3.0 <user@example.com>: Temporary lookup failure\r\n")
        #expect(try c.written() == "QUIT\r\n")
        try c.server("221 bye\r\n")
        #expect(c.outcome == .transient("SMTP 451 4.3.0 at RCPT"))
        #expect(c.isClosed)
    }

    @Test func fiveHundredAtMailIsPermanentAndNothingMoreIsSent() throws {
        let c = try EmbeddedConversation(conversation())
        for line in ["220 mx\r\n", "250 mx\r\n"] { try c.server(line) }
        _ = try c.written()
        try c.server("550 5.7.1 <no-reply@acme.example>: Sender address rejected: not owned by user\r\n")
        #expect(try c.written() == "QUIT\r\n")
        try c.server("221 bye\r\n")
        #expect(c.outcome == .permanent("SMTP 550 5.7.1 at MAIL"))
    }

    @Test func starttlsNotOfferedWritesNothingButQuit() throws {
        let c = try EmbeddedConversation(conversation(security: .starttls, credentials: testCredentials))
        try c.server("220 mx\r\n")
        #expect(try c.written() == "EHLO client.example\r\n")
        try c.server("250-mx\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n")
        #expect(try c.written() == "QUIT\r\n")
        try c.server("221 bye\r\n")
        #expect(c.outcome == .permanent("server does not offer STARTTLS; nothing sent"))
        #expect(c.isClosed)
    }

    @Test func starttlsAcceptedPutsTLSFirstAndTheClientHelloGoesOut() throws {
        let context = try NIOSSLContext(configuration: .makeClientConfiguration())
        let c = try EmbeddedConversation(
            conversation(security: .starttls),
            startTLS: .init(context: context, serverHostname: "mx.example")
        )
        try c.server("220 mx\r\n")
        try c.server("250-mx\r\n250 STARTTLS\r\n")
        #expect(try c.written() == "EHLO client.example\r\nSTARTTLS\r\n")
        try c.server("220 2.0.0 Ready to start TLS\r\n")
        let hello = try c.writtenBytes()
        // A TLS handshake record (0x16, version 3.x): the handshake began, no plain-text command followed.
        #expect(hello.count > 5 && hello[0] == 0x16 && hello[1] == 0x03)
        #expect((try? c.channel.pipeline.syncOperations.handler(type: NIOSSLClientHandler.self)) != nil)
        #expect(c.outcome == nil)
        // No server answers the hello here: the handshake's own timeout ends it.
        c.channel.embeddedEventLoop.advanceTime(by: .seconds(30))
        #expect(c.outcome == .transient("timeout waiting for the TLS handshake"))
        c.channel.embeddedEventLoop.advanceTime(by: .seconds(10))
    }

    @Test func bytesInjectedAfterTheStarttlsReplyFailWithNothingSent() throws {
        let context = try NIOSSLContext(configuration: .makeClientConfiguration())
        let c = try EmbeddedConversation(
            conversation(security: .starttls, credentials: testCredentials),
            startTLS: .init(context: context, serverHostname: "mx.example")
        )
        try c.server("220 mx\r\n")
        try c.server("250-mx\r\n250 STARTTLS\r\n")
        _ = try c.written()
        // The attacker appends a plain-text reply to the server's 220, to be read as if it came over TLS.
        try c.server("220 2.0.0 Ready to start TLS\r\n250-mx\r\n250 AUTH PLAIN\r\n")
        #expect(try c.written() == "")
        #expect(c.outcome == .transient("data after the STARTTLS reply before TLS; nothing sent"))
        #expect(c.isClosed)
        #expect((try? c.channel.pipeline.syncOperations.handler(type: NIOSSLClientHandler.self)) == nil)
    }

    @Test func anOverlongReplyLineIsTransientAndTheConnectionCloses() throws {
        let c = try EmbeddedConversation(conversation())
        try c.server("220 mx\r\n")
        _ = try c.written()
        try c.server("250-mx\r\n250-" + String(repeating: "A", count: 4000))
        #expect(c.outcome == .transient("reply line too long at EHLO"))
        #expect(try c.written() == "")
        #expect(c.isClosed)
    }

    @Test func aReplyOfTooManyLinesIsTransient() throws {
        let c = try EmbeddedConversation(conversation())
        try c.server("220 mx\r\n")
        try c.server(String(repeating: "250-X\r\n", count: 150))
        #expect(c.outcome == .transient("reply with too many lines at EHLO"))
    }

    @Test func loginIsUsedWhenPlainIsNotOffered() throws {
        let c = try EmbeddedConversation(conversation(security: .implicit, credentials: testCredentials))
        c.handshakeCompleted()
        try c.server("220 mx\r\n")
        #expect(try c.written() == "EHLO client.example\r\n")
        try c.server("250-mx\r\n250-AUTH LOGIN CRAM-MD5\r\n250 8BITMIME\r\n")
        #expect(try c.written() == "AUTH LOGIN\r\n")
        try c.server("334 VXNlcm5hbWU6\r\n")
        #expect(try c.written() == "b3RwZA==\r\n")
        try c.server("334 UGFzc3dvcmQ6\r\n")
        #expect(try c.written() == "czNjcmV0LXBhc3M=\r\n")
        try c.server("235 2.7.0 Authentication successful\r\n")
        #expect(try c.written() == "MAIL FROM:<no-reply@acme.example>\r\n")
    }

    @Test func authPlainOverImplicitTLS() throws {
        let c = try EmbeddedConversation(conversation(security: .implicit, credentials: testCredentials))
        c.handshakeCompleted()
        try c.server("220 mx\r\n")
        try c.server("250-mx\r\n250 AUTH LOGIN PLAIN\r\n")
        #expect(try c.written() == "EHLO client.example\r\nAUTH PLAIN AG90cGQAczNjcmV0LXBhc3M=\r\n")
        try c.server("535 5.7.8 Error: authentication failed: otpd\r\n")
        #expect(try c.written() == "QUIT\r\n")
        try c.server("221 bye\r\n")
        #expect(c.outcome == .permanent("authentication failed: SMTP 535 5.7.8 at AUTH"))
    }

    @Test func noGreetingWithinItsTimeoutClosesWithoutQuit() throws {
        let c = try EmbeddedConversation(conversation(), timeouts: SMTPTimeouts(greeting: .seconds(30)))
        c.channel.embeddedEventLoop.advanceTime(by: .seconds(29))
        #expect(c.outcome == nil)
        c.channel.embeddedEventLoop.advanceTime(by: .seconds(1))
        #expect(c.outcome == .transient("timeout waiting for the greeting"))
        #expect(try c.written() == "")
        #expect(c.isClosed)
    }

    @Test func eachReplyHasTheCommandTimeoutAndTheEndOfDataItsOwn() throws {
        let timeouts = SMTPTimeouts(greeting: .seconds(5), command: .seconds(10), dataEnd: .seconds(60))
        let c = try EmbeddedConversation(conversation(), timeouts: timeouts)
        // Each reply restarts the clock: 9 s per reply never times out.
        for line in ["220 mx\r\n", "250 mx\r\n", "250 ok\r\n", "250 ok\r\n", "354 go\r\n"] {
            c.channel.embeddedEventLoop.advanceTime(by: .seconds(4))
            try c.server(line)
        }
        c.channel.embeddedEventLoop.advanceTime(by: .seconds(59))
        #expect(c.outcome == nil)
        c.channel.embeddedEventLoop.advanceTime(by: .seconds(1))
        // The whole message went out: the server may deliver it, so the outcome is unknown, not retried.
        #expect(c.outcome == .unknown("timeout waiting for the reply after the end of data"))
        #expect(!(try c.written()).hasSuffix("QUIT\r\n"))
    }

    @Test func theConversationsBoundEndsItWhateverTheStage() throws {
        let timeouts = SMTPTimeouts(command: .seconds(10), total: .seconds(12))
        let c = try EmbeddedConversation(conversation(), timeouts: timeouts)
        // Each reply comes within its stage's 10 s, but 3 × 5 s passes the conversation's 12 s.
        for line in ["220 mx\r\n", "250 mx\r\n"] {
            c.channel.embeddedEventLoop.advanceTime(by: .seconds(5))
            try c.server(line)
        }
        #expect(c.outcome == nil)
        c.channel.embeddedEventLoop.advanceTime(by: .seconds(2))
        #expect(c.outcome == .transient("timeout waiting for the reply to MAIL"))
    }

    @Test func aCommandReplyThatNeverComesTimesOut() throws {
        let c = try EmbeddedConversation(conversation(), timeouts: SMTPTimeouts(command: .seconds(10)))
        try c.server("220 mx\r\n")
        c.channel.embeddedEventLoop.advanceTime(by: .seconds(10))
        #expect(c.outcome == .transient("timeout waiting for the reply to EHLO"))
    }

    @Test func aSilentServerAfterQuitDoesNotHoldTheOutcome() throws {
        let c = try EmbeddedConversation(conversation(), timeouts: SMTPTimeouts(quit: .seconds(2)))
        try c.server("554 5.7.1 no service\r\n")
        #expect(try c.written() == "QUIT\r\n")
        #expect(c.outcome == nil)
        c.channel.embeddedEventLoop.advanceTime(by: .seconds(2))
        #expect(c.outcome == .permanent("SMTP 554 5.7.1 at greeting"))
        #expect(c.isClosed)
    }

    @Test func theServerClosingMidwayIsTransient() throws {
        let c = try EmbeddedConversation(conversation())
        try c.server("220 mx\r\n")
        try c.channel.close().wait()
        #expect(c.outcome == .transient("connection closed waiting for the reply to EHLO"))
    }

    @Test func noOutcomeRepeatsTheRecipientOrTheServersText() throws {
        let c = try EmbeddedConversation(conversation())
        for line in ["220 mx\r\n", "250 mx\r\n", "250 ok\r\n"] { try c.server(line) }
        try c.server("550 5.1.1 <user@example.com>: Recipient address rejected: User unknown in virtual table\r\n")
        try c.server("221 bye\r\n")
        guard case .permanent(let text) = c.outcome else {
            Issue.record("expected a permanent outcome, got \(String(describing: c.outcome))")
            return
        }
        #expect(text == "SMTP 550 5.1.1 at RCPT")
        #expect(!text.contains("user") && !text.contains("unknown"))
    }
}
