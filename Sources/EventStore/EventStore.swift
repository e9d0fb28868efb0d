import Postgres

/// Why an append failed.
public struct AppendError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The stream changed since it was read: another writer appended first; nothing was written.
    public static let versionConflict = AppendError(description: "version conflict")
    /// A human-readable reason.
    public var description: String
}

/// A position in the global log: subscribers read strictly after it.
public struct LogPosition: Sendable, Hashable, Comparable {
    /// The appending transaction's id.
    public var transactionID: UInt64
    /// The row's position within the table.
    public var position: Int64

    /// The position before every event.
    public static let start = LogPosition(transactionID: 0, position: 0)

    /// Creates a position.
    public init(transactionID: UInt64, position: Int64) {
        self.transactionID = transactionID
        self.position = position
    }

    public static func < (a: LogPosition, b: LogPosition) -> Bool {
        (a.transactionID, a.position) < (b.transactionID, b.position)
    }
}

/// The PostgreSQL event store: append with expected version, read a stream, read the whole log in order.
///
/// Every function runs synchronously on a connection, so callers compose them inside one transaction on the
/// connection's own thread.
public enum EventStore {
    /// The database clock, Unix epoch milliseconds.
    public static func now(on conn: PGConnection) throws -> Int64 {
        let r = try conn.query("SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS now")
        guard let row = r.rows.first else { throw AppendError(description: "no clock row") }
        return try row.decode("now", as: Int64.self)
    }

    /// Reads a stream's events in version order.
    public static func read(stream: String, on conn: PGConnection) throws -> [EventRecord] {
        let r = try conn.query(
            """
            SELECT stream_id, version, type, data::text AS data, at_ms, prev_hash, hash
            FROM events WHERE stream_id = \(stream) ORDER BY version
            """
        )
        return try r.rows.map(EventStore.record)
    }

    /// Reads a stream's events in version order, its recorded head and the database clock (Unix epoch
    /// milliseconds, as `now(on:)`), in one statement.
    public static func readWithHead(
        stream: String,
        on conn: PGConnection
    ) throws -> (records: [EventRecord], head: StreamHead?, now: Int64) {
        let rows = try conn.query(
            """
            SELECT one.now, h.version AS head_version, h.mac AS head_mac,
                   e.stream_id, e.version, e.type, e.data::text AS data, e.at_ms, e.prev_hash, e.hash
            FROM (SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS now) AS one
            LEFT JOIN stream_heads h ON h.stream_id = \(stream)
            LEFT JOIN events e ON e.stream_id = \(stream)
            ORDER BY e.version
            """
        ).rows
        let now = try rows[0].decode("now", as: Int64.self)
        let head = try rows.first.flatMap { row -> StreamHead? in
            guard let version = try row.decodeIfPresent("head_version", as: Int.self) else { return nil }
            return StreamHead(version: version, mac: try row.decode("head_mac"))
        }
        guard try rows.first?.decodeIfPresent("stream_id", as: String.self) != nil else { return ([], head, now) }
        return (try rows.map(EventStore.record), head, now)
    }

    /// Reads a stream's recorded head, or nil when none was recorded.
    public static func head(stream: String, on conn: PGConnection) throws -> StreamHead? {
        try conn.query("SELECT version, mac FROM stream_heads WHERE stream_id = \(stream)").rows.first.map {
            StreamHead(version: try $0.decode("version"), mac: try $0.decode("mac"))
        }
    }

    /// Appends events after `expectedVersion`, chaining each hash to the stream's head under `key`, and records
    /// the new head in the same statement.
    ///
    /// Throws `AppendError.versionConflict` when the stream's head is no longer `expectedVersion`; a conflict
    /// never overwrites. Run it inside a transaction: on a conflict the transaction must be rolled back.
    @discardableResult
    public static func append(
        _ events: [NewEvent],
        to stream: String,
        expectedVersion: Int,
        headHash: [UInt8],
        at: Int64,
        key: ChainKey,
        on conn: PGConnection
    ) throws -> [EventRecord] {
        var batch = PGBatch()
        let written = append(
            events,
            to: stream,
            expectedVersion: expectedVersion,
            headHash: headHash,
            at: at,
            key: key,
            into: &batch
        )
        try conn.run(batch)
        return written
    }

