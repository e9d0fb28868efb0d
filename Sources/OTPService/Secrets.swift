import Crypto
import EventStore
import Foundation
import OTPDomain

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// The server secret and the keys derived from it: code derivation, code digests, fingerprints, key sealing.
public struct Secrets: Sendable {
    // Key bytes, not SymmetricKey: swift-crypto's key type is not Sendable on Linux.
    private let codeKey: [UInt8]
    private let digestKey: [UInt8]
    private let fingerprintKey: [UInt8]
    private let sealingKey: [UInt8]
    private let trackingKey: [UInt8]
    private let messageKey: [UInt8]
    /// The key of the event log's hash chains and stream heads.
    public let chainKey: ChainKey

    /// Derives the keys from a secret of at least 32 bytes.
    public init(secret: [UInt8]) {
        let master = SymmetricKey(data: secret)
        func derive(_ label: String) -> [UInt8] {
            HKDF<SHA256>.deriveKey(inputKeyMaterial: master, info: Array(label.utf8), outputByteCount: 32)
                .withUnsafeBytes { Array($0) }
        }
        codeKey = derive("otpd/v1/code")
        digestKey = derive("otpd/v1/digest")
        fingerprintKey = derive("otpd/v1/fingerprint")
        sealingKey = derive("otpd/v1/session-key")
        trackingKey = derive("otpd/v1/tracking")
        messageKey = derive("otpd/v1/message-id")
        chainKey = ChainKey(derive("otpd/v1/chain"))
    }

    /// A keyed digest of ISSUE's arguments, so a repeat can be told from a conflict without keeping them.
    public func fingerprint(_ parts: [String]) -> String {
        let text = parts.joined(separator: "\u{0}")
        return Hex.encode(
            Array(HMAC<SHA256>.authenticationCode(for: Array(text.utf8), using: SymmetricKey(data: fingerprintKey)))
        )
    }

    /// The id of the message of the step started at `token` of `stream`: stable (the provider's idempotency
    /// key, the e-mail's Message-ID), and a keyed hash, so nobody without the secret can compute a session's
    /// message ids and probe `/receipts/webhook` with them. `m_` and 24 hex digits. `handedOn` counts the
    /// providers that already failed the step (failover within the channel): each provider's message has an
    /// id of its own, and the first keeps the id a step always had.
    public func messageId(stream: StreamID, token: Int, handedOn: Int = 0) -> String {
        let text = handedOn == 0 ? "\(stream.text)#\(token)" : "\(stream.text)#\(token)#\(handedOn)"
        let mac = HMAC<SHA256>.authenticationCode(
            for: Array(text.utf8),
            using: SymmetricKey(data: messageKey)
        )
        return "m_" + Hex.encode(Array(mac).prefix(12))
    }

    /// The unguessable token of a message's tracking URLs (`/o/<token>`, `/c/<token>`): a keyed hash of its id,
    /// 32 hex characters.
    public func trackingToken(messageId: String) -> String {
        let mac = HMAC<SHA256>.authenticationCode(for: Array(messageId.utf8), using: SymmetricKey(data: trackingKey))
        return Hex.encode(Array(mac).prefix(16))
    }

    /// A fresh per-session data key, sealed under the server secret and bound to the stream.
    public func newSessionKey(stream: String) throws -> (key: [UInt8], sealed: [UInt8]) {
        let raw = SymmetricKey(size: .bits256).withUnsafeBytes { Array($0) }
        let box = try AES.GCM.seal(raw, using: SymmetricKey(data: sealingKey), authenticating: Array(stream.utf8))
        guard let combined = box.combined else { throw SecretsError("cannot seal a session key") }
        return (raw, Array(combined))
    }

    /// Opens a sealed per-session key.
    public func openSessionKey(_ sealed: [UInt8], stream: String) throws -> [UInt8] {
        let box = try AES.GCM.SealedBox(combined: sealed)
        return Array(try AES.GCM.open(box, using: SymmetricKey(data: sealingKey), authenticating: Array(stream.utf8)))
    }

    /// Loads the secret from config (`secret` hex or `secret_file`), else from `<dataDir>/secret`, creating it.
    ///
    /// A secret file must be readable by its owner alone (mode 0600 or stricter), or it is refused. A new one
    /// is written whole to a private temporary file and then linked into place, which fails if the name
    /// exists: two instances starting together on one data directory end up with the one secret that won.
    public static func load(hex: String?, file: String?, dataDirectory: String) throws -> (Secrets, generated: Bool) {
        if let hex {
            guard let bytes = Hex.decode(hex.trimmingCharacters(in: .whitespacesAndNewlines)), bytes.count >= 32 else {
                throw SecretsError("secret must be at least 64 hex characters (32 bytes)")
            }
            return (Secrets(secret: bytes), false)
        }
        let path = file ?? dataDirectory + "/secret"
        if FileManager.default.fileExists(atPath: path) { return (try read(path), false) }
        if file != nil { throw SecretsError("secret_file \(path) does not exist") }
        try FileManager.default.createDirectory(atPath: dataDirectory, withIntermediateDirectories: true)
        var rng = SystemRandomNumberGenerator()
        let bytes = (0..<32).map { _ in UInt8.random(in: .min ... .max, using: &rng) }
        guard try create(path, contents: Array((Hex.encode(bytes) + "\n").utf8)) else {
            return (try read(path), false)  // another instance created it first: use that one
        }
        return (Secrets(secret: bytes), true)
    }

