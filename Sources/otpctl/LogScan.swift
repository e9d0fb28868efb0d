import Dispatch
import EventStore
import Foundation
import OTPService
import Postgres
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A stream's row in the projection (`projections.session_view`), as far as an audit compares it.
struct ProjectionRow: Sendable, Hashable {
    /// The status the projection serves.
    var status: String
    /// The last event version the projector applied.
    var version: Int
}

/// One stream as the scan read it: its events, its recorded head and what else was asked for.
struct ScannedStream: Sendable {
    /// The stream id, `tenant/session`.
    var id: String
    /// Its events in version order (empty when all were deleted and only the head is left).
    var records: [EventRecord] = []
    /// Its recorded head, nil when none.
    var head: StreamHead?
    /// Its sealed session key (only when the scan reads keys; nil when erased).
    var sealedKey: [UInt8]?
    /// Its projection row (only when the scan reads the projection and the row exists).
    var projection: ProjectionRow?
}

/// What a scan reads besides the events and heads.
struct ScanOptions: Sendable {
    /// Only streams whose id starts with this (a tenant and `/`).
    var prefix: String?
    /// Read the session keys (to open sealed data when folding).
    var keys = false
    /// Read the projection rows, when `projections.session_view` exists.
    var projection = false
    /// Events per statement.
    var batchSize = 20_000
}

/// What the scan learned before its first page, inside its snapshot.
struct ScanStart: Sendable {
    /// The database clock (Unix epoch milliseconds).
    var nowMs: Int64
    /// Whether `projections.session_view` exists (only asked when the scan reads the projection).
    var hasProjection: Bool
}

/// Totals of a finished scan.
struct ScanTotals: Sendable {
    var streams = 0
    var events = 0
    var seconds = 0.0
    var eventsPerSecond: Int { seconds > 0 ? Int(Double(events) / seconds) : events }
}

/// Reads the whole event log stream by stream, in few statements, and works on the streams on every core.
///
/// A reader thread of its own walks the events table in `(stream_id, version)` order in keyset pages of
/// `batchSize` rows, with each page's heads (and keys and projection rows when asked) read by stream-id range
/// (`StreamRange`), all inside one REPEATABLE READ READ ONLY transaction, so events, heads and projection come
/// from the same instant even while otpd appends. It stays at most two pages ahead of the workers. Each page's
/// complete streams are then handed to `work` on every core (`concurrentPerform`), and the results to `report`
/// on the calling thread in stream order (streams that have only a head come after each page's others).
enum LogScan {
    /// The reader's settings: a page is one short statement, but the reader may wait for the workers.
    static let settings = PGSettings(
        statementTimeout: .seconds(120),
        idleInTransactionTimeout: .seconds(600),
        applicationName: "otpctl"
    )

    /// Scans every stream; `work` runs concurrently (any thread), `report` on the calling thread.
    static func run<Verdict: Sendable>(
        url: String,
        options: ScanOptions,
        start: (ScanStart) -> Void = { _ in },
        work: @escaping @Sendable (ScannedStream) -> Verdict,
        report: (Verdict) -> Void
    ) throws -> ScanTotals {
        let queue = PageQueue(depth: 2)
        let thread = Thread { read(url: url, options: options, into: queue) }
        thread.name = "otpctl-reader"
        thread.start()
        defer { queue.cancel() }
        let began = ContinuousClock.now
        var totals = ScanTotals()
        let progress = Progress()
        var pending: ScannedStream?
        var started = false
        while true {
            let page: LogPage
            switch queue.take() {
            case .success(let p): page = p
            case .failure(let error):
                progress.finish()
                throw error
            }
            if !started {
                started = true
                start(page.start)
            }
            var streams: [ScannedStream] = []
            var inPage = Set<String>()
            for record in page.records {
                if pending?.id == record.streamID {
                    pending?.records.append(record)
                    continue
                }
                if let done = pending { streams.append(done) }
                inPage.insert(record.streamID)
                pending = ScannedStream(
                    id: record.streamID,
                    records: [record],
                    head: page.heads[record.streamID],
                    sealedKey: page.keys[record.streamID],
                    projection: page.projection[record.streamID]
                )
            }
            // The last stream may go on in the next page; at the end it is complete.
            if page.isLast, let done = pending {
                streams.append(done)
                pending = nil
            }
            // A head with no event in its range: every event of that stream was deleted.
            for (id, head) in page.heads.sorted(by: { $0.key < $1.key }) where !inPage.contains(id) {
                streams.append(ScannedStream(id: id, head: head, projection: page.projection[id]))
            }
            for verdict in Parallel.map(streams, work) { report(verdict) }
            totals.streams += streams.count
            totals.events += streams.reduce(0) { $0 + $1.records.count }
            totals.seconds = (ContinuousClock.now - began).inSeconds
            progress.show(totals)
            if page.isLast { break }
        }
        progress.finish()
        totals.seconds = (ContinuousClock.now - began).inSeconds
        return totals
    }

