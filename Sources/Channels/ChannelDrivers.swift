import OTPDomain
import OTPService

/// The drivers a configuration asks for, one per channel, built (and so validated) at start.
public enum ChannelDrivers {
    /// Builds every channel's driver (`log` where none is configured); every HTTP driver shares `http`; `log`
    /// lets tests capture what the log driver prints; `file` names the configuration in errors.
    public static func make(
        _ channels: [DeliveryChannel: ChannelSettings],
        http: ProviderHTTP,
        file: String = "config",
        log: LogDriver = LogDriver()
    ) throws(ConfigurationError) -> [DeliveryChannel: any ChannelDriver] {
        var drivers: [DeliveryChannel: any ChannelDriver] = [:]
        for channel in DeliveryChannel.allCases {
            let settings = channels[channel] ?? .log
            let key = "channel.\(channel.rawValue)"
            if let error = settings.refusal(for: channel, file: file, key: key) { throw error }
            switch settings {
            case .log: drivers[channel] = log
            case .null: drivers[channel] = NullDriver()
            case .webhook(let s): drivers[channel] = try WebhookDriver(s, http: http, file: file, key: key)
            case .twilio(let s):
                drivers[channel] = try TwilioDriver(s, channel: channel, http: http, file: file, key: key)
            case .smtp(let s):
                drivers[channel] = try SMTPDriver(s, file: file, key: key)
            case .fcm(let s):
                drivers[channel] = try FCMDriver(s, http: http, file: file, key: key)
            case .apns(let s):
                drivers[channel] = try APNsDriver(s, http: http, file: file, key: key)
            }
        }
        return drivers
    }
}