    /// Adds the append to `batch`, to run in one round trip with other writes, and returns the records it
    /// writes; running the batch throws `AppendError.versionConflict` as `append(…on:)` does.
    public static func append(
        _ events: [NewEvent],
        to stream: String,
        expectedVersion: Int,
        headHash: [UInt8],
        at: Int64,
        key: ChainKey,
        into batch: inout PGBatch
    ) -> [EventRecord] {
        var prev = expectedVersion == 0 ? HashChain.genesis : headHash
        var written: [EventRecord] = []
        written.reserveCapacity(events.count)
        for (i, e) in events.enumerated() {
            let version = expectedVersion + i + 1
            let h = HashChain.hash(
                key: key,
                prev: prev,
                streamID: stream,
                version: version,
                type: e.type,
                at: at,
                data: e.data
            )
            written.append(
                EventRecord(
                    streamID: stream,
                    version: version,
                    type: e.type,
                    data: e.data,
                    at: at,
                    prevHash: prev,
                    hash: h
                )
            )
            prev = h
        }
        guard let last = written.last else { return [] }
        // One statement for all of them and the head: rows of placeholders, the values as parameters. The head
        // moves only from the version the writer read: a new stream has none, and an existing one must be at
        // `expectedVersion`. Otherwise nothing is written: another writer came first, or the stream's rows were
        // cut back under its head, which no append may paper over.
        let head = HashChain.head(key: key, streamID: stream, version: last.version, hash: last.hash)
        let moveHead =
            expectedVersion == 0
            ? """
            INSERT INTO stream_heads (stream_id, version, mac) SELECT $1::text, $2::integer, $3::bytea
            WHERE $4::integer = 0 ON CONFLICT DO NOTHING RETURNING 1
            """
            : "UPDATE stream_heads SET version = $2::integer, mac = $3::bytea WHERE stream_id = $1::text AND version = $4::integer RETURNING 1"
        var sql = """
            WITH head AS (\(moveHead))
            INSERT INTO events (stream_id, version, type, data, at_ms, prev_hash, hash)
            SELECT * FROM (VALUES
            """
        var parameters: [String?] = [stream.pgText, head.version.pgText, head.mac.pgText, expectedVersion.pgText]
        parameters.reserveCapacity(4 + written.count * 7)
        for (i, r) in written.enumerated() {
            let n = 4 + i * 7
            sql += i == 0 ? " " : ", "
            sql += "($\(n + 1)::text, $\(n + 2)::integer, $\(n + 3)::text, $\(n + 4)::json, $\(n + 5)::bigint, "
            sql += "$\(n + 6)::bytea, $\(n + 7)::bytea)"
            parameters += [
                r.streamID.pgText, r.version.pgText, r.type.pgText, r.data.pgText, r.at.pgText, r.prevHash.pgText,
                r.hash.pgText,
            ]
        }
        sql += ") AS new WHERE EXISTS (SELECT 1 FROM head)"
        let count = written.count
        batch.add(PGQuery(unsafeSQL: sql, parameters: parameters)) { result in
            switch result {
            case .success(let inserted): guard inserted.affectedRows == count else { throw AppendError.versionConflict }
            // A row with one of these versions exists: another writer appended first. Nothing was written.
            case .failure(let error) where error.isUniqueViolation: throw AppendError.versionConflict
            case .failure(let error): throw error
            }
        }
        return written
    }

    /// Reads up to `limit` events of every stream after `position`, in the stable log order.
    ///
    /// Only events of transactions older than every running transaction are returned, so an event that
    /// commits after a later one is still read exactly once, in its place.
    /// The order is by the `xid8` column itself: the text form is selected under another name, because an
    /// output column named `tx_id` would make `ORDER BY tx_id` sort as text ("1000" before "999").
    public static func readLog(
        after position: LogPosition,
        limit: Int,
        on conn: PGConnection
    ) throws
        -> [(position: LogPosition, record: EventRecord)]
    {
        let r = try conn.query(
            """
            SELECT stream_id, version, type, data::text AS data, at_ms, prev_hash, hash,
                   tx_id::text AS tx_text, position
            FROM events
            WHERE (tx_id, position) > (\(String(position.transactionID))::xid8, \(position.position))
              AND tx_id < pg_snapshot_xmin(pg_current_snapshot())
            ORDER BY events.tx_id, events.position
            LIMIT \(limit)
            """
        )
        return try r.rows.map { row in
            let tx = try row.decode("tx_text", as: String.self)
            guard let txID = UInt64(tx) else { throw AppendError(description: "bad tx_id") }
            return (
                LogPosition(transactionID: txID, position: try row.decode("position", as: Int64.self)),
                try EventStore.record(row)
            )
        }
    }

    /// What `follow` read: the events, each stream's in version order, and the log's horizon at that moment.
    public struct Followed: Sendable {
        /// The events read.
        public var records: [EventRecord]
        /// Every transaction whose id is below it had ended when the events were read, so a reader that goes on
        /// from it (`since`) misses no event and reads none twice.
        public var horizon: UInt64
    }

    /// Reads, in one snapshot, the events of `followed` appended by transactions from `since` up to the log's
    /// horizon, and every event of `starting` below the horizon; each stream's events in version order.
    ///
    /// The live feed's one read per round: `followed` are the streams it already reports (it read them up to
    /// `since`), `starting` those it has just been asked to report. Through the primary key, so its cost grows
    /// with the streams asked for and their events, never with the log.
    public static func follow(
        _ followed: [String],
        since: UInt64,
        starting: [String],
        on conn: PGConnection
    ) throws -> Followed {
        let columns = "stream_id, version, type, data::text AS data, at_ms, prev_hash, hash"
        let rows = try conn.query(
            """
            SELECT h.horizon::text AS horizon, e.*
            FROM (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS horizon) AS h
            LEFT JOIN LATERAL (
                SELECT \(unescaped: columns) FROM events
                WHERE stream_id = ANY(\(PGTextArray(followed))::text[]) AND tx_id >= \(String(since))::xid8
                  AND tx_id < h.horizon
                UNION ALL
                SELECT \(unescaped: columns) FROM events
                WHERE stream_id = ANY(\(PGTextArray(starting))::text[]) AND tx_id < h.horizon
            ) AS e ON true
            ORDER BY e.stream_id, e.version
            """
        ).rows
        guard let horizon = UInt64(try rows[0].decode("horizon", as: String.self)) else {
            throw AppendError(description: "bad snapshot horizon")
        }
        guard try rows[0].decodeIfPresent("stream_id", as: String.self) != nil else {
            return Followed(records: [], horizon: horizon)
        }
        return Followed(records: try rows.map(EventStore.record), horizon: horizon)
    }

    /// Decodes a row with the columns `stream_id, version, type, data (text), at_ms, prev_hash, hash`, for
    /// callers that read events together with something else in one statement.
    public static func record(_ row: PGRow) throws -> EventRecord {
        EventRecord(
            streamID: try row.decode("stream_id"),
            version: try row.decode("version"),
            type: try row.decode("type"),
            data: try row.decode("data"),
            at: try row.decode("at_ms"),
            prevHash: try row.decode("prev_hash"),
            hash: try row.decode("hash")
        )
    }
}
