import Foundation

/// One SMTP reply: its code and the text of each line (kept for capabilities and the queue id, never reported).
struct SMTPReply: Sendable, Equatable {
    /// The three-digit code, 200 to 599.
    var code: Int
    /// Each line's text after the code and its separator.
    var lines: [String]

    /// The RFC 3463 enhanced status code at the start of the first line, when its class matches the code.
    var enhancedCode: String? {
        guard let first = lines.first else { return nil }
        let token = first.prefix { $0 != " " }
        let parts = token.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0] == String(code / 100),
            parts[1].count >= 1, parts[1].count <= 3, parts[2].count >= 1, parts[2].count <= 3,
            parts.allSatisfy({ $0.allSatisfy { $0.isASCII && $0.isNumber } })
        else { return nil }
        return String(token)
    }

    /// `SMTP 550 5.1.1 at RCPT`: the code, the enhanced code if any, and the stage; nothing of the text.
    func summary(at stage: String) -> String {
        "SMTP \(code)" + (enhancedCode.map { " " + $0 } ?? "") + " at " + stage
    }

    /// The queue id in a 250 after the final dot, in a form Postfix (`queued as 4F3A21C0`) or Exim (`id=1abc-...`)
    /// use: a whole token of letters, digits, `.`, `-` and `_` (at most 64), so no part of an address can pass.
    var queueId: String {
        for line in lines {
            for marker in ["queued as ", "id="] {
                guard let range = line.range(of: marker, options: .caseInsensitive) else { continue }
                let rest = line[range.upperBound...]
                let token = rest.prefix {
                    $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "." || $0 == "-" || $0 == "_")
                }
                // Whole tokens only: `queued as user@example.com` must not yield `user`.
                let next = rest.dropFirst(token.count).first
                if !token.isEmpty && token.count <= 64 && (next == nil || next == " " || next == "\t") {
                    return String(token)
                }
            }
        }
        return ""
    }
}

/// Why the server's bytes are not a reply we accept.
enum SMTPReplyError: Error, Sendable, Equatable {
    /// A line longer than `SMTPReplyDecoder.maxLineLength`.
    case lineTooLong
    /// A reply of more than `SMTPReplyDecoder.maxLines` lines.
    case tooManyLines
    /// Not `ddd text` / `ddd-text`, or a code that changes between the lines of one reply.
    case malformed

    var reason: String {
        switch self {
        case .lineTooLong: "reply line too long"
        case .tooManyLines: "reply with too many lines"
        case .malformed: "malformed reply"
        }
    }
}

/// Frames replies out of the bytes the server sends: `ddd-text` lines continue a reply, `ddd text` ends it.
///
/// Bounded so a hostile server cannot make us buffer without limit: a line (with its CRLF) of at most 2 KiB and
/// at most 100 lines per reply. A bare LF also ends a line.
struct SMTPReplyDecoder: Sendable {
    /// The longest line accepted, CRLF included.
    static let maxLineLength = 2048
    /// The most lines in one reply.
    static let maxLines = 100

    private var code: Int?
    private var lines: [String] = []

    /// A decoder with nothing pending.
    init() {}

    /// The next complete reply, consuming its bytes; nil when `buffer` holds no complete one yet.
    mutating func next(from buffer: inout ReceivedBytes) throws(SMTPReplyError) -> SMTPReply? {
        while let line = try buffer.nextLine(limit: Self.maxLineLength) {
            if let reply = try take(line) { return reply }
        }
        return nil
    }

