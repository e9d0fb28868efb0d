import Synchronization

/// A fixed-size pool of `PGWorker`s (one connection and one thread each) with async, time-bounded acquisition.
public final class PGPool: Sendable {
    private struct Waiter {
        let id: UInt64
        let continuation: CheckedContinuation<PGWorker, any Error>
        let timeoutTask: Task<Void, Never>
    }

    private struct State: ~Copyable {
        var idle: [PGWorker]
        var waiters: [Waiter] = []
        var cancelledEarly: Set<UInt64> = []
        var nextID: UInt64 = 0
        var closed = false
    }

    private let workers: [PGWorker]
    private let siblings: Siblings
    private let state: Mutex<State>
    private let acquireTimeout: Duration

    /// Creates `size` workers (at least one) that connect to `url` in the background.
    ///
    /// When one worker connects, the others waiting out a reconnect backoff try at once: they share one
    /// database, so after an outage the whole pool comes back with the first connection, not one by one.
    public init(url: String, size: Int, settings: PGSettings = .init(), acquireTimeout: Duration = .seconds(5)) {
        let siblings = Siblings()
        let workers = (0..<max(size, 1)).map { index in
            PGWorker(url: url, settings: settings, name: "otpd-pg-\(index)", onConnect: { siblings.retrySoon() })
        }
        siblings.set(workers)
        self.siblings = siblings
        self.workers = workers
        self.state = Mutex(State(idle: workers))
        self.acquireTimeout = acquireTimeout
    }

    deinit {
        siblings.set([])
        for worker in workers { worker.shutdown() }
    }

    /// The number of workers (connections) in the pool.
    public var size: Int { workers.count }

    /// The number of workers whose connection is currently healthy.
    public var connectedCount: Int {
        workers.count(where: \.isConnected)
    }

    /// Diagnostic: each worker's `reconnectBackoff`, in order; all nil while every worker is connected.
    public var reconnectBackoffs: [Duration?] {
        workers.map(\.reconnectBackoff)
    }

    /// Runs `body` on a pooled connection's thread and returns its result.
    ///
    /// Waits at most the acquire timeout for a free worker (then throws `.timeout`). Errors thrown by
    /// `body` propagate as-is; a `PGError` with code `.connection` makes that worker reconnect.
    @discardableResult
    public func withConnection<T: Sendable>(_ body: @escaping @Sendable (PGConnection) throws -> T) async throws -> T {
        let worker = try await acquire()
        defer { release(worker) }
        return try await worker.submit(body)
    }

    /// Closes the pool: pending acquisitions fail with `.closed`, running bodies finish, threads exit.
    public func close() async {
        let waiters = state.withLock { state in
            state.closed = true
            state.idle.removeAll()
            let waiters = state.waiters
            state.waiters.removeAll()
            return waiters
        }
        for waiter in waiters {
            waiter.timeoutTask.cancel()
            waiter.continuation.resume(throwing: PGError.closed("the database pool is closed"))
        }
        siblings.set([])
        for worker in workers {
            await worker.close()
        }
    }

    // MARK: Acquisition

    private func acquire() async throws -> PGWorker {
        let id = state.withLock { state in
            state.nextID += 1
            return state.nextID
        }
        defer { state.withLock { _ = $0.cancelledEarly.remove(id) } }
        return try await withTaskCancellationHandler {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<PGWorker, any Error>) in
                enum Outcome {
                    case worker(PGWorker)
                    case failure(any Error)
                    case waiting
                }
                let outcome: Outcome = state.withLock { state in
                    if state.closed { return .failure(PGError.closed("the database pool is closed")) }
                    if state.cancelledEarly.remove(id) != nil { return .failure(CancellationError()) }
                    if !state.idle.isEmpty {
                        // Prefer a worker that is connected right now.
                        let index = state.idle.lastIndex(where: \.isConnected) ?? state.idle.count - 1
                        return .worker(state.idle.remove(at: index))
                    }
                    let timeout = acquireTimeout
                    let timeoutTask = Task { [weak self] in
                        try? await Task.sleep(for: timeout)
                        guard !Task.isCancelled else { return }
                        self?.failWaiter(
                            id,
                            with: PGError(code: .timeout, message: "no database connection became free in time")
                        )
                    }
                    state.waiters.append(Waiter(id: id, continuation: continuation, timeoutTask: timeoutTask))
                    return .waiting
                }
                switch outcome {
                case .worker(let worker): continuation.resume(returning: worker)
                case .failure(let error): continuation.resume(throwing: error)
                case .waiting: break
                }
            }
        } onCancel: {
            let found = state.withLock { state in
                if state.waiters.contains(where: { $0.id == id }) { return true }
                state.cancelledEarly.insert(id)
                return false
            }
            if found { failWaiter(id, with: CancellationError()) }
        }
    }

    private func failWaiter(_ id: UInt64, with error: any Error) {
        let waiter: Waiter? = state.withLock { state in
            state.cancelledEarly.remove(id)
            guard let index = state.waiters.firstIndex(where: { $0.id == id }) else { return nil }
            return state.waiters.remove(at: index)
        }
        guard let waiter else { return }
        waiter.timeoutTask.cancel()
        waiter.continuation.resume(throwing: error)
    }

    private func release(_ worker: PGWorker) {
        let waiter: Waiter? = state.withLock { state in
            if state.closed { return nil }
            if !state.waiters.isEmpty { return state.waiters.removeFirst() }
            state.idle.append(worker)
            return nil
        }
        guard let waiter else { return }
        waiter.timeoutTask.cancel()
        waiter.continuation.resume(returning: worker)
    }
}

/// The pool's workers as their reconnect hook sees them; emptied when the pool closes, so the workers and
/// their hooks do not keep each other alive.
private final class Siblings: Sendable {
    private let workers = Mutex<[PGWorker]>([])

    func set(_ list: [PGWorker]) { workers.withLock { $0 = list } }

    /// Cuts every worker's reconnect backoff short.
    func retrySoon() {
        for worker in workers.withLock({ $0 }) { worker.retrySoon() }
    }
}
