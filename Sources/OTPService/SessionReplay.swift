import EventStore
import OTPDomain
import Postgres

/// The server's own rebuild of sessions from their stored events: decode with `EventCodec`, fold with
/// `SessionDecider.evolve`, check the keyed hash chain. REPLAY, loading a session for a command, and
/// `otpctl replay --all` all go through it, so an audit folds exactly as the server does.
public struct SessionReplay: Sendable {
    let secrets: Secrets
    let codec = EventCodec()

    /// Creates the replay with otpd's secrets (the chain key, and the key that opens session keys).
    public init(secrets: Secrets) { self.secrets = secrets }

    /// The first version where a stream's keyed chain or recorded head does not verify; nil when intact.
    public func firstBrokenVersion(_ records: [EventRecord], head: StreamHead?) -> Int? {
        HashChain.firstBrokenVersion(records, head: head, key: secrets.chainKey)
    }

    /// Rebuilds a state from stored records alone, opening destinations with the session's key as
    /// `session_keys` stores it (`sealedKey`; nil once erased: destinations are gone, history stays).
    ///
    /// A record that no longer decodes (edited by hand, or sealed under another secret) throws
    /// `UnreadableSession` naming its version.
    public func fold(_ records: [EventRecord], sealedKey: [UInt8]?, stream: StreamID) throws -> SessionState {
        let key: [UInt8]?
        do { key = try sealedKey.map { try secrets.openSessionKey($0, stream: stream.text) } } catch {
            throw UnreadableSession(stream: stream, version: 1)
        }
        return try fold(records, key: key, stream: stream)
    }

    /// Decodes and folds stored records with an opened session key (nil: erased).
    func fold(_ records: [EventRecord], key: [UInt8]?, stream: StreamID) throws -> SessionState {
        var state = SessionState()
        for record in records {
            guard let event = try? codec.decode(record, key: key) else {
                throw UnreadableSession(stream: stream, version: record.version)
            }
            state = SessionDecider.evolve(state, event, at: record.at)
            guard state.isConsistent else { throw UnreadableSession(stream: stream, version: record.version) }
        }
        return state
    }

    /// The sealed session keys of the streams in `range` (`session_keys` rows), by stream id; for readers that
    /// walk the log in stream order (`EventStore.readInStreamOrder`).
    public static func sealedKeys(in range: StreamRange, on conn: PGConnection) throws -> [String: [UInt8]] {
        let rows = try conn.query(range.query("SELECT stream_id, sealed_key FROM session_keys")).rows
        var keys: [String: [UInt8]] = [:]
        keys.reserveCapacity(rows.count)
        for row in rows { keys[try row.decode(0, as: String.self)] = try row.decode(1, as: [UInt8].self) }
        return keys
    }
}
