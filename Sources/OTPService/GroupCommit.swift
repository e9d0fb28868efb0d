import Postgres
import Synchronization

/// Group commit: commands from every client connection, the scheduler and the dispatcher are gathered into
/// shared transactions, so the database's commit rate bounds batches, not commands.
///
/// Up to `transactions` transactions run at once, each on a pooled connection. A command that arrives while
/// fewer are running starts one at once, alone, with no batching delay. Otherwise it waits, and the next
/// transaction to finish takes its share of what queued meanwhile (the queue divided by `transactions`, at
/// most `maxBatch`) as its next batch. A
/// command whose stream is in a running transaction waits for that one to finish, so two commands of one stream
/// are never in two transactions of one instance at once, and the transactions do not fight over its rows.
///
/// Inside the transaction every command runs under its own savepoint, so a command that is refused, fails or
/// loses a version race is rolled back alone; a lost race is decided again in a later batch. A batch is at most
/// 32 commands: each savepoint that writes takes a subtransaction id, and past 64 in one transaction
/// PostgreSQL's snapshots overflow their cache (every reader then looks subtransactions up on disk). A lone
/// command runs in a transaction of its own, without a savepoint, as before group commit. Counter increments
/// the commands make (`PendingCounts`) are written once per batch, in key order, just before COMMIT. A caller
/// hears its outcome only after the COMMIT that carries it returned; if the transaction fails, every command in
/// it gets that error, exactly as if it had run alone.
final class GroupCommit<Value: Sendable>: Sendable {
    /// One command's work inside the shared transaction; `attempt` counts its earlier lost races.
    typealias Work = @Sendable (_ conn: PGConnection, _ counts: PendingCounts, _ attempt: Int) throws -> Value

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

    private let pool: PGPool
    private let state = Mutex(State())
    private let transactions: Int
    private let maxBatch: Int
    private let maxAttempts: Int
    private let isLostRace: @Sendable (any Error) -> Bool

    /// Creates the committer, running at most `transactions` transactions at once; a command that loses
    /// `maxAttempts` races in a row gets the last race's error.
    init(
        pool: PGPool,
        transactions: Int,
        maxBatch: Int = 32,
        maxAttempts: Int,
        isLostRace: @escaping @Sendable (any Error) -> Bool
    ) {
        self.pool = pool
        self.transactions = max(transactions, 1)
        self.maxBatch = max(maxBatch, 1)
        self.maxAttempts = maxAttempts
        self.isLostRace = isLostRace
    }

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
                if batch.count < share && (mine.contains(job.key) || !state.busy.contains(job.key)) {
                    batch.append(job)
                    mine.insert(job.key)
                } else {
                    left.append(job)
                }
            }
            state.queue = left
            state.busy.formUnion(mine)
            // A command left behind waits for the transaction that holds its stream, which takes it next.
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

    /// One transaction: every job under a savepoint of its own (a lone job needs none), then the batch's
    /// counters, then COMMIT.
    private func commit(_ batch: [Job], on conn: PGConnection) throws -> [Ending] {
        if batch.count == 1 {
            let job = batch[0]
            do {
                return [.done(try PendingCounts.transaction(on: conn) { try job.work(conn, $0, job.attempt) })]
            } catch {
                if !conn.isConnected || (error as? PGError)?.isConnectionLost == true { throw error }
                return [ending(of: job, failedWith: error)]
            }
        }
        return try conn.transaction { conn in
            let counts = PendingCounts()
            let results = try conn.eachUnderSavepoint(batch.count) { i in
                do {
                    let value = try batch[i].work(conn, counts, batch[i].attempt)
                    counts.keep()
                    return value
                } catch {
                    counts.drop()
                    throw error
                }
            }
            try counts.write(on: conn)
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
