import EventStore
import Logging
import OTPDomain
import Postgres
import ServiceLifecycle

/// Follows the ordered event log and keeps the read models (`ReadModels`) up to date for STATS, the SQL views
/// and the dashboard.
///
/// Each batch is one transaction: take the projector's advisory lock, read the checkpoint, read the next events
/// in `(tx_id, position)` order, fold them into the sessions' summaries, write the changed rows and the
/// aggregates' changes, move the checkpoint. So each event is applied exactly once, across restarts and crashes
/// mid-batch (the transaction rolls back, the checkpoint with it), and with any number of instances: the lock
/// is tried, not waited for, so one projects at a time and another takes over at its next look (every
/// `leaderWait`) when that one dies, because a dead connection's locks go with it.
public final class Projector: Service {
    /// How the projector reads.
    public struct Settings: Sendable {
        /// Events per batch.
        public var batchSize = 2_000
        /// How long to wait when the log has nothing new, unless a local append wakes the projector first: the
        /// longest delay before another instance's events are applied.
        public var idleWait: Duration = .milliseconds(200)
        /// How long to wait when another instance holds the lock.
        public var leaderWait: Duration = .milliseconds(500)
        /// The least time between two batches that were not full: appends arriving meanwhile share the next
        /// batch instead of each waking one (a batch is a transaction of a dozen statements, more than most
        /// commands), at the cost of this much more lag.
        public var batchGap: Duration = .milliseconds(25)
        /// Creates the defaults.
        public init() {}
    }

    /// What one batch did.
    public enum Outcome: Sendable, Equatable {
        /// Another instance projects now.
        case notLeader
        /// Nothing new to read.
        case idle
        /// Applied `events` events; `lagMs` is the largest append → apply delay among them; `full` when the
        /// batch was full (more is waiting).
        case applied(events: Int, lagMs: Int64, full: Bool)
    }

    /// The checkpoint's subscriber name and the advisory lock that makes one instance the projector.
    static let subscriber = "projector"
    static let lockKey: Int64 = 7_379_010

    let pool: PGPool
    let settings: Settings
    let logger: Logger
    let wake: Signal
    let onLag: @Sendable (Double) -> Void

    /// Creates a projector; `wake` is signalled by this instance's appends (`SessionStore.appended`), `onLag`
    /// is told the lag in seconds after each batch (0 when caught up).
    public init(
        pool: PGPool,
        settings: Settings = Settings(),
        wake: Signal = Signal(),
        logger: Logger,
        onLag: @escaping @Sendable (Double) -> Void = { _ in }
    ) {
        self.pool = pool
        self.settings = settings
        self.wake = wake
        self.logger = logger
        self.onLag = onLag
    }

