import CLibPQ
import Foundation

/// A libpq connection; not Sendable, so it is only used on one thread (normally its `PGWorker`'s).
///
/// Every call blocks the calling thread until the server answers, so never use it directly from
/// Swift concurrency or a NIO event loop: go through `PGWorker` or `PGPool`.
public final class PGConnection {
    /// The libpq connection; nil once closed.
    private(set) var handle: OpaquePointer?
    /// Numbers the savepoints of nested transactions.
    var savepointCounter = 0
    /// Statements prepared on this connection, by SQL text (parse and plan once, not per call).
    private var prepared: [String: String] = [:]
    private var preparedCounter = 0

    /// How many distinct statements a connection keeps prepared; past it, statements run unprepared.
    public static let preparedStatementLimit = 512

    init(handle: OpaquePointer) {
        self.handle = handle
    }

    deinit {
        if let handle { PQfinish(handle) }
    }

    /// Whether the connection is open and healthy (`PQstatus == CONNECTION_OK`).
    public var isConnected: Bool {
        guard let handle else { return false }
        return PQstatus(handle) == CONNECTION_OK
    }

    /// Closes the connection; later calls fail with `.closed`.
    public func close() {
        if let handle { PQfinish(handle) }
        handle = nil
    }

    // MARK: Queries

    /// Runs one parameterized statement (text format) and returns its rows.
    ///
    /// The statement is prepared on first use and its prepared form reused (`PQprepare`, `PQexecPrepared`), up
    /// to `preparedStatementLimit` distinct statements per connection; parameters always travel separately.
    @discardableResult
    public func query(_ q: PGQuery) throws(PGError) -> PGResult {
        let handle = try liveHandle()
        if q.sql.utf8.contains(0) || q.parameters.contains(where: { $0?.utf8.contains(0) == true }) {
            throw PGError(code: .server, sqlState: "22021", message: "the query or a parameter contains a NUL byte")
        }
        let count = Int32(q.parameters.count)
        guard let name = try statementName(q.sql, parameterCount: count, on: handle) else {
            let result = try Self.withOptionalCStrings(q.parameters) { values in
                PQexecParams(handle, q.sql, count, nil, values, nil, nil, 0)
            }
            defer { PQclear(result) }
            return try consume(result)
        }
        let result = try Self.withOptionalCStrings(q.parameters) { values in
            PQexecPrepared(handle, name, count, values, nil, nil, 0)
        }
        defer { PQclear(result) }
        do {
            return try consume(result)
        } catch {
            // 26000: the statement is gone (DISCARD ALL). 0A000: a table changed under a cached plan
            // ("cached plan must not change result type"). Prepare again; outside a transaction nothing was
            // done, so run it again at once; inside one, the transaction has failed and the caller retries it.
            guard error.sqlState == "26000" || error.sqlState == "0A000" else { throw error }
            prepared[q.sql] = nil
            guard isConnected, PQtransactionStatus(handle) == PQTRANS_IDLE else { throw error }
            return try query(q)
        }
    }

    /// The prepared statement for `sql`, preparing it on first use; nil when the cache is full.
    private func statementName(
        _ sql: String,
        parameterCount: Int32,
        on handle: OpaquePointer
    ) throws(PGError) -> String? {
        if let name = prepared[sql] { return name }
        guard prepared.count < Self.preparedStatementLimit else { return nil }
        preparedCounter += 1
        let name = "otpd_\(preparedCounter)"
        let result = PQprepare(handle, name, sql, parameterCount, nil)
        defer { PQclear(result) }
        _ = try consume(result)
        prepared[sql] = name
        return name
    }

    /// Runs SQL text with the simple query protocol; it may contain several statements (migrations).
    public func execute(_ sql: String) throws(PGError) {
        let handle = try liveHandle()
        if sql.utf8.contains(0) {
            throw PGError(code: .server, sqlState: "22021", message: "the SQL text contains a NUL byte")
        }
        let result = PQexec(handle, sql)
        defer { PQclear(result) }
        _ = try consume(result)
    }

    // MARK: Internals used by PGWorker

    /// The connection's socket, or -1.
    var socket: Int32 {
        guard let handle else { return -1 }
        return PQsocket(handle)
    }

    /// Reads pending input (notifications, errors, EOF) without blocking; returns whether still connected.
    func consumePendingInput() -> Bool {
        guard let handle else { return false }
        _ = PQconsumeInput(handle)
        return PQstatus(handle) == CONNECTION_OK
    }

