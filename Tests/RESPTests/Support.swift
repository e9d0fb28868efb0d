import NIOCore
import NIOTestUtils
import RESP

/// Builds a request from string arguments.
func request(_ arguments: String..., inline: Bool) -> RESPRequest {
    RESPRequest(arguments: arguments.map { ByteBuffer(string: $0) }, isInline: inline)
}

/// Builds a request from raw byte arguments.
func request(bytes arguments: [[UInt8]], inline: Bool) -> RESPRequest {
    RESPRequest(arguments: arguments.map { ByteBuffer(bytes: $0) }, isInline: inline)
}

/// Decodes everything decodable from one buffer holding `input`.
func decodeAll(_ input: String, limits: RESPLimits = .standard) throws -> [RESPRequest] {
    try decodeAll(Array(input.utf8), limits: limits)
}

/// Decodes everything decodable from one buffer holding `input`.
func decodeAll(_ input: [UInt8], limits: RESPLimits = .standard) throws -> [RESPRequest] {
    var decoder = RESPRequestDecoder(limits: limits)
    var buffer = ByteBuffer(bytes: input)
    var requests: [RESPRequest] = []
    while let request = try decoder.decode(buffer: &buffer) {
        requests.append(request)
    }
    return requests
}

/// Feeds `input` one byte at a time, decoding after each byte.
func dripFeed(_ input: String, limits: RESPLimits = .standard) throws -> [RESPRequest] {
    try dripFeed(Array(input.utf8), limits: limits)
}

/// Feeds `input` one byte at a time, decoding after each byte.
func dripFeed(_ input: [UInt8], limits: RESPLimits = .standard) throws -> [RESPRequest] {
    var decoder = RESPRequestDecoder(limits: limits)
    var buffer = ByteBuffer()
    var requests: [RESPRequest] = []
    for byte in input {
        buffer.writeInteger(byte)
        while let request = try decoder.decode(buffer: &buffer) {
            requests.append(request)
        }
    }
    return requests
}

/// Runs NIO's decoder verifier (drip, batched and shuffled feeding) over string inputs.
func verify(_ pairs: [(String, [RESPRequest])]) throws {
    try ByteToMessageDecoderVerifier.verifyDecoder(
        stringInputOutputPairs: pairs,
        decoderFactory: { RESPRequestDecoder() }
    )
}

/// Runs NIO's decoder verifier (drip, batched and shuffled feeding) over byte inputs.
func verify(bytes pairs: [([UInt8], [RESPRequest])]) throws {
    try ByteToMessageDecoderVerifier.verifyDecoder(
        inputOutputPairs: pairs.map { (ByteBuffer(bytes: $0.0), $0.1) },
        decoderFactory: { RESPRequestDecoder() }
    )
}

/// The encoding of `value` as a string.
func encoded(_ value: RESPValue, _ protocolVersion: Int) -> String {
    var buffer = ByteBuffer()
    value.encode(into: &buffer, protocolVersion: protocolVersion)
    return String(buffer: buffer)
}
