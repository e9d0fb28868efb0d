import NIOCore
import RESP
import Testing

@Suite("Inline requests")
struct InlineRequestTests {
    @Test func wordsSplitOnSpacesAndTabs() throws {
        #expect(try decodeAll("SET  key\tvalue \t\r\n") == [request("SET", "key", "value", inline: true)])
    }

    @Test func crlfAndBareLFEndLinesIdentically() throws {
        #expect(try decodeAll("PING\r\n") == [request("PING", inline: true)])
        #expect(try decodeAll("PING\n") == [request("PING", inline: true)])
    }

    @Test func lineWithoutNewlineWaitsForMoreData() throws {
        var decoder = RESPRequestDecoder()
        var buffer = ByteBuffer(string: "PING\r")
        #expect(try decoder.decode(buffer: &buffer) == nil)
        #expect(buffer.readableBytes == 5)
        buffer.writeString("\n")
        #expect(try decoder.decode(buffer: &buffer) == request("PING", inline: true))
        #expect(buffer.readableBytes == 0)
    }

    @Test func emptyAndWhitespaceOnlyLinesAreConsumedAndSkipped() throws {
        var decoder = RESPRequestDecoder()
        var buffer = ByteBuffer(string: "\r\n\n  \t \r\n \n")
        #expect(try decoder.decode(buffer: &buffer) == nil)
        #expect(buffer.readableBytes == 0)
        #expect(try decodeAll("\n\r\n \t\nPING\r\n\n") == [request("PING", inline: true)])
    }

    @Test func doubleQuotedArgumentKeepsBlanks() throws {
        #expect(try decodeAll("SET \"a b\tc\" v\r\n") == [request("SET", "a b\tc", "v", inline: true)])
    }

    @Test func doubleQuotedEscapesAreDecoded() throws {
        let line = #"ECHO "q\"b\\n\nr\rt\ta\ab\b""# + "\r\n"
        let expected: [UInt8] = Array("q\"b\\n\nr\rt\ta".utf8) + [0x07] + Array("b".utf8) + [0x08]
        #expect(try decodeAll(line) == [request(bytes: [Array("ECHO".utf8), expected], inline: true)])
    }

    @Test func hexEscapesDecodeToRawBytes() throws {
        let line = #"ECHO "\x41\x00\xff\xFe\x7a""# + "\n"
        #expect(
            try decodeAll(line) == [
                request(bytes: [Array("ECHO".utf8), [0x41, 0x00, 0xFF, 0xFE, 0x7A]], inline: true)
            ]
        )
    }

    @Test func incompleteHexEscapeYieldsTheLetterX() throws {
        #expect(try decodeAll(#"ECHO "\xZZ" "\x4""# + "\n") == [request("ECHO", "xZZ", "x4", inline: true)])
    }

    @Test func unknownEscapeYieldsTheEscapedCharacter() throws {
        #expect(try decodeAll(#"ECHO "\q\%""# + "\n") == [request("ECHO", "q%", inline: true)])
    }

    @Test func singleQuotesAreLiteralExceptEscapedQuote() throws {
        let line = #"ECHO 'it\'s \n \\ "x"'"# + "\r\n"
        #expect(try decodeAll(line) == [request("ECHO", #"it's \n \\ "x""#, inline: true)])
    }

    @Test func emptyQuotesProduceEmptyArguments() throws {
        #expect(try decodeAll("SET k \"\" ''\n") == [request("SET", "k", "", "", inline: true)])
        #expect(try decodeAll("\"\"\n") == [request("", inline: true)])
    }

    @Test func quoteInsideAWordStartsAQuotedPartLikeRedis() throws {
        #expect(try decodeAll("ECHO ab\"c d\"\n") == [request("ECHO", "abc d", inline: true)])
    }

    @Test func closingQuoteMayBeFollowedByTabOrLineEnd() throws {
        #expect(try decodeAll("ECHO \"a\"\t'b'\r\n") == [request("ECHO", "a", "b", inline: true)])
    }

    @Test(arguments: [
        "ECHO \"abc\r\n",
        "ECHO \"abc\"def\r\n",
        "ECHO 'abc\n",
        "ECHO 'abc'x\n",
        "ECHO \"abc\\\n",
        "ECHO 'abc\\'\n",
        "\"\n",
    ])
    func unbalancedQuotesFail(line: String) throws {
        #expect(throws: RESPProtocolError.unbalancedQuotes) { try decodeAll(line) }
        #expect(throws: RESPProtocolError.unbalancedQuotes) { try dripFeed(line) }
        #expect(RESPProtocolError.unbalancedQuotes.reason == "unbalanced quotes")
    }

    @Test func pipelinedInlineRequestsDecodeInOrder() throws {
        let input = "PING\r\nSET a 1\nGET a\r\n\r\nDEL \"a\"\n"
        let expected = [
            request("PING", inline: true), request("SET", "a", "1", inline: true),
            request("GET", "a", inline: true), request("DEL", "a", inline: true),
        ]
        #expect(try decodeAll(input) == expected)
        #expect(try dripFeed(input) == expected)
    }

    @Test func stringsDecodesArgumentsLossily() throws {
        let decoded = try decodeAll(#"SET "\xff" caf\#u{e9}"# + "\n")
        #expect(decoded.first?.strings == ["SET", "\u{FFFD}", "caf\u{e9}"])
    }

    @Test func verifierAcceptsInlineRequestsFedInAnyChunking() throws {
        try verify([
            ("PING\r\n", [request("PING", inline: true)]),
            ("PING\n", [request("PING", inline: true)]),
            ("\r\n", []),
            (" \t \n", []),
            ("SET key \"hello world\"\r\n", [request("SET", "key", "hello world", inline: true)]),
            ("ECHO 'it\\'s'\t\"\\x41\\n\"\n", [request("ECHO", "it's", "A\n", inline: true)]),
            ("A\nB\r\n", [request("A", inline: true), request("B", inline: true)]),
        ])
    }
}
