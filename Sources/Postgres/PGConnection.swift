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
/// Swift concurrency or a NIO event loop: go through `PGWorker` or `PGPool`. No call waits longer than
/// `responseTimeout` for an answer: a server that stops answering gets its connection dropped and the call
/// fails with `.connection`.
public final class PGConnection {
    /// The libpq connection; nil once closed.
    private(set) var handle: OpaquePointer?
    /// The longest a call waits for the server's next answer (`PGSettings.responseTimeout`); nil waits forever.
    /// It follows the server's statement timeout: change that with `setStatementTimeout`, never with a bare `SET`.
    public private(set) var responseTimeout: Duration?
    /// How long past the statement timeout the client waits (`PGSettings.responseGrace`).
    let responseGrace: Duration
    /// Numbers the savepoints of nested transactions.
    var savepointCounter = 0
    /// Whether `transaction` has begun a transaction whose BEGIN is not sent yet: it goes out in the same round
    /// trip as the transaction's first statement, and a transaction that runs none sends neither BEGIN nor COMMIT.
    var beginPending = false
    /// Statements prepared on this connection, by SQL text (parse and plan once, not per call).
    private var prepared: [String: String] = [:]
    private var preparedCounter = 0

    /// How many distinct statements a connection keeps prepared; past it, statements run unprepared.
    public static let preparedStatementLimit = 512

    init(handle: OpaquePointer, settings: PGSettings) {
        self.handle = handle
        self.responseTimeout = settings.responseTimeout
        self.responseGrace = settings.responseGrace
    }

    /// Sets the session's `statement_timeout` (zero disables it) and moves the client's own bound on each
    /// answer with it, so a statement the server now lets run longer is not dropped by the client at the old
    /// bound. With zero only TCP keepalives bound the wait, as for a connection opened with that setting. Call
    /// it outside a transaction: a rollback would undo the `SET` but not the client's bound.
    public func setStatementTimeout(_ timeout: Duration) throws(PGError) {
        var settings = PGSettings(statementTimeout: timeout)
        settings.responseGrace = responseGrace
        try execute("SET statement_timeout = \(PGSettings.milliseconds(timeout))")
        responseTimeout = settings.responseTimeout
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
        let send = try sender(for: q, on: handle)
        do throws(PGError) {
            guard beginPending else { return try exchange(on: handle, send) }
            switch try pipeline([send], on: handle)[0] {
            case .success(let result): return result
            case .failure(let error): throw error
            case nil: throw makeError(nil)
            }
        } catch {
            // Prepare again; outside a transaction nothing was done, so run it again at once; inside one, the
            // transaction has failed and the caller retries it.
            guard prepared[q.sql] != nil, error.isStalePreparedStatement else { throw error }
            prepared[q.sql] = nil
            guard isConnected, PQtransactionStatus(handle) == PQTRANS_IDLE else { throw error }
            return try query(q)
        }
    }

    /// Runs a batch's statements in one round trip (libpq's pipeline mode), after a BEGIN not sent yet, and
    /// hands each its result in order. The first statement the server refuses ends the batch: those after it do
    /// not run, and what its check throws (by default the error itself) is thrown.
    public func run(_ batch: PGBatch) throws {
        guard !batch.items.isEmpty else { return }
        let handle = try liveHandle()
        var sends: [Send] = []
        sends.reserveCapacity(batch.items.count)
        for item in batch.items { sends.append(try sender(for: item.query, on: handle)) }
        let results = try pipeline(sends, on: handle)
        for (item, result) in zip(batch.items, results) {
            guard let result else { break }
            // Prepared again on next use; the transaction this ran in has failed and its caller retries it.
            if case .failure(let error) = result, error.isStalePreparedStatement { prepared[item.query.sql] = nil }
            try item.check(result)
        }
    }

    typealias Send = (OpaquePointer) throws(PGError) -> Int32

