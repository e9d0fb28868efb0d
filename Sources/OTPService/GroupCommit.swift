import Postgres
import Synchronization

/// Group commit: commands from every client connection, the scheduler and the dispatcher are gathered into
/// shared transactions, so the database's commit rate bounds batches, not commands.
///
/// Each stream belongs to one lane (a hash of its id), and each lane runs at most one transaction at a time on a
/// pooled connection. A batch is whatever arrived while the lane's previous transaction was committing: an idle
/// lane commits a lone command at once, with no batching delay, and a busy one takes up to `maxBatch`.
///
/// Inside the transaction every command runs under its own savepoint, so a command that is refused, fails or
/// loses a version race is rolled back alone; a lost race is decided again in the lane's next batch. Counter
/// increments the commands make (`PendingCounts`) are written once per batch, in key order, just before COMMIT.
/// A caller hears its outcome only after the COMMIT that carries it returned; if the transaction fails, every
/// command in it gets that error, exactly as if it had run alone.
///
/// Two commands of one stream never run in two concurrent transactions of one instance (one lane per stream),
/// so the stream's rows are not fought over between lanes.
final class GroupCommit<Value: Sendable>: Sendable {
    /// One command's work inside the shared transaction; `attempt` counts its earlier lost races.
    typealias Work = @Sendable (_ conn: PGConnection, _ counts: PendingCounts, _ attempt: Int) throws -> Value

    private struct Job: Sendable {
        let work: Work
        var attempt: Int
        let continuation: CheckedContinuation<Value, any Error>
    }

    private struct Lane {
        var queue: [Job] = []
        var running = false
    }

    private enum Ending {
        case done(Value)
        case failed(any Error)
        case again
    }

    private let pool: PGPool
    private let lanes: Mutex<[Lane]>
    private let laneCount: Int
    private let maxBatch: Int
    private let maxAttempts: Int
    private let isLostRace: @Sendable (any Error) -> Bool

    /// Creates the committer with `lanes` lanes (at most as many transactions at once); a command that loses
    /// `maxAttempts` races in a row gets the last race's error.
    init(
        pool: PGPool,
        lanes: Int,
        maxBatch: Int = 64,
        maxAttempts: Int,
        isLostRace: @escaping @Sendable (any Error) -> Bool
    ) {
        self.pool = pool
        self.laneCount = max(lanes, 1)
        self.lanes = Mutex(Array(repeating: Lane(), count: max(lanes, 1)))
        self.maxBatch = max(maxBatch, 1)
        self.maxAttempts = maxAttempts
        self.isLostRace = isLostRace
    }

    /// Runs `work` in the lane of `key` (the stream id) and returns its result once its transaction committed.
    func run(key: String, _ work: @escaping Work) async throws -> Value {
        var hasher = Hasher()
        hasher.combine(key)
        let lane = Int(UInt(bitPattern: hasher.finalize()) % UInt(laneCount))
        return try await withCheckedThrowingContinuation { continuation in
            enqueue([Job(work: work, attempt: 0, continuation: continuation)], lane: lane)
        }
    }

    private func enqueue(_ jobs: [Job], lane: Int) {
        let start = lanes.withLock { lanes in
            lanes[lane].queue.append(contentsOf: jobs)
            if lanes[lane].running { return false }
            lanes[lane].running = true
            return true
        }
        if start { Task { await self.drain(lane) } }
    }

    /// Commits the lane's queue batch after batch until it is empty.
    private func drain(_ lane: Int) async {
        while true {
            let batch: [Job] = lanes.withLock { lanes in
                let taken = Array(lanes[lane].queue.prefix(maxBatch))
                lanes[lane].queue.removeFirst(taken.count)
                if taken.isEmpty { lanes[lane].running = false }
                return taken
            }
            if batch.isEmpty { return }
            let endings: [Ending]
            do {
                endings = try await pool.withConnection { conn in try self.commit(batch, on: conn) }
            } catch {
                // The transaction as a whole failed (connection lost, no connection, COMMIT refused or unknown):
                // nothing of it is recorded, and each command hears so, as it would have alone.
                for job in batch { job.continuation.resume(throwing: error) }
                continue
            }
            var again: [Job] = []
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
            if !again.isEmpty {
                // Ahead of what queued meanwhile, so a command that lost a race keeps its place.
                lanes.withLock { $0[lane].queue.insert(contentsOf: again, at: 0) }
            }
        }
    }

    /// One shared transaction: every job under its savepoint, then the batch's counters, then COMMIT.
    private func commit(_ batch: [Job], on conn: PGConnection) throws -> [Ending] {
        try conn.transaction { conn in
            let counts = PendingCounts()
            var endings: [Ending] = []
            endings.reserveCapacity(batch.count)
            for job in batch {
                do {
                    let result = try conn.transaction { conn in try job.work(conn, counts, job.attempt) }
                    counts.keep()
                    endings.append(.done(result))
                } catch {
                    counts.drop()
                    // A lost connection ends the whole transaction; anything else ends this command only.
                    if !conn.isConnected || (error as? PGError)?.isConnectionLost == true { throw error }
                    if isLostRace(error) && job.attempt + 1 < maxAttempts {
                        endings.append(.again)
                    } else {
                        endings.append(.failed(error))
                    }
                }
            }
            try counts.write(on: conn)
            return endings
        }
    }
}
