import Foundation

/// A mailbox: an optional display name and an address, as in `AcmeApp <no-reply@acme.example>`.
public struct SMTPAddress: Sendable, Equatable {
    /// The display name, if any (any Unicode; encoded on the way out).
    public var displayName: String?
    /// The address, `local@domain`.
    public var address: String

    /// Creates a mailbox; the address is checked when a mail is sent (see `parse` to check it now).
    public init(displayName: String? = nil, address: String) {
        self.displayName = displayName
        self.address = address
    }

    /// Reads `Name <local@domain>`, `"Name, Inc." <local@domain>`, `<local@domain>` or a bare `local@domain`.
    public static func parse(_ text: String) throws(SMTPAddressError) -> SMTPAddress {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        guard !trimmed.isEmpty else { throw SMTPAddressError("the address is empty") }
        var name: String?
        var address = trimmed
        if trimmed.hasSuffix(">") {
            guard let open = trimmed.lastIndex(of: "<") else {
                throw SMTPAddressError("'\(text)' has a '>' without a '<'")
            }
            address = String(trimmed[trimmed.index(after: open)..<trimmed.index(before: trimmed.endIndex)])
            var phrase = trimmed[..<open].trimmingCharacters(in: .whitespaces)
            if phrase.hasPrefix("\"") {
                guard phrase.count >= 2, phrase.hasSuffix("\"") else {
                    throw SMTPAddressError("'\(text)' has an unterminated quoted display name")
                }
                phrase = unescapeQuoted(String(phrase.dropFirst().dropLast()))
            }
            if phrase.contains(where: { $0.isNewline || $0 == "<" || $0 == ">" }) {
                throw SMTPAddressError("the display name in '\(text)' contains a line break, '<' or '>'")
            }
            name = phrase.isEmpty ? nil : phrase
        } else if trimmed.contains("<") {
            throw SMTPAddressError("'\(text)' has a '<' without a closing '>'")
        }
        guard SMTPSyntax.isValidAddress(address) else {
            throw SMTPAddressError(
                "'\(address)' is not an address of the form local@domain (ASCII, no spaces, quotes or brackets)"
            )
        }
        return SMTPAddress(displayName: name, address: address)
    }

    /// The domain part of the address (after the last `@`), or the whole address without one.
    var domain: String {
        guard let at = address.lastIndex(of: "@") else { return address }
        return String(address[address.index(after: at)...])
    }

    private static func unescapeQuoted(_ s: String) -> String {
        var out = ""
        var escaped = false
        for c in s {
            if escaped {
                out.append(c)
                escaped = false
            } else if c == "\\" {
                escaped = true
            } else {
                out.append(c)
            }
        }
        return out
    }
}

/// Why a text is not a usable mailbox.
public struct SMTPAddressError: Error, Sendable, Equatable, CustomStringConvertible {
    /// What is wrong, naming the text (a configuration value, not a recipient).
    public var message: String

    /// Creates an error with a message.
    public init(_ message: String) { self.message = message }

    /// The message.
    public var description: String { message }
}

/// One e-mail to one recipient: the envelope and what `MIMEMessage.render` turns into the message.
public struct SMTPMail: Sendable {
    /// The sender: `MAIL FROM` and the `From` header.
    public var from: SMTPAddress
    /// The one recipient's address: `RCPT TO` and the `To` header.
    public var to: String
    /// The subject, any Unicode (line breaks become spaces).
    public var subject: String
    /// The text/plain part.
    public var text: String
    /// The text/html part; with it the body is multipart/alternative.
    public var html: String?
    /// otpd's message id; the header is `Message-ID: <messageId@domain-of-from>`.
    public var messageId: String
    /// The `Date` header.
    public var date: Date
    /// More header fields, in order. `Auto-Submitted: auto-generated` is added unless given here; fields the
    /// renderer writes itself (From, To, Subject, Date, Message-ID, MIME-Version, Content-*) are ignored.
    public var extraHeaders: [(String, String)]

    /// Creates a mail.
    public init(
        from: SMTPAddress,
        to: String,
        subject: String,
        text: String,
        html: String? = nil,
        messageId: String,
        date: Date = Date(),
        extraHeaders: [(String, String)] = []
    ) {
        self.from = from
        self.to = to
        self.subject = subject
        self.text = text
        self.html = html
        self.messageId = messageId
        self.date = date
        self.extraHeaders = extraHeaders
    }
}

/// The syntax checks shared by the renderer, the client and the state machine.
/// The syntax checks of addresses and names, before anything is sent.
public enum SMTPSyntax {
    /// `atext` of RFC 5322: letters, digits and ``!#$%&'*+-/=?^_`{|}~``.
    static func isAtext(_ b: UInt8) -> Bool {
        switch b {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"):
            true
        default:
            Array("!#$%&'*+-/=?^_`{|}~".utf8).contains(b)
        }
    }

    /// A dot-atom local part and a domain (letters, digits, `-` and `.`, or an address literal `[...]`), ASCII
    /// only, at most 254 octets: nothing that could break out of `<...>` in a command or a header.
    static func isValidAddress(_ address: String) -> Bool {
        let bytes = Array(address.utf8)
        guard bytes.count <= 254, let at = bytes.lastIndex(of: UInt8(ascii: "@")) else { return false }
        let local = bytes[..<at]
        let domain = bytes[(at + 1)...]
        guard isDotAtom(local), local.count <= 64, !domain.isEmpty else { return false }
        if domain.first == UInt8(ascii: "[") {
            guard domain.last == UInt8(ascii: "]"), domain.count > 2 else { return false }
            return domain.dropFirst().dropLast().allSatisfy { b in
                b > 32 && b < 127 && b != UInt8(ascii: "[") && b != UInt8(ascii: "]") && b != UInt8(ascii: "\\")
            }
        }
        return domain.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false).allSatisfy { label in
            !label.isEmpty && label.count <= 63
                && label.allSatisfy { b in
                    (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(b)
                        || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(b)
                        || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(b) || b == UInt8(ascii: "-")
                        || b == UInt8(ascii: "_")
                }
        }
    }

    /// `dot-atom-text`: atext runs separated by single dots.
    static func isDotAtom(_ bytes: ArraySlice<UInt8>) -> Bool {
        guard !bytes.isEmpty else { return false }
        return bytes.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false).allSatisfy { part in
            !part.isEmpty && part.allSatisfy(isAtext)
        }
    }

    /// An EHLO argument: printable ASCII without spaces, at most 255 octets.
    public static func isValidHelo(_ name: String) -> Bool {
        let bytes = Array(name.utf8)
        return !bytes.isEmpty && bytes.count <= 255 && bytes.allSatisfy { $0 > 32 && $0 < 127 }
    }
}
