import EventStore
import Logging
import Postgres
import ServiceLifecycle

/// Deletes pacing rows that no limit's window reaches any more, so the pacing tables stay the size of a day's
/// traffic, and message rows older than a week (no receipt is expected for them). Runs every `interval` in short batches (each its own statement, so no long transaction holds
/// locks); any number of instances may run it at once.
public final class Janitor: Service {
    let pool: PGPool
    let pacing: Pacing
    let messages: Messages
    let logger: Logger
    let interval: Duration
    let batch: Int

    /// Creates a janitor.
    public init(
        pool: PGPool,
        pacing: Pacing,
        messages: Messages = Messages(),
        logger: Logger,
        interval: Duration = .seconds(60),
        batch: Int = 10_000
    ) {
        self.pool = pool
        self.pacing = pacing
        self.messages = messages
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

    /// How long a message's row is kept: receipts come within hours, if at all.
    static let messageDays = 7

    /// Removes every expired row, a batch at a time; returns how many.
    @discardableResult
    public func sweep() async throws -> Int {
        var total = 0
        let (pacing, messages, batch) = (self.pacing, self.messages, self.batch)
        while true {
            let n = try await pool.withConnection { conn in
                try pacing.prune(now: try EventStore.now(on: conn), batch: batch, on: conn)
            }
            total += n
            if n == 0 { break }
        }
        while true {
            let n = try await pool.withConnection { conn in
                try messages.sweep(olderThanDays: Self.messageDays, limit: batch, on: conn)
            }
            total += n
            if n == 0 { return total }
        }
    }
}
