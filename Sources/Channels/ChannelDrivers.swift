import OTPDomain
import OTPService

/// The drivers a configuration asks for, every provider of every channel, built (and so validated) at start.
public enum ChannelDrivers {
    /// Builds every channel's providers (`log` where none is configured); every HTTP driver shares `http`; `log`
    /// lets tests capture what the log driver prints; `file` names the configuration in errors.
    public static func make(
        _ channels: [DeliveryChannel: ChannelProviders],
        http: ProviderHTTP,
        file: String = "config",
        log: LogDriver = LogDriver()
    ) throws(ConfigurationError) -> [DeliveryChannel: ChannelLineup] {
        var lineups: [DeliveryChannel: ChannelLineup] = [:]
        for channel in DeliveryChannel.allCases {
            let configured = channels[channel] ?? .log
            var providers: [ProviderDriver] = []
            for p in configured.providers {
                // The single-provider form's keys sit in the channel's table; the list's in each provider's.
                let key = configured.breaker == nil ? "channel.\(channel.rawValue)" : "provider.\(p.name)"
                let driver = try make(p.settings, channel: channel, http: http, file: file, key: key, log: log)
                providers.append(ProviderDriver(name: p.name, driver: driver, call: p.settings.call ?? ProviderCall()))
            }
            lineups[channel] = ChannelLineup(providers: providers, breaker: configured.breaker)
        }
        return lineups
    }

    /// One provider's driver for `channel`, its configuration's table named by `key` in errors.
    public static func make(
        _ settings: ChannelSettings,
        channel: DeliveryChannel,
        http: ProviderHTTP,
        file: String,
        key: String,
        log: LogDriver = LogDriver()
    ) throws(ConfigurationError) -> any ChannelDriver {
        if let error = settings.refusal(for: channel, file: file, key: key) { throw error }
        switch settings {
        case .log: return log
        case .null: return NullDriver()
        case .webhook(let s): return try WebhookDriver(s, http: http, file: file, key: key)
        case .twilio(let s): return try TwilioDriver(s, channel: channel, http: http, file: file, key: key)
        case .smtp(let s): return try SMTPDriver(s, file: file, key: key)
        case .fcm(let s): return try FCMDriver(s, http: http, file: file, key: key)
        case .apns(let s): return try APNsDriver(s, http: http, file: file, key: key)
        }
    }
}
