import Crypto
import EventStore
import OTPDomain
import Synchronization

/// Recent sessions as this instance last read or wrote them: a digest of their stored records with the data key
/// and the state they fold to, so a command on a session still reads its rows but need not read its key,
/// decrypt, decode and fold them again.
///
/// A memo answers only for exactly the rows it was made from, every column byte for byte (`json` keeps the
/// text that was hashed; rows are compared by a SHA-256 of every column, so the memo does not keep them). An
/// event appended by another instance, an erasure, or a row edited or deleted by hand makes it miss, and the
/// session is read and folded from what is stored, as without it. So it changes what a command costs, never
/// what it decides. It holds at most `capacity` sessions, the oldest remembered going first, and it lives in
/// memory only, beside the states commands decide on.
final class SessionMemo: Sendable {
    /// A session's stored records, its data key (nil once erased) and their fold.
    struct Entry: Sendable {
        var records: [EventRecord]
        var key: [UInt8]?
        var state: SessionState
    }

    /// What is kept of an entry: its records only as their count and digest.
    private struct Kept {
        var count: Int
        var digest: SHA256.Digest
        var key: [UInt8]?
        var state: SessionState
    }

    /// SHA-256 over every column of every record, each field length-prefixed so no two row sets share an input.
    static func digest(_ records: [EventRecord]) -> SHA256.Digest {
        var hash = SHA256()
        func feed(_ bytes: some Collection<UInt8>) {
            withUnsafeBytes(of: UInt64(bytes.count).littleEndian) { hash.update(bufferPointer: $0) }
            let fed: Void? = bytes.withContiguousStorageIfAvailable {
                hash.update(bufferPointer: UnsafeRawBufferPointer($0))
            }
            if fed == nil { hash.update(data: Array(bytes)) }
        }
        func feed(_ n: Int64) { withUnsafeBytes(of: n.littleEndian) { hash.update(bufferPointer: $0) } }
        feed(Int64(records.count))
        for r in records {
            feed(r.streamID.utf8)
            feed(Int64(r.version))
            feed(r.type.utf8)
            feed(r.data.utf8)
            feed(r.at)
            feed(r.prevHash)
            feed(r.hash)
        }
        return hash.finalize()
    }

    private struct Store {
        var entries: [String: Kept] = [:]
        /// The streams in the order they were first remembered; `start` is the oldest still counted.
        var order: [String] = []
        var start = 0
    }

    private let store = Mutex(Store())
    let capacity: Int

    /// Creates a memo of at most `capacity` sessions (0 remembers none).
    init(capacity: Int) {
        self.capacity = max(capacity, 0)
    }

    /// The entry for `stream` if it was made from exactly `records`.
    func entry(_ stream: String, matching records: [EventRecord]) -> Entry? {
        guard let kept = store.withLock({ $0.entries[stream] }), kept.count == records.count,
            kept.digest == Self.digest(records)
        else { return nil }
        return Entry(records: records, key: kept.key, state: kept.state)
    }

    /// Remembers `entry` for `stream`, unless what is remembered is already further along (two commands of one
    /// session may finish in either order); past `capacity` the oldest stream is forgotten.
    func remember(_ stream: String, _ entry: Entry) {
        guard capacity > 0 else { return }
        let kept = Kept(
            count: entry.records.count,
            digest: Self.digest(entry.records),
            key: entry.key,
            state: entry.state
        )
        store.withLock { store in
            if let known = store.entries[stream] {
                if known.count <= kept.count { store.entries[stream] = kept }
                return
            }
            store.entries[stream] = kept
            store.order.append(stream)
            while store.entries.count > capacity {
                store.entries[store.order[store.start]] = nil
                store.start += 1
            }
            // The forgotten prefix is dropped once it is half the array, so `order` stays within 2 × capacity.
            if store.start > capacity {
                store.order.removeFirst(store.start)
                store.start = 0
            }
        }
    }

    /// How many sessions are remembered.
    var count: Int { store.withLock { $0.entries.count } }
}
