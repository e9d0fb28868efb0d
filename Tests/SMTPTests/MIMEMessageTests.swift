import Foundation
import Testing

@testable import SMTP

/// The rendered message: header fields, multipart structure, quoted-printable, encoded words, line limits.
@Suite struct MIMEMessageTests {
    private let boundary = "=_otpd_test0123456789"

    private func fields(_ message: String) -> [String] { headerFields(message).map(\.0) }

    @Test func headerFieldsAreTheOnesAMailNeeds() {
        let message = MIMEMessage.render(sampleMail(), boundary: boundary)
        let fields = headerFields(message)
        #expect(
            fields.map(\.0) == [
                "From", "To", "Subject", "Date", "Message-ID", "MIME-Version", "Auto-Submitted", "Content-Type",
            ]
        )
        let value = Dictionary(fields, uniquingKeysWith: { a, _ in a })
        #expect(value["From"] == "AcmeApp <no-reply@acme.example>")
        #expect(value["To"] == "user@example.com")
        #expect(value["Subject"] == "123456 is your AcmeApp code")
        #expect(value["Date"] == "Tue, 01 Jul 2025 10:00:00 +0000")
        #expect(value["Message-ID"] == "<m_0123456789abcdef01234567@acme.example>")
        #expect(value["MIME-Version"] == "1.0")
        #expect(value["Auto-Submitted"] == "auto-generated")
        #expect(value["Content-Type"] == "multipart/alternative; boundary=\"\(boundary)\"")
    }

    @Test func multipartAlternativeHasTextThenHTMLBetweenTheBoundaries() {
        let message = MIMEMessage.render(sampleMail(), boundary: boundary)
        let body = message.components(separatedBy: "\r\n\r\n").dropFirst().joined(separator: "\r\n\r\n")
        let parts = body.components(separatedBy: "--\(boundary)")
        // Before the first delimiter (empty preamble), text, HTML, and after the close delimiter "--\r\n".
        #expect(parts.count == 4)
        #expect(parts[0] == "")
        #expect(parts[3] == "--\r\n")
        #expect(message.hasSuffix("\r\n--\(boundary)--\r\n"))
        #expect(
            parts[1].hasPrefix(
                "\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
            )
        )
        #expect(
            parts[2].hasPrefix(
                "\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
            )
        )
        // After the part's header fields: the quoted-printable text, then the CRLF that belongs to the delimiter.
        let text = Array(parts[1].components(separatedBy: "\r\n\r\n").dropFirst().joined(separator: "\r\n\r\n").utf8)
        #expect(text.suffix(2) == [13, 10])
        #expect(
            String(decoding: decodeQuotedPrintable(String(decoding: text.dropLast(2), as: UTF8.self)), as: UTF8.self)
                == "Your code is 123456.\r\nIt expires in 10 minutes.\r\n"
        )
    }

    @Test func withoutHTMLTheMessageIsOneTextPart() {
        let message = MIMEMessage.render(sampleMail(html: nil), boundary: boundary)
        let value = Dictionary(headerFields(message), uniquingKeysWith: { a, _ in a })
        #expect(value["Content-Type"] == "text/plain; charset=utf-8")
        #expect(value["Content-Transfer-Encoding"] == "quoted-printable")
        #expect(!message.contains(boundary))
        #expect(message.hasSuffix("\r\n\r\nYour code is 123456.\r\nIt expires in 10 minutes.\r\n\r\n"))
    }

    @Test func theRandomBoundaryDiffersAndCannotOccurInQuotedPrintable() {
        let mail = sampleMail(text: "=_otpd_ --=_otpd_ ==__\n", html: "<p>=_</p>")
        let a = MIMEMessage.render(mail)
        let b = MIMEMessage.render(mail)
        let boundaryOf = { (m: String) in
            m.components(separatedBy: "boundary=\"").dropFirst().first?.components(separatedBy: "\"").first ?? ""
        }
        #expect(boundaryOf(a).hasPrefix("=_otpd_") && boundaryOf(a).count == 7 + 48)
        #expect(boundaryOf(a) != boundaryOf(b))
        let body = a.components(separatedBy: "\r\n\r\n").dropFirst().joined(separator: "\r\n\r\n")
        // Only the three delimiter lines hold the boundary; the parts' "=_" became "=3D_".
        #expect(body.components(separatedBy: boundaryOf(a)).count == 4)
        #expect(!body.replacingOccurrences(of: boundaryOf(a), with: "").contains("=_"))
    }

    @Test(arguments: [
        "plain ASCII", "Grüße aus Köln — 123456 🎉", "trailing space \ntab\t\nend", "=3D not decoded",
        "line\r\nbreaks\rall\nkinds",
        String(repeating: "ü", count: 300), "", "\n", "🇩🇪👩‍👩‍👧‍👦",
    ])
    func quotedPrintableRoundTrips(text: String) {
        let encoded = MIMEMessage.quotedPrintable(text)
        let expected = MIMEMessage.lines(of: text).map { String(decoding: $0, as: UTF8.self) }.joined(separator: "\r\n")
        #expect(String(decoding: decodeQuotedPrintable(encoded), as: UTF8.self) == expected)
        for line in encoded.components(separatedBy: "\r\n") {
            #expect(line.utf8.count <= 76)
            #expect(line.utf8.allSatisfy { $0 >= 33 && $0 <= 126 || $0 == 32 || $0 == 9 })
            #expect(!line.hasSuffix(" ") && !line.hasSuffix("\t"))
        }
    }

    @Test func aLineOf2000CharactersIsWrappedWithSoftBreaks() {
        let long = String(repeating: "0123456789", count: 200)
        let message = MIMEMessage.render(sampleMail(text: long + "\n", html: "<p>" + long + "</p>"), boundary: boundary)
        let lines = message.components(separatedBy: "\r\n")
        #expect(lines.allSatisfy { $0.utf8.count <= 76 })
        #expect(lines.filter { $0.hasSuffix("=") }.count >= 2 * (2000 / 75))
        let encoded = MIMEMessage.quotedPrintable(long)
        #expect(decodeQuotedPrintable(encoded) == Array(long.utf8))
    }

    @Test func bodyLinesStartingWithADotAreStuffedOnTheWire() {
        let message = MIMEMessage.render(sampleMail(text: ".\n.foo\nbar.\n", html: nil), boundary: boundary)
        #expect(message.contains("\r\n\r\n.\r\n.foo\r\nbar.\r\n"))
        let wire = String(decoding: SMTPStateMachine.dataPayload(message), as: UTF8.self)
        #expect(wire.contains("\r\n\r\n..\r\n..foo\r\nbar.\r\n"))
        #expect(wire.hasSuffix("\r\n.\r\n"))
        // Unstuffing (RFC 5321 4.5.2) gives back the rendered message.
        let unstuffed = String(decoding: wire.utf8.dropLast(3), as: UTF8.self).components(separatedBy: "\r\n").map {
            $0.hasPrefix(".") ? String($0.dropFirst()) : $0
        }
        #expect(unstuffed.joined(separator: "\r\n") == message)
    }

    @Test func aNonASCIISubjectBecomesEncodedWordsOfAtMost75Characters() {
        let subject = "123456 est votre code AcmeApp — à utiliser dans les 10 minutes, s'il vous plaît 🎉🎉🎉"
        let message = MIMEMessage.render(sampleMail(subject: subject), boundary: boundary)
        let raw = message.components(separatedBy: "\r\n\r\n")[0]
        #expect(raw.utf8.allSatisfy { $0 < 128 })
        let rawLines = raw.components(separatedBy: "\r\n")
        let start = rawLines.firstIndex { $0.hasPrefix("Subject:") } ?? 0
        var subjectLines = [rawLines[start]]
        for line in rawLines[(start + 1)...] {
            guard line.hasPrefix(" ") else { break }
            subjectLines.append(line)
        }
        #expect(subjectLines.count > 1)
        #expect(subjectLines.allSatisfy { $0.utf8.count <= 76 })
        let value = Dictionary(headerFields(message), uniquingKeysWith: { a, _ in a })["Subject"] ?? ""
        for word in value.split(separator: " ") { #expect(word.count <= 75 && word.hasPrefix("=?UTF-8?B?")) }
        #expect(decodeEncodedWords(value) == subject)
    }

    @Test func aNonASCIIDisplayNameIsEncodedAndTheAddressKept() {
        var mail = sampleMail()
        mail.from = SMTPAddress(displayName: "Ærøskøbing Bank", address: "no-reply@acme.example")
        let value = Dictionary(
            headerFields(MIMEMessage.render(mail, boundary: boundary)),
            uniquingKeysWith: { a, _ in a }
        )
        let from = value["From"] ?? ""
        #expect(from.hasSuffix(" <no-reply@acme.example>"))
        #expect(decodeEncodedWords(String(from.dropLast(" <no-reply@acme.example>".count))) == "Ærøskøbing Bank")
    }

    @Test func displayNamesWithSpecialsAreQuoted() {
        var mail = sampleMail()
        mail.from = SMTPAddress(displayName: "Acme, \"Inc.\"", address: "no-reply@acme.example")
        let value = Dictionary(
            headerFields(MIMEMessage.render(mail, boundary: boundary)),
            uniquingKeysWith: { a, _ in a }
        )
        #expect(value["From"] == "\"Acme, \\\"Inc.\\\"\" <no-reply@acme.example>")
    }

    @Test func headerInjectionIsNeutralised() {
        var mail = sampleMail(subject: "123456 is your code\r\nBcc: victim@example.com\r\n\r\nInjected body")
        mail.from = SMTPAddress(displayName: "Acme\r\nBcc: x@example.com", address: "no-reply@acme.example")
        mail.extraHeaders = [
            ("X-Tag", "a\nBcc: y@example.com"), ("Bad Name", "v"), ("Bcc:", "z"), ("To", "other@example.com"),
        ]
        let message = MIMEMessage.render(mail, boundary: boundary)
        let head = message.components(separatedBy: "\r\n\r\n")[0]
        let lines = head.components(separatedBy: "\r\n")
        #expect(!lines.contains { $0.lowercased().hasPrefix("bcc") })
        #expect(lines.filter { $0.hasPrefix("To:") } == ["To: user@example.com"])
        #expect(!head.contains("\n\n") && !head.replacingOccurrences(of: "\r\n", with: "").contains("\n"))
        #expect(!head.replacingOccurrences(of: "\r\n", with: "").contains("\r"))
        let value = Dictionary(headerFields(message), uniquingKeysWith: { a, _ in a })
        #expect(value["Subject"] == "123456 is your code  Bcc: victim@example.com    Injected body")
        #expect(value["X-Tag"] == "a Bcc: y@example.com")
        #expect(
            fields(message) == [
                "From", "To", "Subject", "Date", "Message-ID", "MIME-Version", "Auto-Submitted", "X-Tag",
                "Content-Type",
            ]
        )
        #expect(value["From"] == "\"Acme  Bcc: x@example.com\" <no-reply@acme.example>")
    }

    @Test func longASCIISubjectsAreFoldedAtSpaces() {
        let subject = Array(repeating: "word", count: 60).joined(separator: " ")
        let message = MIMEMessage.render(sampleMail(subject: subject), boundary: boundary)
        let head = message.components(separatedBy: "\r\n\r\n")[0]
        #expect(head.components(separatedBy: "\r\n").allSatisfy { $0.utf8.count <= 78 })
        #expect(Dictionary(headerFields(message), uniquingKeysWith: { a, _ in a })["Subject"] == subject)
    }

    @Test func extraHeadersComeAfterTheirOwnAndCanReplaceAutoSubmitted() {
        var mail = sampleMail()
        mail.extraHeaders = [("Auto-Submitted", "auto-replied"), ("X-OTPD-Session", "s1")]
        let fields = headerFields(MIMEMessage.render(mail, boundary: boundary))
        #expect(fields.filter { $0.0 == "Auto-Submitted" }.map(\.1) == ["auto-replied"])
        #expect(fields.contains { $0 == ("X-OTPD-Session", "s1") })
    }

    @Test func messageIdsAndDatesAreAlwaysValid() {
        #expect(MIMEMessage.messageID("m_abc", domain: "acme.example") == "<m_abc@acme.example>")
        #expect(MIMEMessage.messageID("a b<c>@d", domain: "acme.example") == "<a_b_c__d@acme.example>")
        #expect(MIMEMessage.messageID(".x..y", domain: "bad domain") == "<_x__y@localhost>")
        #expect(MIMEMessage.date(Date(timeIntervalSince1970: 0)) == "Thu, 01 Jan 1970 00:00:00 +0000")
        #expect(MIMEMessage.date(Date(timeIntervalSince1970: 951_782_400)) == "Tue, 29 Feb 2000 00:00:00 +0000")
        #expect(MIMEMessage.date(Date(timeIntervalSince1970: 4_102_444_799)) == "Thu, 31 Dec 2099 23:59:59 +0000")
    }

    @Test func addressesAreParsedOrRefusedWithAClearMessage() throws {
        #expect(
            try SMTPAddress.parse("AcmeApp <no-reply@acme.example>")
                == SMTPAddress(displayName: "AcmeApp", address: "no-reply@acme.example")
        )
        #expect(try SMTPAddress.parse("no-reply@acme.example") == SMTPAddress(address: "no-reply@acme.example"))
        #expect(try SMTPAddress.parse("<no-reply@acme.example>") == SMTPAddress(address: "no-reply@acme.example"))
        #expect(
            try SMTPAddress.parse("\"Acme, Inc.\" <a@b.example>")
                == SMTPAddress(displayName: "Acme, Inc.", address: "a@b.example")
        )
        for bad in [
            "", "no-at-sign", "a b@c.example", "Acme <a@b.example", "Acme a@b.example>", "<a@b.example\r\nX: y>", "a@",
            "@b",
        ] {
            #expect(throws: SMTPAddressError.self) { try SMTPAddress.parse(bad) }
        }
        do {
            _ = try SMTPAddress.parse("Acme <not an address>")
            Issue.record("parsed an address without @")
        } catch {
            #expect(error.description.contains("not an address"))
        }
    }
}
