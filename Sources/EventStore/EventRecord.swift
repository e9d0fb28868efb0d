import Crypto
import Postgres

/// An event about to be appended: its type and its JSON data, exactly as it will be hashed and stored.
public struct NewEvent: Sendable, Hashable {
    /// The event's type name.
    public var type: String
    /// The event's data as a JSON object text.
    public var data: String

    /// Creates an event.
    public init(type: String, data: String) {
        self.type = type
        self.data = data
    }
}

/// A stored event.
public struct EventRecord: Sendable, Hashable {
    /// The stream the event belongs to.
    public var streamID: String
    /// Its 1-based version within the stream.
    public var version: Int
    /// The event's type name.
    public var type: String
    /// The event's data, a JSON object text.
    public var data: String
    /// When it was appended, by the database clock (Unix epoch milliseconds).
    public var at: Int64
    /// The previous event's hash (32 zero bytes for the first).
    public var prevHash: [UInt8]
    /// SHA-256 over the previous hash and this event's canonical bytes.
    public var hash: [UInt8]

    /// Creates a record.
    public init(streamID: String, version: Int, type: String, data: String, at: Int64, prevHash: [UInt8], hash: [UInt8])
    {
        self.streamID = streamID
        self.version = version
        self.type = type
        self.data = data
        self.at = at
        self.prevHash = prevHash
        self.hash = hash
    }
}

/// The hash chain of a stream.
public enum HashChain {
    /// The previous hash of a stream's first event.
    public static let genesis = [UInt8](repeating: 0, count: 32)

    /// The hash of an event: SHA-256 of the previous hash, then stream, version, type and time (newline
    /// separated), then the data.
    public static func hash(
        prev: [UInt8],
        streamID: String,
        version: Int,
        type: String,
        at: Int64,
        data: String
    ) -> [UInt8] {
        var h = SHA256()
        h.update(data: prev)
        h.update(data: Array("\(streamID)\n\(version)\n\(type)\n\(at)\n".utf8))
        h.update(data: Array(data.utf8))
        return Array(h.finalize())
    }

    /// The first version whose stored links or hash do not match, or nil when the chain is intact.
    ///
    /// A deleted row shows up as a version gap; an edited row as a hash mismatch.
    public static func firstBrokenVersion(_ records: [EventRecord]) -> Int? {
        var prev = genesis
        for (i, r) in records.enumerated() {
            let expectedVersion = i + 1
            if r.version != expectedVersion { return expectedVersion }
            let h = hash(prev: prev, streamID: r.streamID, version: r.version, type: r.type, at: r.at, data: r.data)
            if r.prevHash != prev || r.hash != h { return r.version }
            prev = r.hash
        }
        return nil
    }
}
