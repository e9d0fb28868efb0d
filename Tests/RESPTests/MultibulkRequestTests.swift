import NIOCore
import RESP
import Testing

@Suite("RESP array requests")
struct MultibulkRequestTests {
    @Test func arrayOfBulkStringsDecodes() throws {
        #expect(try decodeAll("*2\r\n$3\r\nGET\r\n$3\r\nkey\r\n") == [request("GET", "key", inline: false)])
    }

    @Test func bulkStringsAreBinarySafe() throws {
        let payload: [UInt8] = [0x61, 0x0D, 0x0A, 0x00, 0xFF, 0x24, 0x2A]
        let input = Array("*2\r\n$4\r\nECHO\r\n$7\r\n".utf8) + payload + Array("\r\n".utf8)
        #expect(try decodeAll(input) == [request(bytes: [Array("ECHO".utf8), payload], inline: false)])
        #expect(try dripFeed(input) == [request(bytes: [Array("ECHO".utf8), payload], inline: false)])
    }

    @Test func emptyBulkStringIsAnArgument() throws {
        #expect(try decodeAll("*2\r\n$4\r\nECHO\r\n$0\r\n\r\n") == [request("ECHO", "", inline: false)])
    }

    @Test func emptyAndNullArraysAreConsumedWithoutARequest() throws {
        var decoder = RESPRequestDecoder()
        var buffer = ByteBuffer(string: "*0\r\n*-1\r\n")
        #expect(try decoder.decode(buffer: &buffer) == nil)
        #expect(buffer.readableBytes == 0)
        #expect(try decodeAll("*0\r\n*-1\r\n*1\r\n$4\r\nPING\r\n") == [request("PING", inline: false)])
    }

    @Test func incompleteRequestDoesNotMoveTheReaderIndex() throws {
        var decoder = RESPRequestDecoder()
        var buffer = ByteBuffer(string: "*2\r\n$3\r\nGET\r\n$3\r\nke")
        #expect(try decoder.decode(buffer: &buffer) == nil)
        #expect(buffer.readerIndex == 0)
        buffer.writeString("y\r")
        #expect(try decoder.decode(buffer: &buffer) == nil)
        #expect(buffer.readerIndex == 0)
        buffer.writeString("\n")
        #expect(try decoder.decode(buffer: &buffer) == request("GET", "key", inline: false))
        #expect(buffer.readableBytes == 0)
    }

    @Test func elementNotStartingWithDollarFails() throws {
        #expect(throws: RESPProtocolError(reason: "expected '$', got ':'")) {
            try decodeAll("*1\r\n:1\r\n")
        }
        #expect(throws: RESPProtocolError(reason: "expected '$', got 'x'")) {
            try dripFeed("*2\r\n$1\r\na\r\nx")
        }
        #expect(throws: RESPProtocolError(reason: "expected '$', got '\\x0d'")) {
            try decodeAll("*1\r\n\r\n")
        }
    }

    @Test(arguments: ["$abc\r\n", "$-5\r\n", "$-1\r\n", "$ 3\r\n", "$+3\r\n", "$03\r\n", "$\r\n", "$3 \r\n", "$3\rX"])
    func malformedBulkLengthFails(header: String) throws {
        let input = "*1\r\n" + header + "foo\r\n"
        #expect(throws: RESPProtocolError.invalidBulkLength) { try decodeAll(input) }
        #expect(throws: RESPProtocolError.invalidBulkLength) { try dripFeed(input) }
    }

    @Test(arguments: ["*x\r\n", "*-5\r\n", "*-0\r\n", "*-\r\n", "*+1\r\n", "*01\r\n", "* 1\r\n", "*\r\n", "*1\rX"])
    func malformedMultibulkLengthFails(header: String) throws {
        let input = header + "$4\r\nPING\r\n"
        #expect(throws: RESPProtocolError.invalidMultibulkLength) { try decodeAll(input) }
        #expect(throws: RESPProtocolError.invalidMultibulkLength) { try dripFeed(input) }
    }

    @Test func malformedLengthFailsBeforeItsLineEnds() throws {
        #expect(throws: RESPProtocolError.invalidMultibulkLength) { try decodeAll("*x") }
        #expect(throws: RESPProtocolError.invalidBulkLength) { try decodeAll("*1\r\n$1a") }
    }

    @Test(arguments: ["*1\r\n$3\r\nfooX\r\n", "*1\r\n$3\r\nfoo\rX", "*1\r\n$3\r\nfoo\n\r", "*1\r\n$3\r\nfooX"])
    func bulkNotFollowedByCRLFFails(input: String) throws {
        #expect(throws: RESPProtocolError.missingBulkTerminator) { try decodeAll(input) }
        #expect(throws: RESPProtocolError.missingBulkTerminator) { try dripFeed(input) }
    }

    @Test func inlineAndArrayRequestsPipelineTogether() throws {
        let input = "PING\r\n*1\r\n$4\r\nPING\r\nECHO hi\n*2\r\n$4\r\nECHO\r\n$5\r\nhello\r\n"
        let expected = [
            request("PING", inline: true), request("PING", inline: false),
            request("ECHO", "hi", inline: true), request("ECHO", "hello", inline: false),
        ]
        #expect(try decodeAll(input) == expected)
        #expect(try dripFeed(input) == expected)
    }

    @Test func manyPipelinedPingsDecodeOneAfterAnother() throws {
        let input = String(repeating: "*1\r\n$4\r\nPING\r\n", count: 16)
        #expect(try decodeAll(input) == Array(repeating: request("PING", inline: false), count: 16))
    }

    @Test func verifierAcceptsArrayRequestsFedInAnyChunking() throws {
        let binary: [UInt8] = [0x00, 0x0D, 0x0A, 0x2A, 0x24, 0xFF]
        try verify(bytes: [
            (Array("*1\r\n$4\r\nPING\r\n".utf8), [request("PING", inline: false)]),
            (Array("*0\r\n".utf8), []),
            (Array("*-1\r\n".utf8), []),
            (Array("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n".utf8), [request("SET", "k", "", inline: false)]),
            (
                Array("*2\r\n$4\r\nECHO\r\n$6\r\n".utf8) + binary + Array("\r\n".utf8),
                [request(bytes: [Array("ECHO".utf8), binary], inline: false)]
            ),
            (
                Array("*1\r\n$4\r\nPING\r\nPING\r\n".utf8),
                [request("PING", inline: false), request("PING", inline: true)]
            ),
        ])
    }
}
