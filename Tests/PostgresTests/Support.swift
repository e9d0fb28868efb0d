import Postgres
import PostgresTesting

struct Boom: Error, Equatable {}

/// Creates a fresh database and a worker connected to it, runs `body`, then closes the worker.
func withWorker<T>(
    _ label: String,
    settings: PGSettings = .init(),
    _ body: (PGWorker) async throws -> T
) async throws -> T {
    let url = try await TestDatabase.make(label: label)
    let worker = PGWorker(url: url, settings: settings)
    do {
        let value = try await body(worker)
        await worker.close()
        return value
    } catch {
        await worker.close()
        throw error
    }
}

/// Polls `attempt` until it returns a value or `limit` passes; returns nil on timeout.
func poll<T>(
    for limit: Duration,
    every interval: Duration = .milliseconds(50),
    _ attempt: () async throws -> T?
) async rethrows -> T? {
    let deadline = ContinuousClock.now.advanced(by: limit)
    while ContinuousClock.now < deadline {
        if let value = try await attempt() { return value }
        try? await Task.sleep(for: interval)
    }
    return nil
}