    /// The libpq call that sends `q`: as its prepared statement (preparing it on first use), or unprepared once
    /// the cache is full.
    private func sender(for q: PGQuery, on handle: OpaquePointer) throws(PGError) -> Send {
        if q.sql.utf8.contains(0) || q.parameters.contains(where: { $0?.utf8.contains(0) == true }) {
            throw PGError(code: .server, sqlState: "22021", message: "the query or a parameter contains a NUL byte")
        }
        let count = Int32(q.parameters.count)
        guard let name = try statementName(q.sql, parameterCount: count, on: handle) else {
            return { handle throws(PGError) in
                try Self.withOptionalCStrings(q.parameters) { values in
                    PQsendQueryParams(handle, q.sql, count, nil, values, nil, nil, 0)
                }
            }
        }
        return { handle throws(PGError) in
            try Self.withOptionalCStrings(q.parameters) { values in
                PQsendQueryPrepared(handle, name, count, values, nil, nil, 0)
            }
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
        _ = try exchange(on: handle) { handle in PQsendPrepare(handle, name, sql, parameterCount, nil) }
        prepared[sql] = name
        return name
    }

    /// Runs SQL text with the simple query protocol; it may contain several statements (migrations).
    public func execute(_ sql: String) throws(PGError) {
        let handle = try liveHandle()
        if sql.utf8.contains(0) {
            throw PGError(code: .server, sqlState: "22021", message: "the SQL text contains a NUL byte")
        }
        // A BEGIN not sent yet leads the same text (a savepoint as a transaction's first statement, say).
        let text = beginPending ? "BEGIN; " + sql : sql
        beginPending = false
        _ = try exchange(on: handle) { handle in PQsendQuery(handle, text) }
    }

    // MARK: Bounded round trips

    /// Sends one request with `send` (a `PQsend…` call) and collects its results without ever blocking in libpq.
    ///
    /// The socket is non-blocking; the thread waits in `poll()` for at most `responseTimeout` for each answer
    /// (the deadline restarts when a result arrives, so a script of many statements is bounded per statement).
    /// When the deadline passes, the server is not answering: the connection is closed (a cancel request would
    /// hang on the same silent server) and `.connection` is thrown. Like `PQexec`, the first error wins,
    /// otherwise the last result is returned.
    private func exchange(
        on handle: OpaquePointer,
        _ send: (OpaquePointer) throws(PGError) -> Int32
    ) throws(PGError) -> PGResult {
        if PQisnonblocking(handle) == 0, PQsetnonblocking(handle, 1) != 0 {
            throw .connection("could not make the connection non-blocking: " + Self.errorMessage(handle))
        }
        var deadline = responseTimeout.map { ContinuousClock.now.advanced(by: $0) }
        guard try send(handle) == 1 else { throw makeError(nil) }
        try flush(handle, until: deadline)
        var outcome: PGResult?
        var firstError: PGError?
        while true {
            try awaitResult(handle, until: deadline)
            guard let result = PQgetResult(handle) else { break }
            defer { PQclear(result) }
            deadline = responseTimeout.map { ContinuousClock.now.advanced(by: $0) }
            do {
                outcome = try consume(result)
            } catch {
                // consume closes the connection on COPY: nothing more can be read from it.
                if self.handle == nil { throw error }
                if PQstatus(handle) == CONNECTION_BAD { throw firstError ?? error }
                if firstError == nil { firstError = error }
            }
        }
        if let firstError { throw firstError }
        guard let outcome else { throw makeError(nil) }
        return outcome
    }

    /// Sends `sends` as one pipeline with one sync, after a BEGIN not sent yet, and returns each one's result in
    /// order: nil for a statement that did not run because one before it failed. Whatever breaks the pipeline
    /// itself (a send, a lost connection, a server that stops answering) closes the connection, whose pipeline
    /// state is then unknown, and is thrown as `.connection`.
    private func pipeline(_ sends: [Send], on handle: OpaquePointer) throws(PGError) -> [Result<PGResult, PGError>?] {
        let begin = beginPending
        beginPending = false
        if PQisnonblocking(handle) == 0, PQsetnonblocking(handle, 1) != 0 {
            throw .connection("could not make the connection non-blocking: " + Self.errorMessage(handle))
        }
        guard PQenterPipelineMode(handle) == 1 else { throw makeError(nil) }
        var results: [Result<PGResult, PGError>?]
        do {
            results = try pipelined(sends, begin: begin, on: handle)
        } catch {
            close()
            throw error.code == .connection ? error : .connection(error.message)
        }
        guard PQexitPipelineMode(handle) == 1, results.count == sends.count + (begin ? 1 : 0) else {
            close()
            throw .connection("the database connection's pipeline did not end as it began")
        }
        // BEGIN's own result: only its failure, which left every statement unrun, is reported (as the first's).
        if begin, case .failure(let error) = results.removeFirst(), !results.isEmpty { results[0] = .failure(error) }
        return results
    }

    /// Sends BEGIN (when `begin`), the statements and a sync, and reads every result up to the sync's.
    private func pipelined(
        _ sends: [Send],
        begin: Bool,
        on handle: OpaquePointer
    ) throws(PGError) -> [Result<PGResult, PGError>?] {
        var deadline = responseTimeout.map { ContinuousClock.now.advanced(by: $0) }
        if begin, PQsendQueryParams(handle, "BEGIN", 0, nil, nil, nil, nil, 0) != 1 { throw makeError(nil) }
        for send in sends where try send(handle) != 1 { throw makeError(nil) }
        guard PQpipelineSync(handle) == 1 else { throw makeError(nil) }
        try flush(handle, until: deadline)
        var results: [Result<PGResult, PGError>?] = []
        results.reserveCapacity(sends.count + 1)
        var current: Result<PGResult, PGError>?
        // Each statement's results end with a null result; the sync's own result ends the pipeline.
        while true {
            try awaitResult(handle, until: deadline)
            guard let result = PQgetResult(handle) else {
                if PQstatus(handle) == CONNECTION_BAD {
                    if case .failure(let error) = current { throw error }
                    throw makeError(nil)
                }
                results.append(current)
                current = nil
                continue
            }
            deadline = responseTimeout.map { ContinuousClock.now.advanced(by: $0) }
            let status = PQresultStatus(result)
            if status == PGRES_PIPELINE_SYNC {
                PQclear(result)
                break
            }
            if status != PGRES_PIPELINE_ABORTED {
                do {
                    let value = try consume(result)
                    if case .failure = current {} else { current = .success(value) }
                } catch {
                    if self.handle == nil || PQstatus(handle) == CONNECTION_BAD {
                        PQclear(result)
                        throw error
                    }
                    if case .failure = current {} else { current = .failure(error) }
                }
            }
            PQclear(result)
        }
        return results
    }

    /// Writes libpq's output buffer to the socket, reading input meanwhile, until it is empty or `deadline` passes.
    private func flush(_ handle: OpaquePointer, until deadline: ContinuousClock.Instant?) throws(PGError) {
        while true {
            let flushed = PQflush(handle)
            if flushed == 0 { return }
            if flushed < 0 { throw .connection(Self.errorMessage(handle)) }
            let ready = try wait(handle, for: Int16(POLLIN | POLLOUT), until: deadline)
            if ready & Int16(POLLIN) != 0, PQconsumeInput(handle) != 1 {
                throw .connection(Self.errorMessage(handle))
            }
        }
    }

    /// Reads input until a result can be taken without blocking (`PQisBusy` is false) or `deadline` passes.
    private func awaitResult(_ handle: OpaquePointer, until deadline: ContinuousClock.Instant?) throws(PGError) {
        while PQisBusy(handle) == 1 {
            _ = try wait(handle, for: Int16(POLLIN), until: deadline)
            // On failure the connection is bad and PQgetResult reports the error (with the server's SQLSTATE
            // when its message arrived before the connection closed).
            guard PQconsumeInput(handle) == 1 else { return }
        }
    }

    /// Polls the socket for `events` until `deadline`; returns what happened, or drops the connection and throws.
    private func wait(
        _ handle: OpaquePointer,
        for events: Int16,
        until deadline: ContinuousClock.Instant?
    ) throws(PGError) -> Int16 {
        let socket = PQsocket(handle)
        guard socket >= 0 else { throw .connection("the connection has no socket") }
        var fds = [pollfd(fd: socket, events: events, revents: 0)]
        let ready = pollSocket(&fds, timeoutMilliseconds: deadline.map(millisecondsUntil) ?? -1)
        if ready < 0 { throw .connection("poll() failed with errno \(errno)") }
        if ready == 0 {
            close()
            let limit = responseTimeout.map { " within \($0)" } ?? ""
            throw .connection("the database did not answer\(limit); the connection was dropped")
        }
        // Errors and hang-ups are reported by the libpq call that follows.
        return fds[0].revents
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