    /// Adds one line (without its line ending); returns the reply it completes.
    mutating func take(_ line: [UInt8]) throws(SMTPReplyError) -> SMTPReply? {
        guard line.count >= 3, line[0...2].allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) })
        else { throw .malformed }
        let value = line[0...2].reduce(0) { $0 * 10 + Int($1 - UInt8(ascii: "0")) }
        guard (200...599).contains(value) else { throw .malformed }
        if let code, code != value { throw .malformed }
        var last = true
        var text = line.dropFirst(3)
        if let separator = text.first {
            switch separator {
            case UInt8(ascii: " "): last = true
            case UInt8(ascii: "-"): last = false
            default: throw .malformed
            }
            text = text.dropFirst()
        }
        guard lines.count < Self.maxLines else { throw .tooManyLines }
        code = value
        lines.append(String(decoding: text, as: UTF8.self))
        guard last else { return nil }
        let reply = SMTPReply(code: value, lines: lines)
        code = nil
        lines = []
        return reply
    }
}

/// Bytes received and not yet framed into lines.
struct ReceivedBytes: Sendable {
    private var bytes: [UInt8] = []
    private var start = 0

    /// Nothing buffered.
    init() {}

    /// Whether no byte is waiting.
    var isEmpty: Bool { start == bytes.count }

    /// Appends received bytes.
    mutating func append<S: Sequence>(_ received: S) where S.Element == UInt8 {
        if start > 0 && start == bytes.count {
            bytes.removeAll(keepingCapacity: true)
            start = 0
        }
        bytes.append(contentsOf: received)
    }

    /// Forgets every buffered byte.
    mutating func removeAll() {
        bytes.removeAll()
        start = 0
    }

    /// The next line without its CRLF (or LF), consumed; nil if none is complete. Throws when a line (ending
    /// included) exceeds `limit` bytes, complete or not.
    mutating func nextLine(limit: Int) throws(SMTPReplyError) -> [UInt8]? {
        let end = min(bytes.count, start + limit)
        guard let lf = bytes[start..<end].firstIndex(of: UInt8(ascii: "\n")) else {
            if bytes.count - start >= limit { throw .lineTooLong }
            return nil
        }
        var line = Array(bytes[start..<lf])
        if line.last == UInt8(ascii: "\r") { line.removeLast() }
        start = lf + 1
        if start == bytes.count {
            bytes.removeAll(keepingCapacity: true)
            start = 0
        }
        return line
    }
}

/// What the server's EHLO reply offers, from its lines after the first (keywords are case-insensitive).
struct SMTPCapabilities: Sendable, Equatable {
    /// `STARTTLS` (RFC 3207).
    var startTLS = false
    /// The `AUTH` mechanisms (RFC 4954), upper-cased; `AUTH=` (an old form) counts too.
    var authMechanisms: Set<String> = []
    /// Whether `AUTH` was offered at all.
    var auth = false
    /// `SIZE` (RFC 1870) and its limit, 0 when none is given.
    var size: Int?
    /// `8BITMIME` (RFC 6152).
    var eightBitMIME = false
    /// `PIPELINING` (RFC 2920); not used.
    var pipelining = false
    /// `ENHANCEDSTATUSCODES` (RFC 2034).
    var enhancedStatusCodes = false

    /// None: what HELO and a discarded EHLO leave.
    init() {}

    /// Reads a 250 reply to EHLO; its first line is the server's name and greeting.
    init(ehlo reply: SMTPReply) {
        for line in reply.lines.dropFirst() {
            let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            guard let first = words.first else { continue }
            let keyword = first.uppercased()
            switch keyword {
            case "STARTTLS": startTLS = true
            case "8BITMIME": eightBitMIME = true
            case "PIPELINING": pipelining = true
            case "ENHANCEDSTATUSCODES": enhancedStatusCodes = true
            case "SIZE": size = words.count > 1 ? Int(words[1]) ?? 0 : 0
            case "AUTH":
                auth = true
                authMechanisms.formUnion(words.dropFirst().map { $0.uppercased() })
            default:
                if keyword.hasPrefix("AUTH=") {
                    auth = true
                    authMechanisms.insert(String(keyword.dropFirst(5)))
                    authMechanisms.formUnion(words.dropFirst().map { $0.uppercased() })
                }
            }
        }
    }
}
