import Foundation

/// A parsed `postgresql://user:pass@host:port/db?param=value` URL.
///
/// Parts are percent-decoded. A `host` query parameter (e.g. a Unix socket directory) overrides the
/// authority's host. The URL is turned into libpq keyword/value pairs; no conninfo string is ever built.
public struct PGURL: Sendable, Equatable, CustomStringConvertible {
    /// The user name, if any.
    public var user: String?
    /// The password, if any.
    public var password: String?
    /// The host name, IP address or socket directory, if any.
    public var host: String?
    /// The TCP port, if any.
    public var port: Int?
    /// The database name, if any.
    public var database: String?
    /// Extra libpq connection parameters from the query string (e.g. `sslmode`), except `host`.
    public var parameters: [String: String]

    /// Creates a URL from parts.
    public init(
        user: String? = nil,
        password: String? = nil,
        host: String? = nil,
        port: Int? = nil,
        database: String? = nil,
        parameters: [String: String] = [:]
    ) {
        self.user = user
        self.password = password
        self.host = host
        self.port = port
        self.database = database
        self.parameters = parameters
    }

    /// Parses a `postgresql://` or `postgres://` URL.
    public init(parsing url: String) throws(PGError) {
        let rest: Substring
        if url.hasPrefix("postgresql://") {
            rest = url.dropFirst("postgresql://".count)
        } else if url.hasPrefix("postgres://") {
            rest = url.dropFirst("postgres://".count)
        } else {
            throw .connection("invalid database URL: expected the postgresql:// scheme")
        }
        var main = rest
        var query: Substring = ""
        if let q = rest.firstIndex(of: "?") {
            main = rest[..<q]
            query = rest[rest.index(after: q)...]
        }
        var authority = main
        var path: Substring = ""
        if let slash = main.firstIndex(of: "/") {
            authority = main[..<slash]
            path = main[main.index(after: slash)...]
        }
        self.init()
        var hostPort = authority
        if let at = authority.lastIndex(of: "@") {
            let userInfo = authority[..<at]
            hostPort = authority[authority.index(after: at)...]
            if let colon = userInfo.firstIndex(of: ":") {
                user = try Self.decode(userInfo[..<colon], "user")
                password = try Self.decode(userInfo[userInfo.index(after: colon)...], "password")
            } else {
                user = try Self.decode(userInfo, "user")
            }
            if user == "" { user = nil }
        }
        var hostPart = hostPort
        var portPart: Substring? = nil
        if hostPort.hasPrefix("[") {
            guard let close = hostPort.firstIndex(of: "]") else {
                throw .connection("invalid database URL: unterminated IPv6 address")
            }
            hostPart = hostPort[hostPort.index(after: hostPort.startIndex)..<close]
            let after = hostPort[hostPort.index(after: close)...]
            if after.hasPrefix(":") {
                portPart = after.dropFirst()
            } else if !after.isEmpty {
                throw .connection("invalid database URL: unexpected text after the IPv6 address")
            }
        } else if let colon = hostPort.lastIndex(of: ":") {
            hostPart = hostPort[..<colon]
            portPart = hostPort[hostPort.index(after: colon)...]
        }
        let decodedHost = try Self.decode(hostPart, "host")
        host = decodedHost.isEmpty ? nil : decodedHost
        if let portPart, !portPart.isEmpty {
            guard let value = Int(portPart), (1...65535).contains(value) else {
                throw .connection("invalid database URL: bad port")
            }
            port = value
        }
        let decodedDatabase = try Self.decode(path, "database")
        database = decodedDatabase.isEmpty ? nil : decodedDatabase
        for pair in query.split(separator: "&", omittingEmptySubsequences: true) {
            let key: String
            let value: String
            if let equals = pair.firstIndex(of: "=") {
                key = try Self.decode(pair[..<equals], "parameter name")
                value = try Self.decode(pair[pair.index(after: equals)...], "parameter value")
            } else {
                key = try Self.decode(pair, "parameter name")
                value = ""
            }
            guard !key.isEmpty else { throw .connection("invalid database URL: empty parameter name") }
            switch key {
            case "host": host = value
            case "port":
                guard let value = Int(value), (1...65535).contains(value) else {
                    throw .connection("invalid database URL: bad port")
                }
                port = value
            case "user": user = value
            case "password": password = value
            case "dbname": database = value
            default: parameters[key] = value
            }
        }
    }

    private static func decode(_ part: Substring, _ what: String) throws(PGError) -> String {
        guard let decoded = String(part).removingPercentEncoding else {
            throw .connection("invalid database URL: bad percent-encoding in the \(what)")
        }
        return decoded
    }

    /// The URL rendered back to text, percent-encoding every part (including the password).
    public var urlString: String {
        var text = "postgresql://"
        if let user {
            text += Self.encode(user)
            if let password { text += ":" + Self.encode(password) }
            text += "@"
        }
        var queryItems: [(String, String)] = []
        if let host {
            if host.hasPrefix("/") {
                queryItems.append(("host", host))
            } else if host.contains(":") {
                text += "[\(host)]"
            } else {
                text += Self.encode(host)
            }
        }
        if let port { text += ":\(port)" }
        text += "/"
        if let database { text += Self.encode(database) }
        queryItems += parameters.sorted { $0.key < $1.key }
        if !queryItems.isEmpty {
            text += "?" + queryItems.map { Self.encode($0.0) + "=" + Self.encode($0.1) }.joined(separator: "&")
        }
        return text
    }

    /// The URL with the password replaced by `***`, safe for logs.
    public var description: String {
        var redacted = self
        if redacted.password != nil { redacted.password = "***" }
        return redacted.urlString.replacingOccurrences(of: "%2A%2A%2A", with: "***")
    }

    private static let unreserved: CharacterSet = {
        var set = CharacterSet()
        set.insert(charactersIn: "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~")
        return set
    }()

    private static func encode(_ text: String) -> String {
        text.addingPercentEncoding(withAllowedCharacters: unreserved) ?? text
    }

    /// The libpq keyword/value pairs for this URL combined with `settings`.
    func connectionParameters(settings: PGSettings) -> [(String, String)] {
        var pairs: [(String, String)] = []
        if let host { pairs.append(("host", host)) }
        if let port { pairs.append(("port", String(port))) }
        if let user { pairs.append(("user", user)) }
        if let password { pairs.append(("password", password)) }
        if let database { pairs.append(("dbname", database)) }
        var extra = parameters
        let options = settings.startupOptions
        if let existing = extra["options"], !existing.isEmpty {
            extra["options"] = existing + " " + options
        } else {
            extra["options"] = options
        }
        if extra["application_name"] == nil { extra["application_name"] = settings.applicationName }
        if extra["client_encoding"] == nil { extra["client_encoding"] = "UTF8" }
        if extra["connect_timeout"] == nil {
            let seconds = max(2, (PGSettings.milliseconds(settings.connectTimeout) + 999) / 1000)
            extra["connect_timeout"] = String(seconds)
        }
        for (key, value) in settings.keepaliveParameters where extra[key] == nil {
            extra[key] = value
        }
        pairs += extra.sorted { $0.key < $1.key }
        return pairs
    }
}
