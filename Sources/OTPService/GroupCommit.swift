import Postgres
import Synchronization

/// Group commit: commands from every client connection, the scheduler and the dispatcher are gathered into
/// shared transactions, so the database's commit rate bounds batches, not commands.
///
/// Up to `transactions` transactions run at once, each on a pooled connection. A command that arrives while
/// fewer are running starts one at once, alone, with no batching delay. Otherwise it waits, and the next
/// transaction to finish takes its share of what queued meanwhile (the queue divided by `transactions`, at
/// most `maxBatch`) as its next batch. A batch holds each stream once, and a command whose stream is in a
/// running transaction waits for that one to finish, so two commands of one stream are never in two
/// transactions of one instance at once, and the transactions do not fight over its rows.
///
/// A batch runs **merged** first: its commands one after the other in one transaction, each deciding and
/// checking its limits as it would alone, but the writes of their decisions (keys, events and heads, outbox
/// rows, deadlines: `SessionWrites`) kept and written at the end, one statement per table for the whole batch.
/// A command refused before it wrote anything (a decision's rejection) is simply left out. If one must be rolled
/// back alone (a limit refused it after its pacing rows were written, a database error, a version conflict
/// in the merged append), the transaction is rolled back and the batch runs again **careful**: every command
/// under its own savepoint, its writes written at once, so it is rolled back alone; a lost race is decided
/// again in a later batch. A batch is at most 32 commands: each savepoint that writes takes a subtransaction
/// id, and past 64 in one transaction PostgreSQL's snapshots overflow their cache (every reader then looks
/// subtransactions up on disk). A lone command runs in a transaction of its own, as before group commit.
///
/// Counter increments the commands make (`PendingCounts`) are written once per batch, in key order, just before
/// COMMIT. A caller hears its outcome only after the COMMIT that carries it returned; if the transaction fails,
/// every command in it gets that error, exactly as if it had run alone.
final class GroupCommit<Value: Sendable>: Sendable {
    /// One command's work inside the shared transaction; `attempt` counts its earlier lost races.
    typealias Work = @Sendable (_ conn: PGConnection, _ scope: BatchScope, _ attempt: Int) throws -> Value

    private struct Job: Sendable {
        let key: String
        let work: Work
        var attempt: Int
        let continuation: CheckedContinuation<Value, any Error>
    }

    private struct State {
        var queue: [Job] = []
        var running = 0
        /// The streams of the commands in running transactions.
        var busy: Set<String> = []
    }

    private enum Ending {
        case done(Value)
        case failed(any Error)
        case again
    }

    /// How the transactions ran so far: a lone command, a merged batch, or a batch run careful (after its merged
    /// run was rolled back).
    struct Tally: Sendable, Equatable {
        var alone = 0
        var merged = 0
        var careful = 0
    }

    private let pool: PGPool
    private let state = Mutex(State())
    private let tallied = Mutex(Tally())
    private let transactions: Int
    private let maxBatch: Int
    private let maxAttempts: Int
    private let isLostRace: @Sendable (any Error) -> Bool
    /// Reads a merged batch's streams at its start (`SessionStore.read`).
    private let read: @Sendable ([String], PGConnection) throws -> [String: StoredStream]
    /// Writes a merged batch's decisions (`SessionStore.write`).
    private let write: @Sendable (SessionWrites, PGConnection) throws -> Void

    /// Creates the committer, running at most `transactions` transactions at once; a command that loses
    /// `maxAttempts` races in a row gets the last race's error.
    init(
        pool: PGPool,
        transactions: Int,
        maxBatch: Int = 32,
        maxAttempts: Int,
        isLostRace: @escaping @Sendable (any Error) -> Bool,
        read: @escaping @Sendable ([String], PGConnection) throws -> [String: StoredStream],
        write: @escaping @Sendable (SessionWrites, PGConnection) throws -> Void
    ) {
        self.pool = pool
        self.transactions = max(transactions, 1)
        self.maxBatch = max(maxBatch, 1)
        self.maxAttempts = maxAttempts
        self.isLostRace = isLostRace
        self.read = read
        self.write = write
    }

    /// How the transactions ran so far.
    var tally: Tally { tallied.withLock { $0 } }

    /// Runs `work` (a command on the stream `key`) and returns its result once its transaction committed.
    func run(key: String, _ work: @escaping Work) async throws -> Value {
        try await withCheckedThrowingContinuation { continuation in
            let job = Job(key: key, work: work, attempt: 0, continuation: continuation)
            let start = state.withLock { state in
                state.queue.append(job)
                guard state.running < transactions else { return false }
                state.running += 1
                return true
            }
            if start { Task { await self.drain() } }
        }
    }

    /// Takes the next batch: queued commands, oldest first, whose stream no running transaction holds.
    private func nextBatch(after finished: [Job], retrying again: [Job]) -> [Job] {
        state.withLock { state in
            for job in finished { state.busy.remove(job.key) }
            // Ahead of what queued meanwhile, so a command that lost a race keeps its place.
            state.queue.insert(contentsOf: again, at: 0)
            // A fair share of what is queued, not all of it: with fewer commands waiting than transactions may
            // run, each runs alone in its own, and no connection idles while one transaction works through
            // what the others could have run beside it. Batches grow only when the queue outgrows the
            // connections, that is when commits are what the commands wait for.
            let share = min(maxBatch, max(1, (state.queue.count + transactions - 1) / transactions))
            var batch: [Job] = []
            var mine: Set<String> = []
            var left: [Job] = []
            for job in state.queue {
                if batch.count < share && !mine.contains(job.key) && !state.busy.contains(job.key) {
                    batch.append(job)
                    mine.insert(job.key)
                } else {
                    left.append(job)
                }
            }
            state.queue = left
            state.busy.formUnion(mine)
            // A command left behind waits for the transaction that holds its stream (or for the next batch,
            // when this one has its stream already).
            if batch.isEmpty { state.running -= 1 }
            return batch
        }
    }

