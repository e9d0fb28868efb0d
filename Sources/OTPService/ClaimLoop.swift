import Logging
import ServiceLifecycle

/// The loop the dispatcher and the scheduler share: claim a batch of due rows, work them concurrently, and when
/// there is nothing to do sleep until `signal` fires or the claim's suggested wait passes; until graceful shutdown.
///
/// A failed claim (database down) is logged and retried after a second; the work items handle their own errors.
func runClaimLoop<Item: Sendable>(
    _ what: String,
    logger: Logger,
    signal: Signal,
    claim: () async throws -> (items: [Item], idleWait: Duration),
    work: @escaping @Sendable (Item) async -> Void
) async {
    while !Task.isShuttingDownGracefully && !Task.isCancelled {
        do {
            let (items, idleWait) = try await claim()
            if items.isEmpty {
                await signal.wait(timeout: idleWait)
                continue
            }
            await withTaskGroup(of: Void.self) { group in
                for item in items { group.addTask { await work(item) } }
            }
        } catch {
            logger.warning("\(what): cannot claim work", metadata: ["error": "\(error)"])
            await signal.wait(timeout: .seconds(1))
        }
    }
}
