import NIOCore
import RESP
import Testing

@Suite("Framing limits")
struct LimitTests {
    @Test func standardLimitsMatchTheSpecification() {
        #expect(RESPLimits.standard == RESPLimits(maxInlineLength: 16384, maxArrayCount: 64, maxBulkLength: 65536))
    }

    @Test func inlineLineOfExactlyMaxLengthIsAccepted() throws {
        let line = String(repeating: "a", count: 16384)
        #expect(try decodeAll(line + "\r\n") == [request(line, inline: true)])
        #expect(try decodeAll(line + "\n") == [request(line, inline: true)])
    }

    @Test func maxLengthLineEndingInCRWaitsForLF() throws {
        var decoder = RESPRequestDecoder()
        var buffer = ByteBuffer(string: String(repeating: "a", count: 16384) + "\r")
        #expect(try decoder.decode(buffer: &buffer) == nil)
        buffer.writeString("\n")
        #expect(try decoder.decode(buffer: &buffer)?.arguments.first?.readableBytes == 16384)
    }

    @Test func oversizeInlineLineFailsBeforeNewlineArrives() throws {
        let bytes = String(repeating: "a", count: 16385)
        #expect(throws: RESPProtocolError.inlineTooLong) { try decodeAll(bytes) }
        #expect(throws: RESPProtocolError.inlineTooLong) { try dripFeed(bytes) }
        #expect(throws: RESPProtocolError.inlineTooLong) { try decodeAll(bytes + "\r\n") }
        #expect(throws: RESPProtocolError.inlineTooLong) { try decodeAll(String(repeating: "a", count: 16384) + "\rb") }
    }

    @Test func oversizeWhitespaceLineFailsToo() throws {
        #expect(throws: RESPProtocolError.inlineTooLong) { try decodeAll(String(repeating: " ", count: 20000)) }
    }

    @Test func arrayOfMaxCountIsAccepted() throws {
        let input = "*64\r\n" + String(repeating: "$1\r\nx\r\n", count: 64)
        let decoded = try decodeAll(input)
        #expect(decoded.count == 1)
        #expect(decoded.first?.arguments.count == 64)
    }

    @Test func arrayOverMaxCountFailsAsSoonAsHeaderIsRead() throws {
        #expect(throws: RESPProtocolError.tooManyArguments) { try decodeAll("*65\r\n") }
        #expect(throws: RESPProtocolError.tooManyArguments) { try decodeAll("*65") }
        #expect(throws: RESPProtocolError.tooManyArguments) { try dripFeed("*100000000000000000000000000\r\n") }
    }

    @Test func inlineRequestOverMaxCountFails() throws {
        let ok = Array(repeating: "x", count: 64).joined(separator: " ") + "\n"
        #expect(try decodeAll(ok).first?.arguments.count == 64)
        let tooMany = Array(repeating: "x", count: 65).joined(separator: " ") + "\n"
        #expect(throws: RESPProtocolError.tooManyArguments) { try decodeAll(tooMany) }
    }

    @Test func bulkOfMaxLengthIsAccepted() throws {
        let payload = String(repeating: "b", count: 65536)
        let input = "*2\r\n$4\r\nECHO\r\n$65536\r\n" + payload + "\r\n"
        #expect(try decodeAll(input) == [request("ECHO", payload, inline: false)])
    }

    @Test func oversizeBulkFailsAsSoonAsHeaderIsRead() throws {
        #expect(throws: RESPProtocolError.bulkTooLong) { try decodeAll("*2\r\n$4\r\nECHO\r\n$65537\r\n") }
        #expect(throws: RESPProtocolError.bulkTooLong) { try dripFeed("*1\r\n$65537") }
        #expect(throws: RESPProtocolError.bulkTooLong) { try decodeAll("*1\r\n$99999999999999999999999999\r\n") }
    }

    @Test func overlongHeaderLinesFailWithoutWaitingForCRLF() throws {
        let zeros = String(repeating: "0", count: 40)
        #expect(throws: RESPProtocolError.self) { try dripFeed("*" + zeros) }
        #expect(throws: RESPProtocolError.self) { try dripFeed("*1\r\n$" + zeros) }
        #expect(throws: RESPProtocolError.self) { try dripFeed("*" + String(repeating: "9", count: 40)) }
        #expect(throws: RESPProtocolError.self) { try dripFeed("*1\r\n$" + String(repeating: "9", count: 40)) }
        // Even with limits too large to trip on the value, a header line stays bounded.
        let huge = RESPLimits(maxInlineLength: 16384, maxArrayCount: .max, maxBulkLength: .max)
        #expect(throws: RESPProtocolError.self) { try dripFeed("*" + String(repeating: "1", count: 40), limits: huge) }
    }

    @Test func customLimitsAreEnforced() throws {
        let limits = RESPLimits(maxInlineLength: 4, maxArrayCount: 2, maxBulkLength: 3)
        #expect(try decodeAll("PING\r\n", limits: limits) == [request("PING", inline: true)])
        #expect(throws: RESPProtocolError.inlineTooLong) { try decodeAll("PINGS", limits: limits) }
        #expect(throws: RESPProtocolError.tooManyArguments) { try decodeAll("*3\r\n", limits: limits) }
        #expect(throws: RESPProtocolError.bulkTooLong) { try decodeAll("*1\r\n$4\r\n", limits: limits) }
        #expect(try decodeAll("*2\r\n$3\r\nGET\r\n$1\r\nk\r\n", limits: limits) == [request("GET", "k", inline: false)])
    }
}
