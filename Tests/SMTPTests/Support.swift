import Foundation
import NIOCore
import NIOEmbedded
import NIOSSL
import NIOTLS
import Synchronization
import Testing

@testable import SMTP

/// A reply as the decoder would deliver it.
func reply(_ code: Int, _ lines: String...) -> SMTPReply {
    SMTPReply(code: code, lines: lines.isEmpty ? [""] : lines)
}

/// The bytes of a `send` action as text; nil for any other action.
func sent(_ action: SMTPStateMachine.Action) -> String? {
    guard case .send(let bytes, _) = action else { return nil }
    return String(decoding: bytes, as: UTF8.self)
}

/// A conversation for `user@example.com` from `no-reply@acme.example`, EHLO name `client.example`.
func conversation(
    security: SMTPSecurity = .none,
    credentials: SMTPStateMachine.Credentials? = nil,
    message: String = "Subject: x\r\n\r\nbody\r\n"
) -> SMTPStateMachine {
    SMTPStateMachine(
        security: security,
        helo: "client.example",
        credentials: credentials,
        from: "no-reply@acme.example",
        to: "user@example.com",
        message: message
    )
}

let testCredentials = SMTPStateMachine.Credentials(username: "otpd", password: "s3cret-pass")

/// A mail with both parts.
func sampleMail(
    subject: String = "123456 is your AcmeApp code",
    text: String = "Your code is 123456.\nIt expires in 10 minutes.\n",
    html: String? = "<p>Your code is <b>123456</b>.</p>\n"
) -> SMTPMail {
    SMTPMail(
        from: SMTPAddress(displayName: "AcmeApp", address: "no-reply@acme.example"),
        to: "user@example.com",
        subject: subject,
        text: text,
        html: html,
        messageId: "m_0123456789abcdef01234567",
        date: Date(timeIntervalSince1970: 1_751_364_000)  // Tue, 01 Jul 2025 10:00:00 +0000
    )
}

/// Decodes quoted-printable (RFC 2045 6.7) into bytes: soft breaks removed, `=XX` decoded.
func decodeQuotedPrintable(_ text: String) -> [UInt8] {
    let bytes = Array(text.utf8)
    var out: [UInt8] = []
    var i = 0
    func hex(_ b: UInt8) -> UInt8? {
        switch b {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): b - UInt8(ascii: "0")
        case UInt8(ascii: "A")...UInt8(ascii: "F"): b - UInt8(ascii: "A") + 10
        default: nil
        }
    }
    while i < bytes.count {
        if bytes[i] == UInt8(ascii: "="), i + 2 < bytes.count, bytes[i + 1] == 13, bytes[i + 2] == 10 {
            i += 3
        } else if bytes[i] == UInt8(ascii: "="), i + 2 < bytes.count, let h = hex(bytes[i + 1]),
            let l = hex(bytes[i + 2])
        {
            out.append(h << 4 | l)
            i += 3
        } else {
            out.append(bytes[i])
            i += 1
        }
    }
    return out
}

/// Decodes a header value made of `=?UTF-8?B?...?=` words separated by folding white space.
func decodeEncodedWords(_ value: String) -> String? {
    var bytes: [UInt8] = []
    for word in value.split(whereSeparator: { $0 == " " || $0 == "\r" || $0 == "\n" }) {
        guard word.hasPrefix("=?UTF-8?B?"), word.hasSuffix("?="), word.count <= 75 else { return nil }
        guard let data = Data(base64Encoded: String(word.dropFirst(10).dropLast(2))) else { return nil }
        bytes += data
    }
    return String(bytes: bytes, encoding: .utf8)
}

/// The header section of a rendered message, unfolded: one entry per field, `(name, value)`.
func headerFields(_ message: String) -> [(String, String)] {
    let head = message.components(separatedBy: "\r\n\r\n").first ?? ""
    var fields: [(String, String)] = []
    for line in head.components(separatedBy: "\r\n") {
        if line.hasPrefix(" ") || line.hasPrefix("\t"), let last = fields.popLast() {
            fields.append((last.0, last.1 + line))
        } else if let colon = line.firstIndex(of: ":") {
            fields.append(
                (String(line[..<colon]), String(line[line.index(after: colon)...]).trimmingCharacters(in: .whitespaces))
            )
        }
    }
    return fields
}

/// One conversation on an `EmbeddedChannel`: the handler under test, the server's side written by the test.
final class EmbeddedConversation {
    let channel: EmbeddedChannel
    private let result = OutcomeBox()

    init(
        _ machine: SMTPStateMachine,
        timeouts: SMTPTimeouts = SMTPTimeouts(),
        startTLS: SMTPClientHandler.StartTLS? = nil
    ) throws {
        channel = EmbeddedChannel()
        let promise = channel.eventLoop.makePromise(of: SMTPOutcome.self)
        promise.futureResult.whenSuccess { [result] outcome in result.value.withLock { $0 = outcome } }
        try channel.pipeline.syncOperations.addHandler(
            SMTPClientHandler(machine: machine, timeouts: timeouts, startTLS: startTLS, promise: promise)
        )
        try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 25)).wait()
    }

    /// The outcome once decided.
    var outcome: SMTPOutcome? { result.value.withLock { $0 } }

    /// Writes the server's bytes to the client.
    func server(_ text: String) throws {
        try channel.writeInbound(ByteBuffer(string: text))
    }

    /// Pretends the TLS handshake completed (as `NIOSSLClientHandler` reports it).
    func handshakeCompleted() {
        channel.pipeline.fireUserInboundEventTriggered(TLSUserEvent.handshakeCompleted(negotiatedProtocol: nil))
    }

    /// Everything the client wrote since the last call, as raw bytes.
    func writtenBytes() throws -> [UInt8] {
        var bytes: [UInt8] = []
        while let buffer = try channel.readOutbound(as: ByteBuffer.self) { bytes += buffer.readableBytesView }
        return bytes
    }

    /// Everything the client wrote since the last call, as text.
    func written() throws -> String {
        String(decoding: try writtenBytes(), as: UTF8.self)
    }

    /// Whether the client closed the connection.
    var isClosed: Bool { !channel.isActive }
}

/// Where a conversation's outcome lands, from whichever thread completes it.
final class OutcomeBox: Sendable {
    let value = Mutex<SMTPOutcome?>(nil)
}
