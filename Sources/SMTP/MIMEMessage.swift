import Foundation

/// Renders a mail as an RFC 5322 message with MIME (RFC 2045-2047) parts.
///
/// Every line ends in CRLF and none exceeds 998 octets: the parts are quoted-printable UTF-8 (lines of at most 76),
/// header fields are folded, and a non-ASCII subject or display name becomes RFC 2047 encoded words
/// (`=?UTF-8?B?...?=`, at most 60 characters each). Control characters in header values (CR and LF included)
/// become spaces, so no value can start a header field of its own.
public enum MIMEMessage {
    /// The whole message (header fields, blank line, body), CRLF lines, before dot-stuffing. With `html` the body
    /// is multipart/alternative (text first, then HTML) under a random boundary; without it, text/plain.
    public static func render(_ mail: SMTPMail) -> String {
        var random = SystemRandomNumberGenerator()
        let boundary = "=_otpd_" + (0..<3).map { _ in hex(random.next() as UInt64) }.joined()
        return render(mail, boundary: boundary)
    }

    /// The fields the renderer writes itself; extra headers with these names are ignored.
    static let ownFields: Set<String> = [
        "from", "to", "subject", "date", "message-id", "mime-version", "content-type",
        "content-transfer-encoding",
    ]

    /// `render` with a given boundary. A boundary starting `=_` cannot occur in quoted-printable text, where `=`
    /// is always followed by two hex digits or a line break.
    static func render(_ mail: SMTPMail, boundary: String) -> String {
        var fields: [String] = []
        fields.append(mailbox(mail.from))
        fields.append("To: " + sanitized(mail.to).trimmingCharacters(in: .whitespaces))
        fields.append(unstructured("Subject", mail.subject))
        fields.append("Date: " + date(mail.date))
        fields.append("Message-ID: " + messageID(mail.messageId, domain: mail.from.domain))
        fields.append("MIME-Version: 1.0")
        let extra = mail.extraHeaders.filter { isFieldName($0.0) && !ownFields.contains($0.0.lowercased()) }
        if !extra.contains(where: { $0.0.lowercased() == "auto-submitted" }) {
            fields.append("Auto-Submitted: auto-generated")
        }
        for (name, value) in extra { fields.append(unstructured(name, value)) }

        let plainType = "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable"
        guard let html = mail.html else {
            fields.append(plainType)
            return fields.joined(separator: "\r\n") + "\r\n\r\n" + quotedPrintable(mail.text) + "\r\n"
        }
        fields.append("Content-Type: multipart/alternative; boundary=\"\(boundary)\"")
        let htmlType = "Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable"
        return fields.joined(separator: "\r\n") + "\r\n\r\n"
            + "--\(boundary)\r\n\(plainType)\r\n\r\n\(quotedPrintable(mail.text))\r\n"
            + "--\(boundary)\r\n\(htmlType)\r\n\r\n\(quotedPrintable(html))\r\n"
            + "--\(boundary)--\r\n"
    }

    // MARK: Header fields

    /// `From: Name <addr>`: the name as atoms, a quoted string, or encoded words on lines of their own.
    static func mailbox(_ from: SMTPAddress) -> String {
        let address = sanitized(from.address).trimmingCharacters(in: .whitespaces)
        let name = sanitized(from.displayName ?? "").trimmingCharacters(in: .whitespaces)
        guard !name.isEmpty else { return "From: " + address }
        if needsEncoding(name) {
            return "From: " + encodedWords(name).joined(separator: "\r\n ") + "\r\n <\(address)>"
        }
        let plain = name.utf8.allSatisfy { SMTPSyntax.isAtext($0) || $0 == UInt8(ascii: " ") }
        let phrase =
            plain
            ? name
            : "\"" + name.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
                + "\""
        return fold("From", phrase + " <\(address)>")
    }

    /// An unstructured field (RFC 5322 3.2.5), folded at spaces, or as encoded words when it needs them.
    static func unstructured(_ name: String, _ value: String) -> String {
        let text = sanitized(value).trimmingCharacters(in: .whitespaces)
        guard needsEncoding(text) else { return fold(name, text) }
        let words = encodedWords(text)
        // A line holding encoded words is at most 76 characters (RFC 2047 2).
        let first = name.utf8.count + 2 + (words.first?.utf8.count ?? 0) <= 76 ? " " : "\r\n "
        return name + ":" + first + words.joined(separator: "\r\n ")
    }

    /// Whether a value goes out as encoded words: non-ASCII, text that looks like an encoded word, or a run
    /// without spaces too long to fold under 998 octets.
    static func needsEncoding(_ text: String) -> Bool {
        if text.unicodeScalars.contains(where: { !$0.isASCII }) || text.contains("=?") { return true }
        return text.split(separator: " ").contains { $0.utf8.count > 900 }
    }

    /// `=?UTF-8?B?...?=` words of at most 36 octets of UTF-8 each (60 characters), never splitting a character
    /// (a grapheme cluster, or a scalar when a cluster alone is longer).
    static func encodedWords(_ text: String) -> [String] {
        let limit = 36
        var chunks: [[UInt8]] = []
        var current: [UInt8] = []
        func add(_ bytes: [UInt8]) {
            if current.count + bytes.count > limit && !current.isEmpty {
                chunks.append(current)
                current = []
            }
            current += bytes
        }
        for character in text {
            let bytes = Array(String(character).utf8)
            if bytes.count <= limit {
                add(bytes)
            } else {
                for scalar in character.unicodeScalars { add(Array(String(scalar).utf8)) }
            }
        }
        if !current.isEmpty { chunks.append(current) }
        return chunks.map { "=?UTF-8?B?" + Data($0).base64EncodedString() + "?=" }
    }

