import Foundation
import NIOSSL
import OTPDomain
import OTPService
import SMTP

/// Sends e-mail through an SMTP relay with otpd's own client (the `SMTP` module).
///
/// One connection per message: EHLO, STARTTLS (required by default) or TLS from the first byte, AUTH PLAIN or
/// LOGIN over TLS only, then a multipart/alternative message (the template's text and HTML parts) whose
/// `Message-ID` is built from otpd's message id. With the HTTP side on, the HTML part carries the open-tracking
/// image and a "code not showing?" link. 2xx is accepted, 4xx and connection problems transient, 5xx
/// permanent.
public struct SMTPDriver: ChannelDriver {
    /// `smtp`.
    public var name: String { "smtp" }

    let client: SMTPClient
    let from: SMTPAddress

    /// Creates the driver; the sender, the trust roots and the host are checked now, naming `key` on error.
    public init(_ settings: SMTPSettings, file: String = "config", key: String = "channel") throws(ConfigurationError) {
        func fail(_ subkey: String, _ message: String) -> ConfigurationError {
            ConfigurationError(file: file, key: "\(key).\(subkey)", message: message)
        }
        do { from = try SMTPAddress.parse(settings.from) } catch { throw fail("from", error.message) }
        if let helo = settings.helo, !SMTPSyntax.isValidHelo(helo) {
            throw fail("helo", "must be a host name: printable ASCII without spaces, at most 255 characters")
        }
        guard !settings.host.isEmpty, !settings.host.contains(where: { $0 == " " || $0 == "/" }) else {
            throw fail("host", "'\(settings.host)' is not a host name or address")
        }
        var roots: [NIOSSLCertificate]?
        if let caFile = settings.call.caFile {
            do { roots = try NIOSSLCertificate.fromPEMFile(caFile) } catch {
                throw fail("ca_file", "cannot read PEM certificates from '\(caFile)'")
            }
            if roots?.isEmpty == true { throw fail("ca_file", "'\(caFile)' holds no certificate") }
        }
        let security: SMTPSecurity =
            switch settings.security {
            case .starttls: .starttls
            case .implicit: .implicit
            case .none: .none
            }
        // The channel's timeout bounds the whole conversation (after connecting), as a call's for the HTTP
        // drivers; each stage gets at most that much too.
        let stage = Duration.milliseconds(settings.call.timeoutMs)
        client = SMTPClient(
            configuration: SMTPConfiguration(
                host: settings.host,
                port: settings.port,
                security: security,
                username: settings.username,
                password: settings.password,
                helo: settings.helo ?? SMTPConfiguration.defaultHelo,
                trustRoots: roots,
                timeouts: SMTPTimeouts(
                    connect: stage,
                    greeting: stage,
                    command: stage,
                    dataEnd: stage,
                    total: stage
                )
            )
        )
    }

    /// The mail of a message: the template's parts, and the tracking image and link when there are links.
    func mail(for m: OutboundMessage) -> SMTPMail {
        var html = m.message.html
        if let links = m.links, let page = html, !m.code.isEmpty {
            let code = m.code
            let footer = """
                <p style="font-size:12px;color:#666">Code not showing? \
                <a href="\(links.showCode)#\(code)">Open it in your browser</a>.</p>\
                <img src="\(links.openImage)" width="1" height="1" alt="" style="display:block;border:0">
                """
            if let end = page.range(of: "</body>", options: [.caseInsensitive, .backwards]) {
                html = page.replacingCharacters(in: end, with: footer + "</body>")
            } else {
                html = page + footer
            }
        }
        return SMTPMail(
            from: from,
            to: m.to,
            subject: m.message.subject ?? "",
            text: m.message.text,
            html: html,
            messageId: m.messageId
        )
    }

    /// Sends the message once, within the channel's timeout, and classifies the outcome.
    public func send(_ message: OutboundMessage) async -> DriverResult {
        switch await client.send(mail(for: message)) {
        case .accepted(let queueID): .accepted(providerRef: queueID.isEmpty ? nil : queueID)
        case .transient(let reason): .transientFailure(reason)
        case .permanent(let reason): .permanentFailure(reason)
        case .unknown(let reason): .unknownOutcome(reason)
        }
    }
}
