import Postgres

/// A range of stream ids in the database's own order (its collation, never Swift's), for readers that walk
/// the log stream by stream: after `lower` (exclusive) up to `upper` (inclusive), nil meaning unbounded, and
/// only ids starting with `prefix` when one is given.
///
/// Batches read with `EventStore.readInStreamOrder` are contiguous in that order, so the ranges
/// `(previous batch's last stream, this batch's last stream]` cover every stream id exactly once: a table keyed
/// by stream id (heads, session keys, a projection) is read alongside with `where(column:)`, one range per batch.
public struct StreamRange: Sendable, Hashable {
    /// The exclusive lower bound; nil: from the first stream.
    public var lower: String?
    /// The inclusive upper bound; nil: to the last stream.
    public var upper: String?
    /// Only stream ids starting with this text (a tenant and its `/`).
    public var prefix: String?

    /// Creates a range.
    public init(after lower: String?, through upper: String?, prefix: String? = nil) {
        self.lower = lower
        self.upper = upper
        self.prefix = prefix
    }

    /// A statement `select` (which must end in a table whose `column` holds stream ids) restricted to the
    /// range, with any parameters `select` already uses numbered before the range's own.
    ///
    /// Each bound present adds its own condition (no `$n IS NULL OR ...`), so a prepared plan keeps its
    /// index range scan.
    public func query(_ select: String, column: String = "stream_id", parameters: [String?] = []) -> PGQuery {
        var sql = select
        var values = parameters
        var conditions: [String] = []
        if let lower {
            values.append(lower)
            conditions.append("\(column) > $\(values.count)::text")
        }
        if let upper {
            values.append(upper)
            conditions.append("\(column) <= $\(values.count)::text")
        }
        if let prefix {
            values.append(prefix)
            conditions.append("starts_with(\(column), $\(values.count)::text)")
        }
        if !conditions.isEmpty { sql += " WHERE " + conditions.joined(separator: " AND ") }
        return PGQuery(unsafeSQL: sql, parameters: values)
    }
}

extension EventStore {
    /// Reads up to `limit` events of every stream in `(stream_id, version)` order, strictly after `position`
    /// (nil: from the start), only of streams starting with `prefix` when given: one keyset page of the
    /// primary key, for reading the whole log stream by stream (verify, replay, export) in few statements.
    ///
    /// `sinceMs` keeps only events appended at or after that time (Unix epoch milliseconds).
    public static func readInStreamOrder(
        after position: (stream: String, version: Int)?,
        limit: Int,
        prefix: String? = nil,
        sinceMs: Int64? = nil,
        on conn: PGConnection
    ) throws -> [EventRecord] {
        var sql = "SELECT stream_id, version, type, data::text AS data, at_ms, prev_hash, hash FROM events"
        var parameters: [String?] = []
        var conditions: [String] = []
        if let position {
            parameters += [position.stream, String(position.version)]
            conditions.append("(stream_id, version) > ($1::text, $2::integer)")
        }
        if let prefix {
            parameters.append(prefix)
            conditions.append("starts_with(stream_id, $\(parameters.count)::text)")
        }
        if let sinceMs {
            parameters.append(String(sinceMs))
            conditions.append("at_ms >= $\(parameters.count)::bigint")
        }
        if !conditions.isEmpty { sql += " WHERE " + conditions.joined(separator: " AND ") }
        sql += " ORDER BY stream_id, version LIMIT \(max(1, limit))"
        let result = try conn.query(PGQuery(unsafeSQL: sql, parameters: parameters))
        var records: [EventRecord] = []
        records.reserveCapacity(result.rows.count)
        // By index: the columns are this statement's own, so no lookup by name per row.
        for row in result.rows {
            records.append(
                EventRecord(
                    streamID: try row.decode(0),
                    version: try row.decode(1),
                    type: try row.decode(2),
                    data: try row.decode(3),
                    at: try row.decode(4),
                    prevHash: try row.decode(5),
                    hash: try row.decode(6)
                )
            )
        }
        return records
    }

    /// The recorded heads of the streams in `range`, by stream id.
    public static func heads(in range: StreamRange, on conn: PGConnection) throws -> [String: StreamHead] {
        let rows = try conn.query(range.query("SELECT stream_id, version, mac FROM stream_heads")).rows
        var heads: [String: StreamHead] = [:]
        heads.reserveCapacity(rows.count)
        for row in rows {
            heads[try row.decode(0, as: String.self)] = StreamHead(version: try row.decode(1), mac: try row.decode(2))
        }
        return heads
    }
}
