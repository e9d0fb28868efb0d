// RESP replies as the load generator needs them: where one ends, and whether it is an error (and of which kind).

/// One complete reply at the front of a buffer.
struct Reply {
    /// Bytes the reply takes.
    var length: Int
    /// The first word of an error reply (`RATELIMITED`, `ERR`, ...); nil for every other reply.
    var errorKind: String?
}

/// A reply the parser cannot read: the connection is abandoned and its outstanding commands count as errors.
struct MalformedReply: Error {
    var reason: String
}

enum ReplyParser {
    /// The reply that starts at `start` in `bytes[..<end]`, or nil when it is not complete yet. Reads RESP2 and
    /// RESP3: simple strings, errors, integers, bulk strings, arrays, and RESP3 maps, sets, nulls, booleans,
    /// doubles, big numbers, verbatim strings and pushes.
    static func parse(
        _ bytes: UnsafeBufferPointer<UInt8>,
        from start: Int,
        to end: Int
    ) throws(MalformedReply)
        -> Reply?
    {
        guard let (position, errorKind) = try element(bytes, start, end) else { return nil }
        return Reply(length: position - start, errorKind: errorKind)
    }

    /// The index just past the line that starts at `start` (after its `\r\n`), and the index of its `\r`.
    private static func line(_ bytes: UnsafeBufferPointer<UInt8>, _ start: Int, _ end: Int) -> (next: Int, cr: Int)? {
        var i = start
        while i + 1 < end {
            if bytes[i] == 13 && bytes[i + 1] == 10 { return (i + 2, i) }
            i += 1
        }
        return nil
    }

    private static func integer(
        _ bytes: UnsafeBufferPointer<UInt8>,
        _ from: Int,
        _ to: Int
    ) throws(MalformedReply)
        -> Int
    {
        var i = from
        var negative = false
        if i < to && bytes[i] == UInt8(ascii: "-") {
            negative = true
            i += 1
        }
        guard i < to else { throw MalformedReply(reason: "empty length") }
        var value = 0
        while i < to {
            let digit = Int(bytes[i]) - 48
            guard digit >= 0 && digit <= 9 else { throw MalformedReply(reason: "bad length") }
            value = value * 10 + digit
            i += 1
        }
        return negative ? -value : value
    }

    private static func element(
        _ bytes: UnsafeBufferPointer<UInt8>,
        _ start: Int,
        _ end: Int
    ) throws(MalformedReply)
        -> (Int, String?)?
    {
        guard start < end else { return nil }
        guard let (next, cr) = line(bytes, start + 1, end) else { return nil }
        switch bytes[start] {
        case UInt8(ascii: "+"), UInt8(ascii: ":"), UInt8(ascii: "_"), UInt8(ascii: "#"), UInt8(ascii: ","),
            UInt8(ascii: "("):
            return (next, nil)
        case UInt8(ascii: "-"):
            var wordEnd = start + 1
            while wordEnd < cr && bytes[wordEnd] != UInt8(ascii: " ") { wordEnd += 1 }
            let word = String(decoding: UnsafeBufferPointer(rebasing: bytes[(start + 1)..<wordEnd]), as: UTF8.self)
            return (next, word.isEmpty ? "ERR" : word)
        case UInt8(ascii: "$"), UInt8(ascii: "="), UInt8(ascii: "!"):
            let length = try integer(bytes, start + 1, cr)
            if length < 0 { return (next, nil) }
            guard next + length + 2 <= end else { return nil }
            return (next + length + 2, bytes[start] == UInt8(ascii: "!") ? "ERR" : nil)
        case UInt8(ascii: "*"), UInt8(ascii: "~"), UInt8(ascii: ">"), UInt8(ascii: "%"), UInt8(ascii: "|"):
            var count = try integer(bytes, start + 1, cr)
            if count < 0 { return (next, nil) }
            if bytes[start] == UInt8(ascii: "%") || bytes[start] == UInt8(ascii: "|") { count *= 2 }
            var position = next
            for _ in 0..<count {
                guard let (after, _) = try element(bytes, position, end) else { return nil }
                position = after
            }
            return (position, nil)
        default:
            throw MalformedReply(reason: "unknown reply type \(bytes[start])")
        }
    }
}

/// A command as a RESP array of bulk strings.
func encodeCommand(_ arguments: [String], into out: inout [UInt8]) {
    out.append(contentsOf: Array("*\(arguments.count)\r\n".utf8))
    for argument in arguments {
        let bytes = Array(argument.utf8)
        out.append(contentsOf: Array("$\(bytes.count)\r\n".utf8))
        out.append(contentsOf: bytes)
        out.append(13)
        out.append(10)
    }
}
