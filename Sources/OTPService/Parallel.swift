import Foundation
import Synchronization

/// Work spread over every core, for the readers of the whole log (`otpctl rebuild`, `replay`, `verify`), where
/// decoding events is most of the cost.
public enum Parallel {
    /// `transform` of every element, in order; on every core when there are at least `threshold` elements
    /// (below it, handing the work out costs more than it saves).
    public static func map<T: Sendable, V: Sendable>(
        _ items: [T],
        threshold: Int = 64,
        _ transform: @Sendable (T) -> V
    ) -> [V] {
        let cores = max(1, ProcessInfo.processInfo.activeProcessorCount)
        let chunks = items.count < max(threshold, 2) ? 1 : cores
        guard chunks > 1 else { return items.map(transform) }
        let size = (items.count + chunks - 1) / chunks
        let results = Mutex<[[V]]>(Array(repeating: [], count: chunks))
        DispatchQueue.concurrentPerform(iterations: chunks) { chunk in
            let part = items[min(items.count, chunk * size)..<min(items.count, (chunk + 1) * size)].map(transform)
            results.withLock { $0[chunk] = part }
        }
        return results.withLock { $0.flatMap { $0 } }
    }
}
