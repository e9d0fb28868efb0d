import Testing

@testable import SMTP

/// The conversation as a pure state machine: given a state, when a reply or event arrives, then this action.
@Suite struct StateMachineTests {
    private let ehloPlain = reply(250, "mx.example", "PIPELINING", "8BITMIME")
    private let ehloWithStartTLS = reply(250, "mx.example", "STARTTLS", "AUTH PLAIN LOGIN")

    @Test func plainConversationSendsEachCommandInTurnAndEndsWithQuit() {
        var m = conversation(message: "Subject: x\r\n\r\n.\r\n.foo\r\nbar\r\n")
        #expect(sent(m.receive(reply(220, "mx.example ESMTP"), moreBuffered: false)) == "EHLO client.example\r\n")
        #expect(sent(m.receive(ehloPlain, moreBuffered: false)) == "MAIL FROM:<no-reply@acme.example>\r\n")
        #expect(sent(m.receive(reply(250, "2.1.0 Ok"), moreBuffered: false)) == "RCPT TO:<user@example.com>\r\n")
        #expect(sent(m.receive(reply(250, "2.1.5 Ok"), moreBuffered: false)) == "DATA\r\n")
        let data = m.receive(reply(354, "End data with <CR><LF>.<CR><LF>"), moreBuffered: false)
        #expect(data == .send(Array("Subject: x\r\n\r\n..\r\n..foo\r\nbar\r\n.\r\n".utf8), .endOfData))
        #expect(
            m.receive(reply(250, "2.0.0 Ok: queued as 4F3A21C0"), moreBuffered: false) == .quit(.accepted("4F3A21C0"))
        )
        #expect(m.receive(reply(221, "2.0.0 Bye"), moreBuffered: false) == .close(.accepted("4F3A21C0")))
        #expect(m.state == .done)
    }

    @Test func acceptedWithoutAKnownQueueIdIsAnEmptyReference() {
        var m = conversation()
        _ = m.receive(reply(220), moreBuffered: false)
        _ = m.receive(ehloPlain, moreBuffered: false)
        _ = m.receive(reply(250), moreBuffered: false)
        _ = m.receive(reply(250), moreBuffered: false)
        _ = m.receive(reply(354), moreBuffered: false)
        #expect(
            m.receive(reply(250, "2.0.0 OK 1700000000 a1si123 - gsmtp"), moreBuffered: false) == .quit(.accepted(""))
        )
    }

    @Test func fourHundredAtRcptIsTransientAndNamesOnlyTheStageAndCodes() {
        var m = conversation()
        _ = m.receive(reply(220), moreBuffered: false)
        _ = m.receive(ehloPlain, moreBuffered: false)
        _ = m.receive(reply(250), moreBuffered: false)
        let action = m.receive(
            reply(450, "4.2.0 <user@example.com>: Recipient address rejected: Greylisted"),
            moreBuffered: false
        )
        #expect(action == .quit(.transient("SMTP 450 4.2.0 at RCPT")))
        #expect(m.receive(reply(221), moreBuffered: false) == .close(.transient("SMTP 450 4.2.0 at RCPT")))
    }

    @Test func fiveHundredAtMailIsPermanent() {
        var m = conversation()
        _ = m.receive(reply(220), moreBuffered: false)
        _ = m.receive(ehloPlain, moreBuffered: false)
        #expect(
            m.receive(reply(553, "5.7.1 Sender address rejected"), moreBuffered: false)
                == .quit(.permanent("SMTP 553 5.7.1 at MAIL"))
        )
    }

    @Test func anEnhancedCodeOfAnotherClassIsNotReported() {
        var m = conversation()
        _ = m.receive(reply(220), moreBuffered: false)
        _ = m.receive(ehloPlain, moreBuffered: false)
        #expect(m.receive(reply(550, "2.1.0 odd"), moreBuffered: false) == .quit(.permanent("SMTP 550 at MAIL")))
    }

    @Test(arguments: [
        (421, SMTPOutcome.transient("SMTP 421 at greeting")),
        (554, SMTPOutcome.permanent("SMTP 554 at greeting")),
        (250, SMTPOutcome.transient("unexpected greeting SMTP 250")),
    ])
    func aGreetingOtherThan220EndsTheConversation(code: Int, outcome: SMTPOutcome) {
        var m = conversation()
        #expect(m.receive(reply(code, "mx.example go away"), moreBuffered: false) == .quit(outcome))
    }

    @Test func ehloRefusedFallsBackToHeloOnlyWithoutTLS() {
        var plain = conversation(security: .none)
        _ = plain.receive(reply(220), moreBuffered: false)
        #expect(
            sent(plain.receive(reply(502, "5.5.2 Error: command not recognized"), moreBuffered: false))
                == "HELO client.example\r\n"
        )
        #expect(
            sent(plain.receive(reply(250, "mx.example"), moreBuffered: false))
                == "MAIL FROM:<no-reply@acme.example>\r\n"
        )

        var tls = conversation(security: .starttls)
        _ = tls.receive(reply(220), moreBuffered: false)
        #expect(tls.receive(reply(502, "5.5.2 no"), moreBuffered: false) == .quit(.permanent("SMTP 502 5.5.2 at EHLO")))
    }

    @Test func starttlsNotOfferedSendsNothingButQuitAndIsPermanent() {
        var m = conversation(security: .starttls, credentials: testCredentials)
        _ = m.receive(reply(220), moreBuffered: false)
        let action = m.receive(reply(250, "mx.example", "AUTH PLAIN LOGIN", "8BITMIME"), moreBuffered: false)
        #expect(action == .quit(.permanent("server does not offer STARTTLS; nothing sent")))
    }

    @Test func afterStarttlsTheCapabilitiesAreForgottenAndEhloIsSentAgain() {
        var m = conversation(security: .starttls, credentials: testCredentials)
        _ = m.receive(reply(220), moreBuffered: false)
        // In plain text the server claims PLAIN; over TLS it offers only LOGIN: only the latter counts.
        #expect(sent(m.receive(ehloWithStartTLS, moreBuffered: false)) == "STARTTLS\r\n")
        #expect(m.receive(reply(220, "2.0.0 Ready to start TLS"), moreBuffered: false) == .startTLS)
        #expect(m.capabilities == SMTPCapabilities())
        #expect(m.tlsActive == false)
        #expect(sent(m.tlsEstablished()) == "EHLO client.example\r\n")
        #expect(m.tlsActive)
        #expect(sent(m.receive(reply(250, "mx.example", "AUTH LOGIN"), moreBuffered: false)) == "AUTH LOGIN\r\n")
    }

    @Test func bytesAfterTheStarttlsReplyAreAnInjectionAndNothingIsSent() {
        var m = conversation(security: .starttls)
        _ = m.receive(reply(220), moreBuffered: false)
        _ = m.receive(ehloWithStartTLS, moreBuffered: false)
        let action = m.receive(reply(220, "go ahead"), moreBuffered: true)
        #expect(action == .close(.transient("data after the STARTTLS reply before TLS; nothing sent")))
        #expect(m.tlsEstablished() == .wait)
    }

    @Test func aReplyBeforeTheHandshakeCompletedIsRefused() {
        var m = conversation(security: .starttls)
        _ = m.receive(reply(220), moreBuffered: false)
        _ = m.receive(ehloWithStartTLS, moreBuffered: false)
        _ = m.receive(reply(220), moreBuffered: false)
        #expect(
            m.receive(reply(250), moreBuffered: false)
                == .close(.transient("reply before the TLS handshake completed; nothing sent"))
        )
    }

    @Test func unsolicitedBytesAfterAnyReplyEndTheConversation() {
        var m = conversation()
        _ = m.receive(reply(220), moreBuffered: false)
        #expect(
            m.receive(ehloPlain, moreBuffered: true) == .close(.transient("unsolicited data after the reply at EHLO"))
        )
    }

    @Test func authPlainCarriesUserAndPasswordInOneLine() {
        var m = conversation(security: .implicit, credentials: testCredentials)
        #expect(m.tlsEstablished() == .wait)
        _ = m.receive(reply(220), moreBuffered: false)
        // base64("\0otpd\0s3cret-pass")
        #expect(sent(m.receive(ehloWithStartTLS, moreBuffered: false)) == "AUTH PLAIN AG90cGQAczNjcmV0LXBhc3M=\r\n")
        #expect(
            sent(m.receive(reply(235, "2.7.0 Authentication successful"), moreBuffered: false))
                == "MAIL FROM:<no-reply@acme.example>\r\n"
        )
    }

    @Test func authLoginAnswersTwoChallenges() {
        var m = conversation(security: .implicit, credentials: testCredentials)
        _ = m.tlsEstablished()
        _ = m.receive(reply(220), moreBuffered: false)
        #expect(sent(m.receive(reply(250, "mx.example", "AUTH=LOGIN"), moreBuffered: false)) == "AUTH LOGIN\r\n")
        #expect(sent(m.receive(reply(334, "VXNlcm5hbWU6"), moreBuffered: false)) == "b3RwZA==\r\n")
        #expect(sent(m.receive(reply(334, "UGFzc3dvcmQ6"), moreBuffered: false)) == "czNjcmV0LXBhc3M=\r\n")
        #expect(sent(m.receive(reply(235), moreBuffered: false)) == "MAIL FROM:<no-reply@acme.example>\r\n")
    }

    @Test func wrongCredentialsArePermanentAndTemporaryAuthFailuresTransient() {
        for (code, outcome) in [
            (535, SMTPOutcome.permanent("authentication failed: SMTP 535 5.7.8 at AUTH")),
            (454, SMTPOutcome.transient("SMTP 454 4.7.0 at AUTH")),
        ] {
            var m = conversation(security: .implicit, credentials: testCredentials)
            _ = m.tlsEstablished()
            _ = m.receive(reply(220), moreBuffered: false)
            _ = m.receive(ehloWithStartTLS, moreBuffered: false)
            let enhanced = code == 535 ? "5.7.8" : "4.7.0"
            #expect(m.receive(reply(code, "\(enhanced) nope"), moreBuffered: false) == .quit(outcome))
        }
    }

    @Test func authWithoutPlainOrLoginIsPermanentAndNothingIsSent() {
        var m = conversation(security: .implicit, credentials: testCredentials)
        _ = m.tlsEstablished()
        _ = m.receive(reply(220), moreBuffered: false)
        let action = m.receive(reply(250, "mx.example", "AUTH CRAM-MD5 XOAUTH2"), moreBuffered: false)
        #expect(action == .quit(.permanent("server offers neither AUTH PLAIN nor LOGIN; nothing sent")))
    }

    @Test func authIsNeverSentWithoutTLS() {
        // .none with credentials is refused before connecting; should such a machine exist, it still refuses.
        var m = conversation(security: .none, credentials: testCredentials)
        _ = m.receive(reply(220), moreBuffered: false)
        #expect(m.receive(ehloWithStartTLS, moreBuffered: false) == .quit(.permanent("AUTH needs TLS; nothing sent")))
        // Implicit TLS whose handshake was never reported: nothing is sent either.
        var implicit = conversation(security: .implicit, credentials: testCredentials)
        _ = implicit.receive(reply(220), moreBuffered: false)
        #expect(
            implicit.receive(ehloWithStartTLS, moreBuffered: false)
                == .quit(.permanent("TLS is not active; nothing sent"))
        )
    }

    @Test func timeoutsNameWhatWasAwaited() {
        var greeting = conversation()
        #expect(greeting.timedOut() == .close(.transient("timeout waiting for the greeting")))
        var rcpt = conversation()
        _ = rcpt.receive(reply(220), moreBuffered: false)
        _ = rcpt.receive(ehloPlain, moreBuffered: false)
        _ = rcpt.receive(reply(250), moreBuffered: false)
        #expect(rcpt.timedOut() == .close(.transient("timeout waiting for the reply to RCPT")))
        var quitting = conversation()
        _ = quitting.receive(reply(554), moreBuffered: false)
        #expect(quitting.timedOut() == .close(.permanent("SMTP 554 at greeting")))
    }

    @Test func aClosedConnectionIsTransientUnlessTheOutcomeIsDecided() {
        var m = conversation()
        _ = m.receive(reply(220), moreBuffered: false)
        #expect(m.connectionClosed() == .close(.transient("connection closed waiting for the reply to EHLO")))
        #expect(m.connectionClosed() == .wait)
        var decided = conversation()
        _ = decided.receive(reply(421, "4.3.2 shutting down"), moreBuffered: false)
        #expect(decided.connectionClosed() == .close(.transient("SMTP 421 4.3.2 at greeting")))
    }

    @Test func dataPayloadStuffsDotsNormalisesLineEndingsAndTerminates() {
        #expect(SMTPStateMachine.dataPayload(".\r\n.foo\r\nbar") == Array("..\r\n..foo\r\nbar\r\n.\r\n".utf8))
        #expect(SMTPStateMachine.dataPayload("a\nb\rc\r\n") == Array("a\r\nb\r\nc\r\n.\r\n".utf8))
        #expect(SMTPStateMachine.dataPayload("") == Array(".\r\n".utf8))
        #expect(SMTPStateMachine.dataPayload("x. y\r\n\r\n") == Array("x. y\r\n\r\n.\r\n".utf8))
    }
}
