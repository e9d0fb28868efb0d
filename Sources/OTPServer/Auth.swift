import Crypto

/// What a credential may run.
public enum Role: String, Sendable, Hashable, CaseIterable {
    case service
    case gateway
    case auditor
    case analyst
}

/// One `[[tenant]]` entry: a tenant name, a token (kept as its SHA-256) and roles.
public struct TenantCredential: Sendable, Hashable {
    /// The tenant's name.
    public var name: String
    /// SHA-256 of the token.
    public var tokenSHA256: [UInt8]
    /// What the credential may run.
    public var roles: Set<Role>

    /// Creates a credential from a clear token.
    public init(name: String, token: String, roles: Set<Role>) {
        self.init(name: name, tokenSHA256: Array(SHA256.hash(data: Array(token.utf8))), roles: roles)
    }

    /// Creates a credential from a token's SHA-256.
    public init(name: String, tokenSHA256: [UInt8], roles: Set<Role>) {
        self.name = name
        self.tokenSHA256 = tokenSHA256
        self.roles = roles
    }
}

/// Checks AUTH's tenant and token against every credential, in constant time, so an unknown tenant costs what
/// a wrong token costs.
///
/// Each credential's name and token digest are kept as MACs under a key made at start; a candidate is checked
/// with swift-crypto's constant-time `isValidAuthenticationCode`.
struct Authenticator: Sendable {
    private struct Entry: Sendable {
        var credential: TenantCredential
        var nameMAC: [UInt8]
        var tokenMAC: [UInt8]
    }

    private let key: [UInt8]
    private let entries: [Entry]

    /// Whether the server runs without tenants (single-tenant mode, no AUTH).
    var isEmpty: Bool { entries.isEmpty }

    init(_ credentials: [TenantCredential]) {
        let key = SymmetricKey(size: .bits256).withUnsafeBytes { Array($0) }
        func mac(_ bytes: [UInt8]) -> [UInt8] {
            Array(HMAC<SHA256>.authenticationCode(for: bytes, using: SymmetricKey(data: key)))
        }
        self.key = key
        entries = credentials.map {
            Entry(credential: $0, nameMAC: mac(Array($0.name.utf8)), tokenMAC: mac($0.tokenSHA256))
        }
    }

    /// The credential matching `tenant` and `token`, or nil; every entry is checked whatever matched first.
    func credential(tenant: String, token: String) -> TenantCredential? {
        let digest = Array(SHA256.hash(data: Array(token.utf8)))
        let name = Array(tenant.utf8)
        let k = SymmetricKey(data: key)
        var match: TenantCredential?
        for e in entries {
            let sameToken = HMAC<SHA256>.isValidAuthenticationCode(e.tokenMAC, authenticating: digest, using: k)
            let sameName = HMAC<SHA256>.isValidAuthenticationCode(e.nameMAC, authenticating: name, using: k)
            if sameToken && sameName && match == nil { match = e.credential }
        }
        return match
    }
}
