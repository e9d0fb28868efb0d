import Logging
import ServiceLifecycle
import Synchronization

/// The loop the dispatcher and the scheduler share: keep up to each lane's capacity of claimed items in flight,
/// claiming more as soon as any finishes, and when there is nothing to claim sleep until `signal` fires or the
/// claim's suggested wait passes; until graceful shutdown, then let the items in flight finish.
///
/// Lanes isolate work from each other: the dispatcher has one per channel, so a provider that hangs fills its
/// own lane and every other channel keeps its latency. A failed claim (database down) is logged and retried
/// after a backoff (1, 2, 4, then 8 s, or sooner when a local append signals that the database answers), which
/// graceful shutdown ends at once: a stopping instance is not held up by a claim it started against a database
/// that stopped answering. The work items handle their own errors.
func runClaimLoop<Item: Sendable, Lane: Hashable & Sendable>(
    _ what: String,
    logger: Logger,
    signal: Signal,
    capacity: [Lane: Int],
    lane: @escaping @Sendable (Item) -> Lane,
    claim: (_ free: [Lane: Int]) async throws -> (items: [Item], idleWait: Duration),
    work: @escaping @Sendable (Item) async -> Void
) async {
    let inFlight = InFlight<Lane>()
    var failures = 0
    await withDiscardingTaskGroup { group in
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            let busy = inFlight.counts
            let free = capacity.compactMapValues { $0 }.reduce(into: [Lane: Int]()) { free, entry in
                let n = entry.value - busy[entry.key, default: 0]
                if n > 0 { free[entry.key] = n }
            }
            guard !free.isEmpty else {
                await signal.wait(timeout: .seconds(1))  // every lane is full: a finishing item signals
                continue
            }
            do {
                let (items, idleWait) = try await claim(free)
                failures = 0
                if items.isEmpty {
                    await signal.wait(timeout: idleWait)
                    continue
                }
                for item in items {
                    let key = lane(item)
                    inFlight.add(key, 1)
                    group.addTask {
                        await work(item)
                        inFlight.add(key, -1)
                        signal.signal()
                    }
                }
            } catch {
                logger.warning("\(what): cannot claim work", metadata: ["error": "\(error)"])
                failures += 1
                let backoff = Duration.seconds(1 << min(failures - 1, 3))
                try? await cancelWhenGracefulShutdown { await signal.wait(timeout: backoff) }
            }
        }
    }
}

/// Items in flight per lane, shared between the loop and its work items.
final class InFlight<Lane: Hashable & Sendable>: Sendable {
    private let state = Mutex<[Lane: Int]>([:])

    /// The current counts.
    var counts: [Lane: Int] { state.withLock { $0 } }

    /// Adds `n` (negative when items finish) to a lane's count.
    func add(_ lane: Lane, _ n: Int) { state.withLock { $0[lane, default: 0] += n } }
}
