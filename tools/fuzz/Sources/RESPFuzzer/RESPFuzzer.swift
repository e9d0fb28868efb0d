import NIOCore
import OTPDomain
import RESP

/// One libFuzzer input: the first byte picks a chunk size, the rest is what a client sent.
///
/// The bytes are decoded twice, all at once and in chunks of that size (as separate reads would deliver
/// them). Both must give the same requests and the same error, whatever the bytes; every argument then
/// goes through the destination parser, and every request's arguments through ISSUE's and RECEIPT's parsers
/// (the domain's, the ones the server calls), whose results must hold their documented bounds. A crash, a
/// trap, a difference or a broken bound is a finding.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOneInput(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size > 0 else { return 0 }
    let chunk = Int(data[0]) % 16 + 1
    let bytes = Array(UnsafeBufferPointer(start: data + 1, count: size - 1))
    // Small limits, so that inputs the fuzzer can reach also cross them.
    let limits = RESPLimits(maxInlineLength: 64, maxArrayCount: 8, maxBulkLength: 64)

    let whole = decode([bytes[...]], limits: limits)
    let pieces = stride(from: 0, to: bytes.count, by: chunk).map { bytes[$0..<min($0 + chunk, bytes.count)] }
    let chunked = decode(pieces, limits: limits)
    if whole.requests != chunked.requests || whole.error != chunked.error {
        fatalError("decoding depends on how the bytes were split: \(whole) vs \(chunked) (chunk \(chunk))")
    }
    for request in whole.requests {
        precondition(!request.arguments.isEmpty, "a request without a command name")
        precondition(request.arguments.count <= limits.maxArrayCount, "more arguments than the limit")
        let strings = request.strings
        for argument in strings { _ = try? Destination.parse(argument) }
        checkArgumentParsers(Array(strings.dropFirst()))
    }
    return 0
}

/// Parses `args` as ISSUE's and as RECEIPT's arguments; what parses must be within the protocol's bounds.
func checkArgumentParsers(_ args: [String]) {
    if let r = try? IssueRequest.parse(args, fingerprint: { $0.joined(separator: "\u{0}") }) {
        precondition(Validation.isSessionID(r.session), "ISSUE accepted a bad session id")
        precondition((1...8).contains(r.destinations.count), "ISSUE accepted \(r.destinations.count) destinations")
        precondition(Set(r.destinations.map(\.channel)).count == r.destinations.count, "two destinations, one channel")
        precondition(IntegerOption.ttl.range.contains(r.ttlSeconds), "TTL out of range")
        precondition(IntegerOption.digits.range.contains(r.digits), "DIGITS out of range")
        precondition(IntegerOption.maxAttempts.range.contains(r.maxAttempts), "MAXATTEMPTS out of range")
        precondition(r.fingerprint == r.fingerprintParts.joined(separator: "\u{0}"), "fingerprint not of the request")
    }
    if args.count >= 2, case .recordReceipt(_, _, let detail)? = try? Arguments.receipt(
        channel: args[0],
        outcome: args[1],
        detail: args.count > 2 ? args[2] : nil
    ) {
        precondition((detail?.utf8.count ?? 0) <= 256, "RECEIPT accepted a detail over 256 bytes")
    }
}

/// Decodes `pieces` as successive reads: the requests, and the framing error that ended the input, if any.
func decode(_ pieces: [ArraySlice<UInt8>], limits: RESPLimits) -> (requests: [RESPRequest], error: RESPProtocolError?) {
    var decoder = RESPRequestDecoder(limits: limits)
    var buffer = ByteBuffer()
    var requests: [RESPRequest] = []
    do {
        for piece in pieces {
            buffer.writeBytes(piece)
            while let request = try decoder.decode(buffer: &buffer) { requests.append(request) }
        }
        while let request = try decoder.decodeLast(buffer: &buffer, seenEOF: true) { requests.append(request) }
        return (requests, nil)
    } catch let error as RESPProtocolError {
        return (requests, error)
    } catch {
        fatalError("the decoder threw something other than RESPProtocolError: \(error)")
    }
}

// SwiftPM links an executable's entry point as `<Target>_main`; hand it to libFuzzer's driver, which parses
// libFuzzer's flags (-runs=, -max_total_time=, corpus directories) and calls `fuzzOneInput`.
@_silgen_name("LLVMFuzzerRunDriver")
func runFuzzerDriver(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>,
    _ callback: @convention(c) (UnsafePointer<UInt8>, Int) -> CInt
) -> CInt

@_cdecl("RESPFuzzer_main")
public func fuzzerMain(
    _ argc: CInt,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?
) -> CInt {
    var argc = argc
    var argv = argv
    return runFuzzerDriver(&argc, &argv) { data, size in fuzzOneInput(data, size) }
}
