import EventStore
import Logging
import Postgres
import ServiceLifecycle

/// Deletes pacing rows that no limit's window reaches any more, so the pacing tables stay the size of a day's
/// traffic. Runs every `interval` in short batches (each its own statement, so no long transaction holds
/// locks); any number of instances may run it at once.
public final class Janitor: Service {
    let pool: PGPool
    let pacing: Pacing
    let logger: Logger
    let interval: Duration
    let batch: Int

    /// Creates a janitor.
    public init(
        pool: PGPool,
        pacing: Pacing,
        logger: Logger,
        interval: Duration = .seconds(60),
        batch: Int = 10_000
    ) {
        self.pool = pool
        self.pacing = pacing
        self.logger = logger
        self.interval = interval
        self.batch = batch
    }

    /// Runs until graceful shutdown.
    public func run() async throws {
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            do {
                let removed = try await sweep()
                if removed > 0 {
                    logger.debug("janitor: removed expired pacing rows", metadata: ["rows": "\(removed)"])
                }
            } catch {
                logger.warning("janitor: cannot remove expired pacing rows", metadata: ["error": "\(error)"])
            }
            // Graceful shutdown ends the sleep at once; the loop condition then ends the service.
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: self.interval) }
        }
    }

    /// Removes every expired row, a batch at a time; returns how many.
    @discardableResult
    public func sweep() async throws -> Int {
        var total = 0
        while true {
            let (pacing, batch) = (self.pacing, self.batch)
            let n = try await pool.withConnection { conn in
                try pacing.prune(now: try EventStore.now(on: conn), batch: batch, on: conn)
            }
            total += n
            if n == 0 { return total }
        }
    }
}