    /// The last error message, for diagnostics.
    var lastErrorMessage: String? {
        guard let handle else { return nil }
        return Self.errorMessage(handle)
    }

    // MARK: Helpers

    func liveHandle() throws(PGError) -> OpaquePointer {
        guard let handle else { throw .closed("connection is closed") }
        guard PQstatus(handle) == CONNECTION_OK else {
            throw .connection("not connected: " + Self.errorMessage(handle))
        }
        return handle
    }

    private func consume(_ result: OpaquePointer?) throws(PGError) -> PGResult {
        guard let result else { throw makeError(nil) }
        switch PQresultStatus(result) {
        case PGRES_TUPLES_OK, PGRES_SINGLE_TUPLE:
            let fieldCount = PQnfields(result)
            let rowCount = PQntuples(result)
            var columns: [String] = []
            columns.reserveCapacity(Int(fieldCount))
            for field in 0..<fieldCount {
                columns.append(PQfname(result, field).map { String(cString: $0) } ?? "?column?")
            }
            var rows: [PGRow] = []
            rows.reserveCapacity(Int(rowCount))
            for row in 0..<rowCount {
                var values: [String?] = []
                values.reserveCapacity(Int(fieldCount))
                for field in 0..<fieldCount {
                    if PQgetisnull(result, row, field) == 1 {
                        values.append(nil)
                    } else {
                        values.append(PQgetvalue(result, row, field).map { String(cString: $0) } ?? "")
                    }
                }
                rows.append(PGRow(columns: columns, values: values))
            }
            return PGResult(rows: rows, affectedRows: Self.affectedRows(result))
        case PGRES_COMMAND_OK, PGRES_EMPTY_QUERY:
            return PGResult(rows: [], affectedRows: Self.affectedRows(result))
        case PGRES_COPY_IN, PGRES_COPY_OUT, PGRES_COPY_BOTH:
            // COPY would leave the connection in a protocol state we do not drive; drop it.
            close()
            throw PGError(code: .connection, message: "COPY is not supported; the connection was closed")
        default:
            throw makeError(result)
        }
    }

    private static func affectedRows(_ result: OpaquePointer) -> Int {
        guard let text = PQcmdTuples(result) else { return 0 }
        return Int(String(cString: text)) ?? 0
    }

    private func makeError(_ result: OpaquePointer?) -> PGError {
        var sqlState: String?
        var message: String?
        if let result {
            sqlState = Self.field(result, "C")
            message = Self.field(result, "M")
        }
        if message == nil, let handle {
            message = Self.errorMessage(handle)
        }
        let lost =
            !isConnected
            || sqlState?.hasPrefix("08") == true
            || sqlState == "57P01" || sqlState == "57P02" || sqlState == "57P03"
        return PGError(code: lost ? .connection : .server, sqlState: sqlState, message: message)
    }

    private static func field(_ result: OpaquePointer, _ code: Unicode.Scalar) -> String? {
        guard let value = PQresultErrorField(result, Int32(code.value)) else { return nil }
        return String(cString: value)
    }

    /// `PQerrorMessage` without DETAIL/HINT lines (which can echo values) and trailing whitespace.
    static func errorMessage(_ handle: OpaquePointer) -> String {
        guard let raw = PQerrorMessage(handle) else { return "unknown libpq error" }
        var text = String(cString: raw)
        for marker in ["\nDETAIL:", "\nHINT:"] {
            if let range = text.range(of: marker) {
                text = String(text[..<range.lowerBound])
            }
        }
        while let last = text.last, last.isWhitespace { text.removeLast() }
        return text.isEmpty ? "unknown libpq error" : text
    }

    /// Calls `body` with a C array of NUL-terminated copies of `strings` (`nil` stays NULL); nil when empty.
    private static func withOptionalCStrings<R>(
        _ strings: [String?],
        _ body: (UnsafePointer<UnsafePointer<CChar>?>?) -> R
    ) throws(PGError) -> R {
        if strings.isEmpty { return body(nil) }
        guard let array = CStringArray(strings) else {
            throw PGError(code: .server, message: "out of memory for the statement's parameters")
        }
        return withExtendedLifetime(array) { body(array.base) }
    }
}

@available(*, unavailable)
extension PGConnection: Sendable {}
