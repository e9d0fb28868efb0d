import ArgumentParser
import Channels
import Foundation
import OTPDomain
import OTPServer
import OTPService

/// Sends one message with a made-up code through a channel's configured driver, to check a provider setup
/// (a sandbox account, a relay, a device token) before any user depends on it. No session, nothing stored.
struct SendTest: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "send-test",
        abstract: "Send one test message through a channel's configured driver and print what the provider said."
    )
    @Option(help: "otpd's TOML configuration (its [channel.*] tables).") var config: String
    @Option(help: "The channel: sms, email, voice or push.") var channel: String
    @Option(help: "Where to send: a phone number (+15551234567), an e-mail address, or a device token.")
    var to: String
    @Option(help: "The template locale (default en).") var locale = "en"
    @Option(help: "Which of the channel's providers = [...] to send through (default the first).")
    var provider: String?

    func run() async throws {
        guard let ch = DeliveryChannel(rawValue: channel.lowercased()) else {
            throw ValidationError("unknown channel '\(channel)' (sms, email, voice, push)")
        }
        let c = try Configuration.load(file: config)
        let providers = c.channel(ch)
        guard
            let chosen = provider.map({ name in providers.providers.first { $0.name == name } })
                ?? providers.providers.first
        else {
            let names = providers.providers.map(\.name).joined(separator: ", ")
            throw ValidationError("channel \(ch.rawValue) has no provider '\(provider ?? "")' (it has \(names))")
        }
        let settings = chosen.settings
        let http = ProviderHTTP()
        let driver: any ChannelDriver
        do {
            let key = providers.breaker == nil ? "channel.\(ch.rawValue)" : "provider.\(chosen.name)"
            driver = try ChannelDrivers.make(settings, channel: ch, http: http, file: c.file, key: key)
        } catch {
            await http.shutdown()
            throw error
        }
        let code = String(format: "%06d", Int.random(in: 0..<1_000_000))
        let renderer = MessageRenderer(
            settings: MessageSettings(appName: c.appName, appDomain: c.appDomain, androidAppHash: c.androidAppHash)
        )
        let message = OutboundMessage(
            messageId: "m_test_" + String(UInt64.random(in: 0...UInt64.max), radix: 16),
            tenant: "otpctl",
            session: "send-test",
            to: to,
            message: renderer.render(channel: ch, code: code, app: nil, locale: locale),
            code: code,
            expiresAtMs: Int64(Date().timeIntervalSince1970 * 1000) + 600_000,
            links: c.publicURL.map { MessageLinks(publicURL: $0, tracking: "0000000000000000000000000000test") }
        )
        print(
            "sending a \(ch.rawValue) test message with code \(code) through \(chosen.name) (the \(settings.driver) driver) ..."
        )
        let started = ContinuousClock.now
        let result = await driver.send(message)
        let took = ContinuousClock.now - started
        await http.shutdown()
        switch result {
        case .accepted(let ref, _):
            print(
                "accepted in \(took.formatted(.units(allowed: [.milliseconds])))"
                    + (ref.map { ", provider reference \($0)" } ?? "")
            )
        case .permanentFailure(let reason):
            print("refused for good: \(reason)")
            throw ExitCode(1)
        case .transientFailure(let reason, _):
            print("failed (otpd would retry, then fall back): \(reason)")
            throw ExitCode(1)
        case .unknownOutcome(let reason):
            print("no answer after the request went out (otpd would fall back, not send again): \(reason)")
            throw ExitCode(1)
        }
    }
}