    /// The reader thread: pages until the end of the log, or until the scan is cancelled.
    private static func read(url: String, options: ScanOptions, into queue: PageQueue) {
        do {
            let conn = try PGConnection(url: url, settings: settings)
            defer { conn.close() }
            try conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            let first = try conn.query(
                """
                SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint,
                       to_regclass('projections.session_view') IS NOT NULL
                """
            ).rows[0]
            let projectionExists: Bool = try first.decode(1)
            let start = ScanStart(nowMs: try first.decode(0), hasProjection: options.projection && projectionExists)
            var after: (stream: String, version: Int)?
            while !queue.isCancelled {
                let records = try EventStore.readInStreamOrder(
                    after: after,
                    limit: options.batchSize,
                    prefix: options.prefix,
                    on: conn
                )
                let isLast = records.count < options.batchSize
                let range = StreamRange(
                    after: after?.stream,
                    through: isLast ? nil : records.last?.streamID,
                    prefix: options.prefix
                )
                let keys = try options.keys ? SessionReplay.sealedKeys(in: range, on: conn) : [:]
                let rows = try start.hasProjection ? projection(in: range, on: conn) : [:]
                let page = LogPage(
                    start: start,
                    records: records,
                    heads: try EventStore.heads(in: range, on: conn),
                    keys: keys,
                    projection: rows,
                    isLast: isLast
                )
                queue.put(.success(page))
                if isLast { break }
                if let last = records.last { after = (last.streamID, last.version) }
            }
            try? conn.execute("COMMIT")
        } catch {
            queue.put(.failure(error))
        }
    }

    /// The projection rows of the streams in `range`.
    private static func projection(in range: StreamRange, on conn: PGConnection) throws -> [String: ProjectionRow] {
        let rows = try conn.query(range.query("SELECT stream_id, status, version FROM projections.session_view")).rows
        var out: [String: ProjectionRow] = [:]
        out.reserveCapacity(rows.count)
        for row in rows {
            out[try row.decode(0, as: String.self)] = ProjectionRow(
                status: try row.decodeIfPresent("status", as: String.self) ?? "",
                version: try row.decodeIfPresent("version", as: Int.self) ?? 0
            )
        }
        return out
    }
}

/// One page of the log as the reader hands it over.
struct LogPage: Sendable {
    var start: ScanStart
    /// Events in `(stream_id, version)` order.
    var records: [EventRecord]
    /// Heads, keys and projection rows of the page's stream-id range.
    var heads: [String: StreamHead]
    var keys: [String: [UInt8]]
    var projection: [String: ProjectionRow]
    /// Whether this is the end of the log.
    var isLast: Bool
}

/// A bounded queue of pages between the reader thread and the workers.
final class PageQueue: Sendable {
    private let items = Mutex<[Result<LogPage, any Error>]>([])
    private let filled = DispatchSemaphore(value: 0)
    private let free: DispatchSemaphore
    private let cancelled = Atomic<Bool>(false)

    init(depth: Int) { free = DispatchSemaphore(value: depth) }

    var isCancelled: Bool { cancelled.load(ordering: .relaxed) }

    /// Adds a page, waiting while `depth` pages wait already (never once cancelled).
    func put(_ page: Result<LogPage, any Error>) {
        if isCancelled { return }
        free.wait()
        items.withLock { $0.append(page) }
        filled.signal()
    }

    /// The next page, waiting for it.
    func take() -> Result<LogPage, any Error> {
        filled.wait()
        let page = items.withLock { $0.removeFirst() }
        free.signal()
        return page
    }

    /// Stops the reader at its next page.
    func cancel() {
        cancelled.store(true, ordering: .relaxed)
        free.signal()
    }
}

/// The progress line on a terminal: streams, events and events/s, redrawn a few times a second on stderr.
final class Progress {
    private let enabled = isatty(STDERR_FILENO) == 1
    private var last = ContinuousClock.now
    private var shown = false

    func show(_ totals: ScanTotals) {
        guard enabled, ContinuousClock.now - last >= .milliseconds(250) else { return }
        last = ContinuousClock.now
        shown = true
        let line = "\r\(totals.streams) streams, \(totals.events) events, \(totals.eventsPerSecond) events/s\u{1B}[K"
        FileHandle.standardError.write(Data(line.utf8))
    }

    func finish() {
        if shown { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
        shown = false
    }
}

extension Duration {
    /// The duration in seconds.
    var inSeconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
