import OTPDomain
import OTPService

/// Sends e-mail through an SMTP relay (placeholder until the SMTP client lands).
public struct SMTPDriver: ChannelDriver {
    /// `smtp`.
    public var name: String { "smtp" }

    /// Creates the driver.
    public init(_ settings: SMTPSettings, file: String = "config", key: String = "channel") throws(ConfigurationError) {
        throw ConfigurationError(file: file, key: key + ".driver", message: "smtp is not available yet")
    }

    /// Sends nothing.
    public func send(_ message: OutboundMessage) async -> DriverResult { .permanentFailure("smtp unavailable") }
}
