import CLibPQ
import Foundation

#if canImport(Glibc)
@preconcurrency import Glibc
#elseif canImport(Musl)
@preconcurrency import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A libpq connection; not Sendable, so it is only used on one thread (normally its `PGWorker`'s).
///
/// Every call blocks the calling thread until the server answers, so never use it directly from
/// Swift concurrency or a NIO event loop: go through `PGWorker` or `PGPool`.
public final class PGConnection {
    private var handle: OpaquePointer?
    private var savepointCounter = 0
    /// Statements prepared on this connection, by SQL text (parse and plan once, not per call).
    private var prepared: [String: String] = [:]
    private var preparedCounter = 0

    /// How many distinct statements a connection keeps prepared; past it, statements run unprepared.
    public static let preparedStatementLimit = 512

    /// Connects (blocking) to the database at `url` with the session `settings`.
    public init(url: String, settings: PGSettings = .init()) throws(PGError) {
        let parsed = try PGURL(parsing: url)
        let pairs = parsed.connectionParameters(settings: settings)
        let handle = try Self.withKeywordArrays(pairs) { keywords, values in
            PQconnectdbParams(keywords, values, 0)
        }
        guard let handle else { throw .connection("could not allocate a libpq connection") }
        guard PQstatus(handle) == CONNECTION_OK else {
            let message = Self.errorMessage(handle)
            PQfinish(handle)
            throw .connection(message)
        }
        self.handle = handle
    }

    private init(handle: OpaquePointer) {
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

    /// Runs `body` inside BEGIN/COMMIT, rolling back when it throws (a savepoint when already in a transaction).
    ///
    /// If `body` swallowed a server error so that the transaction is aborted, the transaction is rolled
    /// back and a `.server` error with SQLSTATE 25P02 is thrown instead of a silent "COMMIT".
    @discardableResult
    public func transaction<T>(_ body: (PGConnection) throws -> T) throws -> T {
        let handle = try liveHandle()
        if PQtransactionStatus(handle) != PQTRANS_IDLE {
            return try nestedTransaction(body)
        }
        try execute("BEGIN")
        let value: T
        do {
            value = try body(self)
        } catch {
            if isConnected { try? execute("ROLLBACK") }
            throw error
        }
        if isConnected, let current = self.handle, PQtransactionStatus(current) == PQTRANS_INERROR {
            try? execute("ROLLBACK")
            throw PGError(code: .server, sqlState: "25P02", message: "the transaction was aborted by an earlier error")
        }
        try execute("COMMIT")
        return value
    }

    private func nestedTransaction<T>(_ body: (PGConnection) throws -> T) throws -> T {
        savepointCounter += 1
        let name = "otpd_savepoint_\(savepointCounter)"
        try execute("SAVEPOINT \(name)")
        let value: T
        do {
            value = try body(self)
        } catch {
            if isConnected { try? execute("ROLLBACK TO SAVEPOINT \(name); RELEASE SAVEPOINT \(name)") }
            throw error
        }
        if let current = self.handle, PQtransactionStatus(current) == PQTRANS_INERROR {
            try? execute("ROLLBACK TO SAVEPOINT \(name); RELEASE SAVEPOINT \(name)")
            throw PGError(code: .server, sqlState: "25P02", message: "the transaction was aborted by an earlier error")
        }
        try execute("RELEASE SAVEPOINT \(name)")
        return value
    }

    // MARK: LISTEN / NOTIFY

    /// Waits up to `timeout` for a notification on a channel this connection `LISTEN`s to; `nil` on timeout.
    public func waitForNotification(timeout: Duration) throws(PGError) -> PGNotification? {
        let handle = try liveHandle()
        let deadline = ContinuousClock.now.advanced(by: timeout)
        while true {
            guard PQconsumeInput(handle) == 1 else {
                throw .connection(Self.errorMessage(handle))
            }
            if let notify = PQnotifies(handle) {
                defer { PQfreemem(notify) }
                let channel = notify.pointee.relname.map { String(cString: $0) } ?? ""
                let payload = notify.pointee.extra.map { String(cString: $0) } ?? ""
                return PGNotification(channel: channel, payload: payload)
            }
            let remaining = millisecondsUntil(deadline)
            if remaining <= 0 { return nil }
            let socket = PQsocket(handle)
            guard socket >= 0 else { throw .connection("the connection has no socket") }
            var fds = [pollfd(fd: socket, events: Int16(POLLIN), revents: 0)]
            if pollSocket(&fds, timeoutMilliseconds: remaining) < 0 {
                throw .connection("poll() failed with errno \(errno)")
            }
        }
    }

    // MARK: Internals used by PGWorker

    /// Progress of a non-blocking connection attempt.
    enum ConnectProgress {
        case wantRead(Int32)
        case wantWrite(Int32)
        case ready
        case failed(PGError)
    }

    /// Starts a non-blocking connection attempt (`PQconnectStartParams`); drive it with `continueConnecting`.
    static func startConnecting(url: String, settings: PGSettings) throws(PGError) -> (PGConnection, ConnectProgress) {
        let parsed = try PGURL(parsing: url)
        let pairs = parsed.connectionParameters(settings: settings)
        let handle = try withKeywordArrays(pairs) { keywords, values in
            PQconnectStartParams(keywords, values, 0)
        }
        guard let handle else { throw .connection("could not allocate a libpq connection") }
        if PQstatus(handle) == CONNECTION_BAD {
            let message = errorMessage(handle)
            PQfinish(handle)
            throw .connection(message)
        }
        let connection = PGConnection(handle: handle)
        // Per the libpq docs, behave as if PQconnectPoll last returned PGRES_POLLING_WRITING.
        return (connection, .wantWrite(PQsocket(handle)))
    }

    /// Advances a non-blocking connection attempt after its socket became ready.
    func continueConnecting() -> ConnectProgress {
        guard let handle else { return .failed(.closed("connection is closed")) }
        switch PQconnectPoll(handle) {
        case PGRES_POLLING_OK: return .ready
        case PGRES_POLLING_READING: return .wantRead(PQsocket(handle))
        case PGRES_POLLING_WRITING: return .wantWrite(PQsocket(handle))
        default: return .failed(.connection(Self.errorMessage(handle)))
        }
    }

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

    /// Ends a transaction left open by a body; returns false when the connection is unusable.
    func resetSessionState() -> Bool {
        guard let handle, PQstatus(handle) == CONNECTION_OK else { return false }
        switch PQtransactionStatus(handle) {
        case PQTRANS_IDLE:
            return true
        case PQTRANS_INTRANS, PQTRANS_INERROR:
            do {
                try execute("ROLLBACK")
            } catch {
                return false
            }
            return isConnected
        default:
            return false
        }
    }

    /// The last error message, for diagnostics.
    var lastErrorMessage: String? {
        guard let handle else { return nil }
        return Self.errorMessage(handle)
    }

    // MARK: Helpers

    private func liveHandle() throws(PGError) -> OpaquePointer {
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

    private static func withKeywordArrays<R>(
        _ pairs: [(String, String)],
        _ body: (UnsafePointer<UnsafePointer<CChar>?>, UnsafePointer<UnsafePointer<CChar>?>) -> R
    ) throws(PGError) -> R {
        if pairs.contains(where: { $0.0.utf8.contains(0) || $0.1.utf8.contains(0) }) {
            throw .connection("invalid database URL: a part contains a NUL byte")
        }
        // NULL-terminated, as PQconnectdbParams and PQconnectStartParams expect.
        guard let keywords = CStringArray(pairs.map(\.0) + [nil]), let values = CStringArray(pairs.map(\.1) + [nil])
        else { throw .connection("out of memory for the connection parameters") }
        return withExtendedLifetime((keywords, values)) { body(keywords.base, values.base) }
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

/// A C array of `strdup` copies of strings (`nil` stays NULL), freed with the object.
///
/// One allocation owned by one object, instead of nested `withUnsafe...` closures: the array and every
/// string in it live exactly as long as the object.
private final class CStringArray {
    let base: UnsafePointer<UnsafePointer<CChar>?>
    private let storage: UnsafeMutablePointer<UnsafePointer<CChar>?>
    private let count: Int

    /// Copies `strings`; nil when memory is exhausted (`strdup` failed).
    init?(_ strings: [String?]) {
        count = strings.count
        storage = .allocate(capacity: max(count, 1))
        storage.initialize(repeating: nil, count: max(count, 1))
        base = UnsafePointer(storage)
        for (i, string) in strings.enumerated() {
            guard let string else { continue }
            guard let copy = strdup(string) else { return nil }  // deinit frees the copies made so far
            storage[i] = UnsafePointer(copy)
        }
    }

    deinit {
        for i in 0..<count { free(UnsafeMutableRawPointer(mutating: storage[i])) }
        storage.deallocate()
    }
}

@available(*, unavailable)
extension PGConnection: Sendable {}
