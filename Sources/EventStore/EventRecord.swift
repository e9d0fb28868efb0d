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
    /// HMAC-SHA256, under the chain key, of the previous hash and this event's canonical bytes.
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

/// The key of the hash chains: without it, nobody can compute an event's hash or a stream's head.
public struct ChainKey: Sendable {
    let bytes: [UInt8]
    /// The HMAC with the key already absorbed: each MAC starts from a copy, so the key's two blocks are not
    /// hashed again for every event (a replay of the whole log computes one MAC per event).
    private let keyed: HMAC<SHA256>

    /// Creates a key from at least 32 secret bytes.
    public init(_ bytes: [UInt8]) {
        self.bytes = bytes
        keyed = HMAC<SHA256>(key: SymmetricKey(data: bytes))
    }

    func mac(_ parts: [UInt8]...) -> [UInt8] {
        var h = keyed
        for p in parts { h.update(data: p) }
        return Array(h.finalize())
    }
}

/// A stream's recorded head: the version it must reach and the MAC that vouches for it.
public struct StreamHead: Sendable, Hashable {
    /// The stream's last version.
    public var version: Int
    /// HMAC under the chain key of the stream id, that version and the last event's hash.
    public var mac: [UInt8]

    /// Creates a head.
    public init(version: Int, mac: [UInt8]) {
        self.version = version
        self.mac = mac
    }
}

/// The hash chain of a stream, keyed so that only the holder of the chain key can extend or re-hash it.
public enum HashChain {
    /// The previous hash of a stream's first event.
    public static let genesis = [UInt8](repeating: 0, count: 32)

    /// The hash of an event: HMAC-SHA256 under `key` of the previous hash, then stream, version, type and time
    /// (newline separated), then the data.
    public static func hash(
        key: ChainKey,
        prev: [UInt8],
        streamID: String,
        version: Int,
        type: String,
        at: Int64,
        data: String
    ) -> [UInt8] {
        key.mac(prev, Array("\(streamID)\n\(version)\n\(type)\n\(at)\n".utf8), Array(data.utf8))
    }

    /// The head that vouches for a stream ending at `version` with `hash`.
    public static func head(key: ChainKey, streamID: String, version: Int, hash: [UInt8]) -> StreamHead {
        StreamHead(version: version, mac: key.mac(Array("head\n\(streamID)\n\(version)\n".utf8), hash))
    }

    /// The first version whose stored links or hash do not match, or where the recorded head says events are
    /// missing; nil when the chain is intact and ends where its head says.
    ///
    /// A deleted row shows up as a version gap; an edited row as a hash mismatch, even when its hashes were
    /// recomputed without the key; deleted last rows (or a deleted or forged head) at the first version gone.
    public static func firstBrokenVersion(_ records: [EventRecord], head: StreamHead?, key: ChainKey) -> Int? {
        var prev = genesis
        for (i, r) in records.enumerated() {
            let expectedVersion = i + 1
            if r.version != expectedVersion { return expectedVersion }
            let h = hash(
                key: key,
                prev: prev,
                streamID: r.streamID,
                version: r.version,
                type: r.type,
                at: r.at,
                data: r.data
            )
            if r.prevHash != prev || r.hash != h { return r.version }
            prev = r.hash
        }
        guard let last = records.last else { return head.map { _ in 1 } }  // a head without events: all deleted
        guard let head, head.version == last.version,
            head == Self.head(key: key, streamID: last.streamID, version: last.version, hash: last.hash)
        else {
            // The head is missing, forged, or names a later version: the events after the last one are gone.
            return min(head?.version ?? last.version, last.version) + 1
        }
        return nil
    }
}
