/// One result row: column names plus raw text values (`nil` is SQL NULL).
public struct PGRow: Sendable {
    /// The column names, in result order.
    public var columns: [String]
    /// The raw text values, in column order; `nil` is SQL NULL.
    public var values: [String?]

    /// Creates a row from column names and raw text values.
    public init(columns: [String], values: [String?]) {
        self.columns = columns
        self.values = values
    }

    /// The raw text of the column at `index`; `nil` for NULL or an out-of-range index.
    public subscript(_ index: Int) -> String? {
        values.indices.contains(index) ? values[index] : nil
    }

    /// The raw text of the first column named `name`; `nil` for NULL or an unknown column.
    public subscript(_ name: String) -> String? {
        guard let index = columns.firstIndex(of: name) else { return nil }
        return self[index]
    }

    /// Decodes the column at `index`, throwing `.decoding` when it is NULL, missing or malformed.
    public func decode<T: PGDecodable>(_ index: Int, as: T.Type = T.self) throws(PGError) -> T {
        guard values.indices.contains(index) else { throw .decoding("no column at index \(index)") }
        guard let text = values[index] else { throw .decoding("column \(index) is NULL") }
        do {
            return try T(pgText: text)
        } catch {
            throw PGError(code: .decoding, message: "column \(index) as \(T.self): \(error.message ?? "invalid")")
        }
    }

    /// Decodes the column named `name`, throwing `.decoding` when it is NULL, missing or malformed.
    public func decode<T: PGDecodable>(_ name: String, as: T.Type = T.self) throws(PGError) -> T {
        guard let index = columns.firstIndex(of: name) else { throw .decoding("no column named \(name)") }
        guard let text = values[index] else { throw .decoding("column \(name) is NULL") }
        do {
            return try T(pgText: text)
        } catch {
            throw PGError(code: .decoding, message: "column \(name) as \(T.self): \(error.message ?? "invalid")")
        }
    }

    /// Decodes the column named `name`, returning `nil` for NULL; throws when the column is missing or malformed.
    public func decodeIfPresent<T: PGDecodable>(_ name: String, as: T.Type = T.self) throws(PGError) -> T? {
        guard let index = columns.firstIndex(of: name) else { throw .decoding("no column named \(name)") }
        guard values[index] != nil else { return nil }
        return try decode(index, as: T.self)
    }
}

/// The outcome of a statement: its rows (if any) and the affected row count.
public struct PGResult: Sendable {
    /// The returned rows; empty for statements without a result set.
    public var rows: [PGRow]
    /// The number of rows affected (`PQcmdTuples`); 0 when the command reports none.
    public var affectedRows: Int

    /// Creates a result.
    public init(rows: [PGRow] = [], affectedRows: Int = 0) {
        self.rows = rows
        self.affectedRows = affectedRows
    }
}

/// A notification received on a connection after `LISTEN`.
public struct PGNotification: Sendable {
    /// The channel name given to `NOTIFY`.
    public var channel: String
    /// The payload string (empty when none was given).
    public var payload: String

    /// Creates a notification.
    public init(channel: String, payload: String) {
        self.channel = channel
        self.payload = payload
    }
}