    /// `Name: value` with a line break inserted before a space wherever a line would pass 78 characters.
    static func fold(_ name: String, _ value: String) -> String {
        var out = name + ":"
        var lineLength = out.utf8.count
        var pending = " "
        var started = false
        func flush() {
            guard pending.contains(where: { $0 != " " }) else { return }
            if started && lineLength + pending.utf8.count > 78 {
                out += "\r\n"
                lineLength = 0
            }
            out += pending
            lineLength += pending.utf8.count
            pending = ""
            started = true
        }
        var inWord = false
        for c in value {
            if c == " " {
                if inWord { flush() }
                inWord = false
                pending.append(c)
            } else {
                inWord = true
                pending.append(c)
            }
        }
        flush()
        return out
    }

    /// The value with every control character (C0, DEL, C1, U+2028, U+2029) replaced by a space.
    static func sanitized(_ value: String) -> String {
        String(
            String.UnicodeScalarView(
                value.unicodeScalars.map { s in
                    s.value < 32 || (0x7F...0x9F).contains(s.value) || s.value == 0x2028 || s.value == 0x2029
                        ? " " : s
                }
            )
        )
    }

    /// A field name: printable ASCII without `:`, at most 76 characters (so its line stays short).
    static func isFieldName(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.count <= 76
            && name.utf8.allSatisfy { $0 > 32 && $0 < 127 && $0 != UInt8(ascii: ":") }
    }

    /// `<id@domain>`: characters outside a dot-atom become `_`; an unusable domain becomes `localhost`.
    static func messageID(_ id: String, domain: String) -> String {
        var left = String(
            decoding: id.utf8.map { SMTPSyntax.isAtext($0) || $0 == UInt8(ascii: ".") ? $0 : UInt8(ascii: "_") },
            as: UTF8.self
        )
        if !SMTPSyntax.isDotAtom(ArraySlice(left.utf8)) {
            left = left.replacingOccurrences(of: ".", with: "_")
        }
        if left.isEmpty { left = "otpd" }
        let right = SMTPSyntax.isValidAddress("x@" + domain) ? domain : "localhost"
        return "<\(left)@\(right)>"
    }

    /// RFC 5322 3.3 in UTC: `Tue, 01 Jul 2025 10:00:00 +0000`, English names whatever the locale.
    static func date(_ date: Date) -> String {
        let seconds = Int(date.timeIntervalSince1970.rounded(.down))
        let days = seconds >= 0 ? seconds / 86_400 : (seconds - 86_399) / 86_400
        let time = seconds - days * 86_400
        // Howard Hinnant's civil_from_days.
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let day = doy - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        let year = yoe + era * 400 + (month <= 2 ? 1 : 0)
        let weekday = (days % 7 + 10) % 7  // 1970-01-01 was a Thursday (index 3)
        let weekdays = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        func two(_ n: Int) -> String { n < 10 ? "0\(n)" : "\(n)" }
        return "\(weekdays[weekday]), \(two(day)) \(months[month - 1]) \(year) "
            + "\(two(time / 3600)):\(two(time / 60 % 60)):\(two(time % 60)) +0000"
    }

    // MARK: Quoted-printable

    /// RFC 2045 6.7 quoted-printable of the UTF-8 text: every line ending (CRLF, CR or LF) becomes a CRLF, lines
    /// are at most 76 characters (soft breaks `=`), spaces and tabs before a line end are encoded.
    static func quotedPrintable(_ text: String) -> String {
        lines(of: text).map(encodeLine).joined(separator: "\r\n")
    }

    /// The lines of a text, split at CRLF, CR and LF.
    static func lines(of text: String) -> [ArraySlice<UInt8>] {
        let bytes = Array(text.utf8)
        var lines: [ArraySlice<UInt8>] = []
        var start = 0
        var i = 0
        while i < bytes.count {
            if bytes[i] == UInt8(ascii: "\r") || bytes[i] == UInt8(ascii: "\n") {
                lines.append(bytes[start..<i])
                if bytes[i] == UInt8(ascii: "\r") && i + 1 < bytes.count && bytes[i + 1] == UInt8(ascii: "\n") {
                    i += 1
                }
                start = i + 1
            }
            i += 1
        }
        lines.append(bytes[start..<bytes.count])
        return lines
    }

    private static func encodeLine(_ line: ArraySlice<UInt8>) -> String {
        var out = ""
        var length = 0
        for i in line.indices {
            let b = line[i]
            let token: String
            if b == UInt8(ascii: " ") || b == UInt8(ascii: "\t") {
                token = i == line.index(before: line.endIndex) ? "=" + hexByte(b) : String(UnicodeScalar(b))
            } else if b >= 33 && b <= 126 && b != UInt8(ascii: "=") {
                token = String(UnicodeScalar(b))
            } else {
                token = "=" + hexByte(b)
            }
            // 75 plus the soft break's `=` is 76.
            if length + token.utf8.count > 75 {
                out += "=\r\n"
                length = 0
            }
            out += token
            length += token.utf8.count
        }
        return out
    }

    private static func hexByte(_ b: UInt8) -> String {
        let digits = Array("0123456789ABCDEF")
        return String([digits[Int(b >> 4)], digits[Int(b & 0x0F)]])
    }

    private static func hex(_ n: UInt64) -> String {
        let s = String(n, radix: 16)
        return String(repeating: "0", count: 16 - s.count) + s
    }
}
