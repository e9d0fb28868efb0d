import NIOCore
import NIOEmbedded
import RESP
import Testing

@Suite("End of stream and channel pipeline")
struct EndOfStreamAndChannelTests {
    @Test func decodeLastReturnsCompleteRequests() throws {
        var decoder = RESPRequestDecoder()
        var buffer = ByteBuffer(string: "PING\r\n*1\r\n$4\r\nPING\r\n*2\r\n$3\r\nGET")
        #expect(try decoder.decodeLast(buffer: &buffer, seenEOF: true) == request("PING", inline: true))
        #expect(try decoder.decodeLast(buffer: &buffer, seenEOF: true) == request("PING", inline: false))
        #expect(try decoder.decodeLast(buffer: &buffer, seenEOF: true) == nil)
    }

    @Test(arguments: ["PIN", "PING\r", "*2\r\n$3\r\nGET", "*1\r\n$4\r\nPING\r", "*3\r\n", "\"unterminated", "*"])
    func decodeLastDropsHalfRequestWithoutThrowing(input: String) throws {
        var decoder = RESPRequestDecoder()
        var buffer = ByteBuffer(string: input)
        #expect(try decoder.decodeLast(buffer: &buffer, seenEOF: true) == nil)
        var other = ByteBuffer(string: input)
        #expect(try decoder.decodeLast(buffer: &other, seenEOF: false) == nil)
    }

    @Test func channelDeliversPipelinedRequests() throws {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(RESPRequestDecoder()))
        try channel.writeInbound(ByteBuffer(string: "PING\r\n*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\n*1\r\n$4\r\nPI"))
        #expect(try channel.readInbound(as: RESPRequest.self) == request("PING", inline: true))
        #expect(try channel.readInbound(as: RESPRequest.self) == request("ECHO", "hi", inline: false))
        #expect(try channel.readInbound(as: RESPRequest.self) == nil)
        try channel.writeInbound(ByteBuffer(string: "NG\r\n"))
        #expect(try channel.readInbound(as: RESPRequest.self) == request("PING", inline: false))
        #expect(try channel.finish().isClean)
    }

    @Test func channelDropsHalfRequestAtEndOfStream() throws {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(RESPRequestDecoder()))
        try channel.writeInbound(ByteBuffer(string: "PING\r\n*2\r\n$3\r\nGET\r\n"))
        #expect(try channel.readInbound(as: RESPRequest.self) == request("PING", inline: true))
        #expect(try channel.finish().isClean)
    }

    @Test func channelFiresErrorForOversizeInlineInput() throws {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(RESPRequestDecoder()))
        #expect(throws: RESPProtocolError.inlineTooLong) {
            try channel.writeInbound(ByteBuffer(string: String(repeating: "a", count: 16385)))
        }
        _ = try? channel.finish()
    }

    @Test func channelFiresErrorForOversizeBulkHeader() throws {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(RESPRequestDecoder()))
        #expect(throws: RESPProtocolError.bulkTooLong) {
            try channel.writeInbound(ByteBuffer(string: "*1\r\n$1000000\r\n"))
        }
        _ = try? channel.finish()
    }

    @Test func channelFiresErrorForUnbalancedQuotes() throws {
        let channel = EmbeddedChannel(handler: ByteToMessageHandler(RESPRequestDecoder()))
        #expect(throws: RESPProtocolError.unbalancedQuotes) {
            try channel.writeInbound(ByteBuffer(string: "SET \"abc\n"))
        }
        _ = try? channel.finish()
    }

    @Test func errorDescriptionIsTheReason() {
        #expect(RESPProtocolError.unbalancedQuotes.description == "unbalanced quotes")
        #expect("-PROTO \(RESPProtocolError.tooManyArguments)" == "-PROTO too many arguments")
    }
}