    /// Reads a secret file, refusing a symbolic link, a file of another user, or one others may read or write.
    private static func read(_ path: String) throws -> Secrets {
        let fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else {
            throw SecretsError("\(path): cannot open the secret file (a symbolic link is refused too)")
        }
        defer { close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw SecretsError("\(path): cannot read the secret file") }
        let mode = info.st_mode & 0o777
        guard mode & 0o077 == 0 else {
            throw SecretsError(
                "\(path): the secret file may be read by others (mode \(String(mode, radix: 8))); run chmod 600 \(path)"
            )
        }
        guard info.st_uid == geteuid() else {
            throw SecretsError("\(path): the secret file belongs to another user (uid \(info.st_uid))")
        }
        var bytes = [UInt8](repeating: 0, count: 4096)
        let n = bytes.withUnsafeMutableBytes { Foundation.read(fd, $0.baseAddress, $0.count) }
        guard n > 0 else { throw SecretsError("\(path): cannot read the secret file") }
        let text = String(decoding: bytes.prefix(n), as: UTF8.self)
        guard let secret = Hex.decode(text.trimmingCharacters(in: .whitespacesAndNewlines)), secret.count >= 32 else {
            throw SecretsError("\(path): the secret must be at least 64 hex characters")
        }
        return Secrets(secret: secret)
    }

    /// Writes `contents` to a new file at `path`, mode 0600 from its creation; false when `path` exists.
    private static func create(_ path: String, contents: [UInt8]) throws -> Bool {
        let temporary = path + ".\(getpid()).\(UInt32.random(in: .min ... .max)).tmp"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw SecretsError("cannot write \(temporary)") }
        defer { unlink(temporary) }
        let written = contents.withUnsafeBytes { Foundation.write(fd, $0.baseAddress, $0.count) }
        let synced = fsync(fd) == 0
        close(fd)
        guard written == contents.count, synced else { throw SecretsError("cannot write \(temporary)") }
        if link(temporary, path) == 0 {
            // The name must survive a power loss too: sessions are sealed with this secret from now on.
            let dir = open((path as NSString).deletingLastPathComponent, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            if dir >= 0 {
                _ = fsync(dir)
                close(dir)
            }
            return true
        }
        if errno == EEXIST { return false }
        throw SecretsError("cannot create \(path)")
    }
}

/// A problem with the secret or sealed data; never carries key material.
public struct SecretsError: Error, Sendable, CustomStringConvertible {
    /// What went wrong.
    public var description: String
    init(_ description: String) { self.description = description }
}

/// Codes derived from a random seed under the server secret; digests are HMACs.
///
/// The code itself is stored nowhere: the dispatcher derives it again from the seed for each message, so every
/// step sends the same code and a database dump without the secret reveals nothing.
public struct SecretCodeBook: CodeBook {
    let codeKey: [UInt8]
    let digestKey: [UInt8]

    /// Creates the book from the server's secrets.
    public init(_ secrets: Secrets) {
        codeKey = secrets.codeKeyForBook
        digestKey = secrets.digestKeyForBook
    }

    public func newSeed() -> String {
        var rng = SystemRandomNumberGenerator()
        return Hex.encode((0..<16).map { _ in UInt8.random(in: .min ... .max, using: &rng) })
    }

    public func code(seed: String, digits: Int, stream: StreamID) -> String {
        let mac = Array(
            HMAC<SHA256>.authenticationCode(
                for: Array("\(stream.text)\u{0}\(seed)".utf8),
                using: SymmetricKey(data: codeKey)
            )
        )
        let value = mac.prefix(8).reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        // An edited row cannot make the modulus overflow: 10^18 is the largest power of ten a UInt64 holds
        // with room (the domain accepts 4 to 10 digits, and the codec refuses other stored values).
        let digits = min(max(digits, 1), 18)
        var modulus: UInt64 = 1
        for _ in 0..<digits { modulus *= 10 }
        let n = String(value % modulus)
        return String(repeating: "0", count: digits - n.count) + n
    }

    public func digest(code: String, stream: StreamID) -> String {
        Hex.encode(
            HMAC<SHA256>.authenticationCode(for: Self.message(code, stream), using: SymmetricKey(data: digestKey))
        )
    }

    public func matches(code: String, digest: String, stream: StreamID) -> Bool {
        guard let expected = Hex.decode(digest) else { return false }
        // swift-crypto compares authentication codes in constant time.
        return HMAC<SHA256>.isValidAuthenticationCode(
            expected,
            authenticating: Self.message(code, stream),
            using: SymmetricKey(data: digestKey)
        )
    }

    private static func message(_ code: String, _ stream: StreamID) -> [UInt8] {
        Array("\(stream.text)\u{0}\(code)".utf8)
    }
}

extension Secrets {
    fileprivate var codeKeyForBook: [UInt8] { codeKey }
    fileprivate var digestKeyForBook: [UInt8] { digestKey }
}