    /// Commits batch after batch until nothing is left that this runner may take.
    private func drain() async {
        var batch = nextBatch(after: [], retrying: [])
        while !batch.isEmpty {
            var again: [Job] = []
            do {
                let jobs = batch
                let endings = try await pool.withConnection { conn in try self.commit(jobs, on: conn) }
                for (job, ending) in zip(batch, endings) {
                    switch ending {
                    case .done(let result): job.continuation.resume(returning: result)
                    case .failed(let error): job.continuation.resume(throwing: error)
                    case .again:
                        var retry = job
                        retry.attempt += 1
                        again.append(retry)
                    }
                }
            } catch {
                // The transaction as a whole failed (connection lost, no connection, COMMIT refused or unknown):
                // nothing of it is recorded, and each command hears so, as it would have alone.
                for job in batch { job.continuation.resume(throwing: error) }
            }
            batch = nextBatch(after: batch, retrying: again)
        }
    }

    /// One transaction for the batch: merged, or careful when merged would have to roll one command back alone.
    private func commit(_ batch: [Job], on conn: PGConnection) throws -> [Ending] {
        if batch.count == 1 {
            tallied.withLock { $0.alone += 1 }
            let job = batch[0]
            do {
                return [.done(try BatchScope.alone(on: conn) { try job.work(conn, $0, job.attempt) })]
            } catch {
                if !conn.isConnected || (error as? PGError)?.isConnectionLost == true { throw error }
                return [ending(of: job, failedWith: error)]
            }
        }
        if let endings = try merged(batch, on: conn) {
            tallied.withLock { $0.merged += 1 }
            return endings
        }
        tallied.withLock { $0.careful += 1 }
        return try careful(batch, on: conn)
    }

    /// Every job in one transaction without savepoints, their decisions' writes merged into one statement per
    /// table; nil (the transaction rolled back) when a job must be rolled back alone.
    private func merged(_ batch: [Job], on conn: PGConnection) throws -> [Ending]? {
        do {
            return try conn.transaction { conn in
                let scope = BatchScope(merging: true)
                // One statement reads every stream of the batch (the memo keeps their folds).
                scope.stored = try read(batch.map(\.key), conn)
                var endings: [Ending] = []
                endings.reserveCapacity(batch.count)
                for job in batch {
                    scope.clean = false
                    do {
                        endings.append(.done(try job.work(conn, scope, job.attempt)))
                        scope.counts.keep()
                    } catch {
                        if !conn.isConnected || (error as? PGError)?.isConnectionLost == true { throw error }
                        // Refused while nothing it did needs rolling back (a decision's rejection): its own ending.
                        guard scope.clean, !(error is PGError) else { throw RollBack() }
                        scope.counts.drop()
                        endings.append(ending(of: job, failedWith: error))
                    }
                }
                do {
                    try write(scope.deferred, conn)
                } catch {
                    if !conn.isConnected || (error as? PGError)?.isConnectionLost == true { throw error }
                    throw RollBack()
                }
                try scope.counts.write(on: conn)
                return endings
            }
        } catch is RollBack {
            return nil
        }
    }

    /// Every job under a savepoint of its own, its writes written at once, then the batch's counters, then
    /// COMMIT.
    private func careful(_ batch: [Job], on conn: PGConnection) throws -> [Ending] {
        try conn.transaction { conn in
            let scope = BatchScope(merging: false)
            let results = try conn.eachUnderSavepoint(batch.count) { i in
                do {
                    let value = try batch[i].work(conn, scope, batch[i].attempt)
                    scope.counts.keep()
                    return value
                } catch {
                    scope.counts.drop()
                    throw error
                }
            }
            try scope.counts.write(on: conn)
            return zip(batch, results).map { job, result in
                switch result {
                case .success(let value): .done(value)
                case .failure(let error): ending(of: job, failedWith: error)
                }
            }
        }
    }

    private func ending(of job: Job, failedWith error: any Error) -> Ending {
        isLostRace(error) && job.attempt + 1 < maxAttempts ? .again : .failed(error)
    }
}

/// What the commands of one transaction share: the ceiling counts not yet written and, in a merged batch, the
/// writes of their decisions, kept to be written together. Used on one connection's thread only.
final class BatchScope {
    /// The counters the commands incremented (written just before COMMIT).
    let counts = PendingCounts()
    /// Whether decisions' writes are kept in `deferred` (a merged batch) instead of written at once.
    let merging: Bool
    /// A merged batch's streams, as read at its start; a command loads its session from here.
    var stored: [String: StoredStream] = [:]
    /// A merged batch's writes so far.
    var deferred = SessionWrites()
    /// Set by the command running now while nothing it did needs rolling back (it has only read): an error it
    /// throws then is its own, and the rest of a merged batch goes on. Unset, an error rolls a merged batch back.
    var clean = false

    init(merging: Bool) {
        self.merging = merging
    }

    /// Runs one command in a transaction of its own, its writes at once, its counts just before COMMIT.
    static func alone<T>(on conn: PGConnection, _ body: (BatchScope) throws -> T) throws -> T {
        try conn.transaction { conn in
            let scope = BatchScope(merging: false)
            let value = try body(scope)
            scope.counts.keep()
            try scope.counts.write(on: conn)
            return value
        }
    }
}

/// A merged batch that must be rolled back and run careful.
private struct RollBack: Error {}
