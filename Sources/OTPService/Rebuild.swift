import EventStore
import Logging
import OTPDomain
import Postgres

/// Rebuilds the read models from the whole log: into shadow tables first, then over the live ones in one
/// transaction, so STATS and the views answer throughout (readers see the old rows until that commit).
///
/// 1. The shadow schema `projections_rebuild` gets empty copies of the tables (`LIKE ... INCLUDING ALL`).
/// 2. The log is folded from its start into summaries in memory, the same `Fold` the projector uses, and the
///    summaries are written to the shadow tables with the same `ReadModels.write`.
/// 3. One transaction takes the projector's lock (the live projector pauses), folds and writes what was appended
///    meanwhile, replaces the live tables' rows with the shadow's, and moves the projector's checkpoint to where
///    the rebuild read; then the shadow schema is dropped.
public enum Rebuild {
    /// Where a rebuild is.
    public struct Progress: Sendable {
        /// What it is doing: `reading`, `writing`, `swapping`, `done`.
        public var phase: String
        /// Events folded so far.
        public var events: Int
        /// Sessions known so far.
        public var sessions: Int
        /// Rows of summaries written to the shadow tables so far.
        public var written: Int
    }

    /// What a finished rebuild did.
    public struct Report: Sendable {
        /// Events folded.
        public var events: Int
        /// Sessions in the read models.
        public var sessions: Int
        /// Events left out because they cannot be read.
        public var unreadable: Int
        /// Seconds from start to the swap's commit.
        public var seconds: Double
    }

    static let shadow = ReadModels(schema: "projections_rebuild")
    static let rebuildLock: Int64 = 7_379_011

    /// Rebuilds on `conn` (a connection of its own: the rebuild holds a session-level lock on it), calling
    /// `progress` every batch.
    public static func run(
        on conn: PGConnection,
        batchSize: Int = 20_000,
        logger: Logger,
        progress: (Progress) -> Void = { _ in }
    ) throws -> Report {
        let clock = ContinuousClock()
        let started = clock.now
        let locked = try conn.query("SELECT pg_try_advisory_lock(\(rebuildLock)) AS ok").rows.first
        guard try locked?.decode("ok", as: Bool.self) == true else {
            throw PGError(code: .server, message: "another rebuild is running")
        }
        defer { _ = try? conn.query("SELECT pg_advisory_unlock(\(rebuildLock))") }
        try conn.execute("SET client_min_messages = warning")  // no NOTICE per table the CASCADE drops
        // Copying a large log's read models over the live ones takes longer than a command's statement timeout
        // (a server's own bound, and the client's bound on each answer, which follows it): this connection is
        // the rebuild's alone. A bare SET would leave the client's bound where it was, and the swap of a million
        // sessions would be dropped as a server that stopped answering.
        try conn.setStatementTimeout(.zero)
        let keys = try Dictionary(
            uniqueKeysWithValues: ReadModels.tables.map { ($0, try primaryKey(of: $0, on: conn)) }
        )
        try conn.execute("DROP SCHEMA IF EXISTS projections_rebuild CASCADE")
        try conn.execute("CREATE SCHEMA projections_rebuild")
        // The row tables start without indexes and get their primary keys once filled (a sorted build, instead
        // of a B-tree insertion per row); the shadow needs no other index, as nobody queries it.
        for t in ReadModels.tables {
            let copied = ReadModels.rowTables.contains(t) ? "INCLUDING DEFAULTS" : "INCLUDING ALL"
            try conn.execute("CREATE UNLOGGED TABLE projections_rebuild.\(t) (LIKE projections.\(t) \(copied))")
        }
        defer { try? conn.execute("DROP SCHEMA IF EXISTS projections_rebuild CASCADE") }

        var summaries: [String: SessionSummary] = [:]
        var position = LogPosition.start
        var events = 0
        var unreadable = 0
        while true {
            let batch = try EventStore.readLog(after: position, limit: batchSize, on: conn)
            guard let last = batch.last else { break }
            unreadable += Fold.apply(batch.map(\.record), to: &summaries, onEveryCore: true, logger: logger)
            events += batch.count
            position = last.position
            progress(Progress(phase: "reading", events: events, sessions: summaries.count, written: 0))
            if batch.count < batchSize { break }
        }

        let now = try EventStore.now(on: conn)
        var written = 0
        var chunk: [(before: SessionSummary?, after: SessionSummary)] = []
        chunk.reserveCapacity(5_000)
        for s in summaries.values {
            chunk.append((nil, s))
            if chunk.count == 5_000 {
                try conn.transaction { try shadow.write(chunk, appliedAt: now, fresh: true, on: $0) }
                written += chunk.count
                chunk.removeAll(keepingCapacity: true)
                progress(Progress(phase: "writing", events: events, sessions: summaries.count, written: written))
            }
        }
        try conn.transaction { try shadow.write(chunk, appliedAt: now, fresh: true, on: $0) }
        written += chunk.count
        progress(Progress(phase: "writing", events: events, sessions: summaries.count, written: written))
        for t in ReadModels.rowTables {
            try conn.execute("ALTER TABLE projections_rebuild.\(t) ADD PRIMARY KEY (\(keys[t]!))")
        }
        progress(Progress(phase: "swapping", events: events, sessions: summaries.count, written: written))

        try conn.transaction { conn in
            // The live projector holds this lock for each of its batches; waiting for it pauses the projector
            // until the swap commits, and the checkpoint it then reads is the rebuild's.
            try conn.query("SELECT pg_advisory_xact_lock(\(Projector.lockKey))")
            while true {
                let batch = try EventStore.readLog(after: position, limit: batchSize, on: conn)
                guard let last = batch.last else { break }
                let streams = Set(batch.map(\.record.streamID))
                var before: [String: SessionSummary] = [:]
                for id in streams { before[id] = summaries[id] }
                unreadable += Fold.apply(batch.map(\.record), to: &summaries, onEveryCore: true, logger: logger)
                try shadow.write(
                    streams.compactMap { id in summaries[id].map { (before[id], $0) } },
                    appliedAt: try EventStore.now(on: conn),
                    on: conn
                )
                events += batch.count
                position = last.position
                if batch.count < batchSize { break }
            }
            // In primary key order, the key's B-tree is filled page after page: about half the time of the
            // shadow's order for 720,000 sessions (docs/BENCHMARKS.md).
            for t in ReadModels.tables {
                try conn.execute("DELETE FROM projections.\(t)")
                try conn.execute(
                    "INSERT INTO projections.\(t) SELECT * FROM projections_rebuild.\(t) ORDER BY \(keys[t]!)"
                )
            }
            try Checkpoints.write(Projector.subscriber, position, on: conn)
        }
        let sessions = summaries.values.filter(\.isIssued).count
        progress(Progress(phase: "done", events: events, sessions: sessions, written: written))
        let elapsed = clock.now - started
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        return Report(events: events, sessions: sessions, unreadable: unreadable, seconds: seconds)
    }

    /// The live table's primary key columns, quoted and in order, as the catalog has them (read once per rebuild:
    /// the shadow's keys are built from them, and the swap inserts in their order).
    static func primaryKey(of table: String, on conn: PGConnection) throws -> String {
        let rows = try conn.query(
            """
            SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY k.n) AS columns
            FROM pg_index i
            CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, n)
            JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
            WHERE i.indrelid = ('projections.' || \(table))::regclass AND i.indisprimary
            """
        ).rows
        guard let columns = try rows.first?.decodeIfPresent("columns", as: String.self) else {
            throw PGError(code: .server, message: "projections.\(table) has no primary key")
        }
        return columns
    }
}
