import NIOCore
import RESP
import Testing

@Suite("Reply encoding")
struct RESPValueEncodingTests {
    @Test(arguments: [2, 3])
    func simpleStringEncodesWithPlus(version: Int) {
        #expect(encoded(.simpleString("OK"), version) == "+OK\r\n")
        #expect(encoded(.simpleString("a\r\nb"), version) == "+a  b\r\n")
    }

    @Test(arguments: [2, 3])
    func errorEncodesWithMinusAndFlattensLineBreaks(version: Int) {
        #expect(encoded(.error("ERR unknown command"), version) == "-ERR unknown command\r\n")
        #expect(encoded(.error("PROTO bad\r\nthing\n"), version) == "-PROTO bad  thing \r\n")
    }

    @Test(arguments: [2, 3])
    func integerEncodesInDecimal(version: Int) {
        #expect(encoded(.integer(0), version) == ":0\r\n")
        #expect(encoded(.integer(1), version) == ":1\r\n")
        #expect(encoded(.integer(-42), version) == ":-42\r\n")
        #expect(encoded(.integer(.max), version) == ":9223372036854775807\r\n")
        #expect(encoded(.integer(.min), version) == ":-9223372036854775808\r\n")
    }

    @Test(arguments: [2, 3])
    func bulkStringIsLengthPrefixedAndBinarySafe(version: Int) {
        #expect(encoded(.bulk("foo"), version) == "$3\r\nfoo\r\n")
        #expect(encoded(.bulk(""), version) == "$0\r\n\r\n")
        var buffer = ByteBuffer()
        RESPValue.bulkString(ByteBuffer(bytes: [0x00, 0x0D, 0x0A, 0xFF])).encode(
            into: &buffer,
            protocolVersion: version
        )
        #expect(
            Array(buffer.readableBytesView) == Array("$4\r\n".utf8) + [0x00, 0x0D, 0x0A, 0xFF] + Array("\r\n".utf8)
        )
    }

    @Test func bulkStringEncodesOnlyReadableBytes() {
        var source = ByteBuffer(string: "xxhello")
        source.moveReaderIndex(forwardBy: 2)
        #expect(encoded(.bulkString(source), 2) == "$5\r\nhello\r\n")
    }

    @Test func nullDiffersBetweenVersions() {
        #expect(encoded(.null, 2) == "$-1\r\n")
        #expect(encoded(.null, 3) == "_\r\n")
    }

    @Test(arguments: [2, 3])
    func arrayEncodesCountThenElements(version: Int) {
        #expect(encoded(.array([]), version) == "*0\r\n")
        #expect(
            encoded(.array([.integer(1), .bulk("a"), .array([.simpleString("OK")])]), version)
                == "*3\r\n:1\r\n$1\r\na\r\n*1\r\n+OK\r\n"
        )
    }

    @Test func arrayContainingNullUsesVersionSpecificNull() {
        #expect(encoded(.array([.null]), 2) == "*1\r\n$-1\r\n")
        #expect(encoded(.array([.null]), 3) == "*1\r\n_\r\n")
    }

    @Test func mapIsFlatArrayInRESP2AndPercentInRESP3() {
        let map = RESPValue.map([(key: "server", value: .bulk("otpd")), (key: "proto", value: .integer(3))])
        #expect(encoded(map, 2) == "*4\r\n$6\r\nserver\r\n$4\r\notpd\r\n$5\r\nproto\r\n:3\r\n")
        #expect(encoded(map, 3) == "%2\r\n$6\r\nserver\r\n$4\r\notpd\r\n$5\r\nproto\r\n:3\r\n")
        #expect(encoded(.map([]), 2) == "*0\r\n")
        #expect(encoded(.map([]), 3) == "%0\r\n")
    }

    @Test func nestedArrayOfMapsEncodesInBothVersions() {
        let value = RESPValue.array([
            .map([(key: "id", value: .integer(1)), (key: "tags", value: .array([.bulk("x")]))]),
            .map([(key: "id", value: .null)]),
        ])
        #expect(
            encoded(value, 2)
                == "*2\r\n*4\r\n$2\r\nid\r\n:1\r\n$4\r\ntags\r\n*1\r\n$1\r\nx\r\n*2\r\n$2\r\nid\r\n$-1\r\n"
        )
        #expect(
            encoded(value, 3)
                == "*2\r\n%2\r\n$2\r\nid\r\n:1\r\n$4\r\ntags\r\n*1\r\n$1\r\nx\r\n%1\r\n$2\r\nid\r\n_\r\n"
        )
    }

    @Test func mapKeysAreEncodedAsUTF8ByteLength() {
        #expect(encoded(.map([(key: "caf\u{e9}", value: .integer(1))]), 3) == "%1\r\n$5\r\ncaf\u{e9}\r\n:1\r\n")
    }

    @Test func writeRESPAppendsTheSameBytesAsEncode() {
        var buffer = ByteBuffer(string: "prefix")
        buffer.writeRESP(.array([.simpleString("OK"), .null]), protocolVersion: 3)
        #expect(String(buffer: buffer) == "prefix*2\r\n+OK\r\n_\r\n")
    }

    @Test func equalityComparesCasesAndMapPairsInOrder() {
        #expect(RESPValue.bulk("a") == .bulkString(ByteBuffer(string: "a")))
        #expect(RESPValue.bulk("a") != .simpleString("a"))
        #expect(RESPValue.null != .array([]))
        #expect(RESPValue.map([(key: "a", value: .integer(1))]) == .map([(key: "a", value: .integer(1))]))
        #expect(RESPValue.map([(key: "a", value: .integer(1))]) != .map([(key: "a", value: .integer(2))]))
        #expect(RESPValue.map([(key: "a", value: .integer(1))]) != .map([(key: "b", value: .integer(1))]))
        #expect(
            RESPValue.map([(key: "a", value: .null), (key: "b", value: .null)])
                != .map([(key: "b", value: .null), (key: "a", value: .null)])
        )
        #expect(RESPValue.array([.map([])]) == .array([.map([])]))
    }
}