    /// Runs until graceful shutdown.
    public func run() async throws {
        var failures = 0
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            var wait: Duration
            var wakeEarly = true
            do {
                switch try await step() {
                case .notLeader:
                    wait = settings.leaderWait
                    wakeEarly = false  // local appends are the leader's to apply: do not try the lock at each
                case .idle:
                    onLag(0)
                    wait = settings.idleWait
                case .applied(_, let lagMs, let full):
                    onLag(Double(lagMs) / 1000)
                    wait = full ? .zero : settings.idleWait
                    if !full && settings.batchGap > .zero {
                        let gap = settings.batchGap
                        try? await cancelWhenGracefulShutdown { try await Task.sleep(for: gap) }
                    }
                }
                failures = 0
            } catch {
                failures += 1
                logger.warning("projector: cannot apply events; retrying", metadata: ["error": "\(error)"])
                wait = .seconds(1 << min(failures - 1, 3))
                wakeEarly = false
            }
            if wait > .zero {
                let (wake, early, pause) = (self.wake, wakeEarly, wait)
                try? await cancelWhenGracefulShutdown {
                    if early { await wake.wait(timeout: pause) } else { try await Task.sleep(for: pause) }
                }
            }
        }
    }

    /// Applies the next batch, if this instance gets the lock.
    public func step() async throws -> Outcome {
        let (limit, logger) = (settings.batchSize, self.logger)
        return try await pool.withConnection { conn in try Self.project(limit: limit, on: conn, logger: logger) }
    }

    /// One batch in one transaction on `conn`; `beforeCommit` runs after the writes (tests use it to stand for a
    /// crash between the writes and the commit).
    static func project(
        limit: Int,
        on conn: PGConnection,
        logger: Logger,
        beforeCommit: (PGConnection) throws -> Void = { _ in }
    ) throws -> Outcome {
        try conn.transaction { conn in
            let locked = try conn.query("SELECT pg_try_advisory_xact_lock(\(lockKey)) AS ok").rows.first
            guard try locked?.decode("ok", as: Bool.self) == true else { return .notLeader }
            let checkpoint = try Checkpoints.read(subscriber, on: conn)
            let batch = try EventStore.readLog(after: checkpoint, limit: limit, on: conn)
            guard let last = batch.last else { return .idle }
            let now = try EventStore.now(on: conn)
            let streams = Set(batch.map(\.record.streamID))
            let before = try ReadModels.live.load(streams, on: conn)
            var after = before
            Fold.apply(batch.map(\.record), to: &after, logger: logger)
            try ReadModels.live.write(
                streams.compactMap { id in after[id].map { (before[id], $0) } },
                appliedAt: now,
                on: conn
            )
            try Checkpoints.write(subscriber, last.position, on: conn)
            try beforeCommit(conn)
            let lag = batch.map { now - $0.record.at }.max() ?? 0
            return .applied(events: batch.count, lagMs: max(0, lag), full: batch.count == limit)
        }
    }
}

/// Folding stored events into session summaries: the one place the projector and the rebuild decode them.
enum Fold {
    static let codec = EventCodec()

    /// Folds `records` (in log order) into `summaries`, creating the summaries of new streams. An event that
    /// cannot be read (an edited row) is skipped and logged: `otpctl verify` names it. `onEveryCore` decodes the
    /// events on every core first (a rebuild's large batches; the live projector leaves the cores to commands).
    @discardableResult
    static func apply(
        _ records: [EventRecord],
        to summaries: inout [String: SessionSummary],
        onEveryCore: Bool = false,
        logger: Logger
    ) -> Int {
        let decoded =
            onEveryCore ? Parallel.map(records, threshold: 512) { r in Result { try codec.decode(r, key: nil) } } : nil
        var unreadable = 0
        for (i, r) in records.enumerated() {
            guard let stream = StreamID(text: r.streamID) else { continue }
            let event: SessionEvent
            do { event = try decoded?[i].get() ?? codec.decode(r, key: nil) } catch {
                unreadable += 1
                logger.error(
                    "projector: an event cannot be read and is left out of the read models",
                    metadata: ["stream": "\(r.streamID)", "version": "\(r.version)", "error": "\(error)"]
                )
                continue
            }
            summaries[r.streamID, default: SessionSummary(stream: stream)].apply(event, version: r.version, at: r.at)
        }
        return unreadable
    }
}

/// The subscribers' checkpoints (`checkpoints` table): where each has read the log up to.
enum Checkpoints {
    static func read(_ subscriber: String, on conn: PGConnection) throws -> LogPosition {
        let rows = try conn.query(
            "SELECT tx_id::text AS tx, position FROM checkpoints WHERE subscriber = \(subscriber)"
        ).rows
        guard let row = rows.first else { return .start }
        guard let tx = UInt64(try row.decode("tx", as: String.self)) else {
            throw PGError(code: .decoding, message: "checkpoint \(subscriber): bad tx_id")
        }
        return LogPosition(transactionID: tx, position: try row.decode("position"))
    }

    static func write(_ subscriber: String, _ p: LogPosition, on conn: PGConnection) throws {
        try conn.query(
            """
            INSERT INTO checkpoints (subscriber, tx_id, position)
            VALUES (\(subscriber), \(String(p.transactionID))::xid8, \(p.position))
            ON CONFLICT (subscriber) DO UPDATE SET tx_id = excluded.tx_id, position = excluded.position
            """
        )
    }
}
