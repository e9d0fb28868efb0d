import Testing

@testable import SMTP

/// Framing replies: continuation and final lines, consistent codes, and the bounds on what we buffer.
@Suite struct ReplyDecoderTests {
    private func decode(_ chunks: [String]) throws(SMTPReplyError) -> [SMTPReply] {
        var decoder = SMTPReplyDecoder()
        var bytes = ReceivedBytes()
        var replies: [SMTPReply] = []
        for chunk in chunks {
            bytes.append(Array(chunk.utf8))
            while let r = try decoder.next(from: &bytes) { replies.append(r) }
        }
        return replies
    }

    @Test func multiLineReplyEndsAtTheLineWithASpace() throws {
        let replies = try decode(["250-mx.example\r\n250-SIZE 10240000\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n"])
        #expect(replies == [reply(250, "mx.example", "SIZE 10240000", "AUTH PLAIN LOGIN", "8BITMIME")])
        let caps = SMTPCapabilities(ehlo: replies[0])
        #expect(caps.authMechanisms == ["PLAIN", "LOGIN"])
        #expect(caps.size == 10_240_000)
        #expect(caps.eightBitMIME)
        #expect(!caps.startTLS)
    }

    @Test func repliesSplitAnywhereDecodeTheSame() throws {
        let text = "220 mx.example ESMTP\r\n250-mx\r\n250 STARTTLS\r\n"
        let whole = try decode([text])
        for cut in 1..<text.utf8.count {
            let bytes = Array(text.utf8)
            let parts = [
                String(decoding: bytes[..<cut], as: UTF8.self), String(decoding: bytes[cut...], as: UTF8.self),
            ]
            #expect(try decode(parts) == whole)
        }
        #expect(try decode(text.map { String($0) }) == whole)
    }

    @Test func aBareCodeAndABareLFAreReplies() throws {
        #expect(try decode(["250\r\n", "221 bye\n"]) == [reply(250, ""), reply(221, "bye")])
    }

    @Test(arguments: ["25 short\r\n", "abc text\r\n", "250_x\r\n", "250-a\r\n251 b\r\n", "600 no\r\n", "199 no\r\n"])
    func malformedRepliesAreRefused(text: String) {
        #expect(throws: SMTPReplyError.malformed) { try decode([text]) }
    }

    @Test func aLineOfTwoKiBIsTheLongestAccepted() throws {
        let longest = "250 " + String(repeating: "a", count: SMTPReplyDecoder.maxLineLength - 6) + "\r\n"
        #expect(longest.utf8.count == SMTPReplyDecoder.maxLineLength)
        #expect(try decode([longest]).count == 1)
        let tooLong = "250 " + String(repeating: "a", count: SMTPReplyDecoder.maxLineLength - 5) + "\r\n"
        #expect(throws: SMTPReplyError.lineTooLong) { try decode([tooLong]) }
    }

    @Test func anEndlessLineIsRefusedOnceItPassesTheBoundWithoutWaitingForItsEnd() {
        let chunk = String(repeating: "x", count: 1000)
        #expect(throws: SMTPReplyError.lineTooLong) { try decode(["250 ", chunk, chunk, chunk]) }
    }

    @Test func aReplyOfMoreThanAHundredLinesIsRefused() throws {
        let hundred = String(repeating: "250-x\r\n", count: 99) + "250 x\r\n"
        #expect(try decode([hundred]).first?.lines.count == 100)
        #expect(throws: SMTPReplyError.tooManyLines) { try decode([String(repeating: "250-x\r\n", count: 101)]) }
    }

    @Test func enhancedCodesAndQueueIds() {
        #expect(reply(550, "5.1.1 <a@b.example>: Recipient address rejected").enhancedCode == "5.1.1")
        #expect(reply(550, "5.1.1").enhancedCode == "5.1.1")
        #expect(reply(550, "4.1.1 wrong class").enhancedCode == nil)
        #expect(reply(550, "5.1 short").enhancedCode == nil)
        #expect(reply(550, "5.1.1234 long").enhancedCode == nil)
        #expect(reply(250, "2.0.0 Ok: queued as 4F3A21C0").queueId == "4F3A21C0")
        #expect(reply(250, "OK id=1uQ2aB-000Abc-7x").queueId == "1uQ2aB-000Abc-7x")
        #expect(reply(250, "2.0.0 Ok: queued as <user@example.com>").queueId == "")
        #expect(reply(250, "2.0.0 Ok: queued as user@example.com").queueId == "")
        #expect(reply(250, "OK").queueId == "")
    }
}
