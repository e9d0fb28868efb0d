import NIOCore
import OTPDomain
import RESP

/// One libFuzzer input: the first byte picks a chunk size, the rest is what a client sent.
///
/// The bytes are decoded twice, all at once and in chunks of that size (as separate reads would deliver
/// them). Both must give the same requests and the same error, whatever the bytes; every argument then
/// goes through the destination parser. A crash, a trap or a difference is a finding.
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
        for argument in request.strings { _ = try? Destination.parse(argument) }
    }
    return 0
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
