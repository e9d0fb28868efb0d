import Foundation
import Synchronization

#if canImport(Glibc)
@preconcurrency import Glibc
#elseif canImport(Musl)
@preconcurrency import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Owns one libpq connection and one dedicated thread; async callers submit synchronous bodies to it.
///
/// Bodies run one at a time on the worker's thread, so libpq never blocks Swift's cooperative pool or
/// a NIO event loop, and a body (for example a whole transaction) never interleaves with another.
/// The thread waits with `poll()` on a wake-up pipe plus the connection's socket, so it notices a
/// dropped connection (server restart, `pg_terminate_backend`) while idle. When disconnected it
/// reconnects in the background with non-blocking libpq connects and exponential backoff
/// (100 ms doubling to 5 s, with jitter). Bodies submitted while a connection attempt is in flight
/// wait for that attempt (bounded by `PGSettings.connectTimeout`); bodies submitted while the worker
/// is backing off fail immediately with `.connection`.
public final class PGWorker: Sendable {
    struct Job: Sendable {
        /// Runs the body; returns true when the connection must be dropped.
        let run: @Sendable (PGConnection) -> Bool
        let fail: @Sendable (PGError) -> Void
    }

    private struct State: Sendable {
        var jobs: [Job] = []
        /// Set by `retrySoon`: the database answered a sibling, so a pending backoff is cut short.
        var retryNow = false
        var shutdown = false
        var exited = false
        var exitWaiters: [CheckedContinuation<Void, Never>] = []
    }

    private let url: String
    private let settings: PGSettings
    private let onConnect: (@Sendable () -> Void)?
    private let state = Mutex(State())
    private let connected = Atomic<Bool>(false)
    /// What `reconnectBackoff` reports, published by the worker's thread before each wait.
    private let backoff = Mutex<Duration?>(nil)
    private let wakeRead: Int32
    private let wakeWrite: Int32

    /// Creates the worker and starts its thread, which connects to `url` in the background.
    ///
    /// `onConnect` runs on the worker's thread each time a connection is established, before the worker
    /// reports itself connected (a pool uses it to wake the other workers' reconnects).
    public init(
        url: String,
        settings: PGSettings = .init(),
        name: String = "otpd-pg",
        onConnect: (@Sendable () -> Void)? = nil
    ) {
        self.url = url
        self.settings = settings
        self.onConnect = onConnect
        var fds: [Int32] = [-1, -1]
        if pipe(&fds) == 0 {
            for fd in fds {
                _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
                _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
            }
            wakeRead = fds[0]
            wakeWrite = fds[1]
        } else {
            // Without a pipe the thread falls back to polling every 20 ms.
            wakeRead = -1
            wakeWrite = -1
        }
        let thread = Thread { [self] in self.run() }
        thread.name = name
        thread.start()
    }

    /// Whether the worker currently holds a healthy connection.
    public var isConnected: Bool {
        connected.load(ordering: .relaxed)
    }

    /// Diagnostic: the reconnect backoff the worker is waiting out (jitter included); nil while it is connected,
    /// connecting or closed.
    ///
    /// Read-only and for monitoring and tests: it grows from 100 ms towards 5 s while the database stays away.
    public var reconnectBackoff: Duration? {
        backoff.withLock { $0 }
    }

    /// Runs `body` on the worker's thread with its connection and returns the result.
    ///
    /// Errors thrown by `body` propagate as-is; a `PGError` with code `.connection` or `.commitOutcomeUnknown`
    /// (or a connection found broken afterwards) makes the worker reconnect. Fails with `.connection` while the worker is
    /// disconnected and `.closed` after `close()`. A running body is not interrupted by task cancellation.
    @discardableResult
    public func submit<T: Sendable>(_ body: @escaping @Sendable (PGConnection) throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
            let job = Job(
                run: { connection in
                    do {
                        let value = try body(connection)
                        continuation.resume(returning: value)
                        return false
                    } catch {
                        let lost = (error as? PGError)?.isConnectionLost == true
                        continuation.resume(throwing: error)
                        return lost
                    }
                },
                fail: { error in continuation.resume(throwing: error) }
            )
            enqueue(job)
        }
    }

    /// Stops the thread after the running body (queued bodies fail with `.closed`) and waits for it to exit.
    public func close() async {
        shutdown()
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let exited = state.withLock { state in
                if state.exited { return true }
                state.exitWaiters.append(continuation)
                return false
            }
            if exited { continuation.resume() }
        }
    }

    /// Asks the thread to stop without waiting for it.
    func shutdown() {
        state.withLock { state in
            guard !state.exited else { return }
            state.shutdown = true
            wake()
        }
    }

    private func enqueue(_ job: Job) {
        let accepted = state.withLock { state in
            guard !state.shutdown, !state.exited else { return false }
            state.jobs.append(job)
            wake()
            return true
        }
        if !accepted { job.fail(.closed("the database worker is closed")) }
    }

    /// Cuts a reconnect backoff short: the next attempt starts at once (the database is known to answer again).
    /// Does nothing while connected or already connecting.
    public func retrySoon() {
        state.withLock { state in
            guard !state.shutdown, !state.exited else { return }
            state.retryNow = true
            wake()
        }
    }

    /// Writes one byte to the wake-up pipe; call with the state lock held (so the fd is still open).
    private func wake() {
        guard wakeWrite >= 0 else { return }
        var byte: UInt8 = 1
        _ = write(wakeWrite, &byte, 1)
    }

    private func drainWakePipe() {
        guard wakeRead >= 0 else { return }
        var buffer = [UInt8](repeating: 0, count: 64)
        while buffer.withUnsafeMutableBytes({ read(wakeRead, $0.baseAddress, $0.count) }) > 0 {}
    }

    // MARK: The worker thread

    /// Carries out the reconnect schedule's decisions with the libpq handles, until shutdown.
    private func run() {
        var connection: PGConnection?
        var attempt: PGConnection?
        var progress = PGConnection.ConnectProgress.wantWrite(-1)
        var schedule = ReconnectSchedule(
            now: ContinuousClock.now,
            attemptTimeout: max(settings.connectTimeout, .seconds(2))
        )
        var jitter = SystemRandomNumberGenerator()
        var lastError: PGError?
        var pending: [Job] = []

        func dropConnection(_ reason: String) {
            connection?.close()
            connection = nil
            connected.store(false, ordering: .relaxed)
            lastError = .connection(reason)
            schedule.connectionLost(at: .now, using: &jitter)
        }

        func attemptFailed(_ error: PGError) {
            attempt?.close()
            attempt = nil
            lastError = error
            schedule.attemptFailed(at: .now, using: &jitter)
        }

        loop: while true {
            drainWakePipe()
            let (newJobs, retryNow, stopping) = state.withLock { state in
                let jobs = state.jobs
                state.jobs.removeAll()
                defer { state.retryNow = false }
                return (jobs, state.retryNow, state.shutdown)
            }
            pending += newJobs
            if stopping { schedule.shutDown() }
            if retryNow { schedule.retrySoon(at: .now) }

            // Do what the schedule says; after a change of phase ask again, else wait below.
            var fds = [pollfd(fd: wakeRead, events: Int16(POLLIN), revents: 0)]
            var deadline: ContinuousClock.Instant?
            switch schedule.next(at: .now) {
            case .shutDown:
                break loop
            case .connect:
                do {
                    (attempt, progress) = try PGConnection.startConnecting(url: url, settings: settings)
                    schedule.attemptStarted(at: .now)
                } catch {
                    attemptFailed(error)
                }
                continue loop
            case .abandonAttempt:
                attemptFailed(.connection("timed out connecting to the database"))
                continue loop
            case .runBodies:
                while let current = connection, !pending.isEmpty {
                    let job = pending.removeFirst()
                    let lost = job.run(current)
                    if lost || !current.resetSessionState() {
                        dropConnection(current.lastErrorMessage ?? "the connection was lost")
                    }
                }
                guard let current = connection else { continue loop }
                fds.append(pollfd(fd: current.socket, events: Int16(POLLIN), revents: 0))
            case .awaitAttempt(let due):
                switch progress {
                case .wantRead(let fd): fds.append(pollfd(fd: fd, events: Int16(POLLIN), revents: 0))
                case .wantWrite(let fd): fds.append(pollfd(fd: fd, events: Int16(POLLOUT), revents: 0))
                case .ready, .failed: fds.append(pollfd(fd: -1, events: 0, revents: 0))
                }
                deadline = due
            case .backOff(let until):
                // Backing off: fail fast instead of queueing.
                if !pending.isEmpty {
                    let error = PGError(
                        code: .connection,
                        message: "not connected to the database" + (lastError?.message.map { ": " + $0 } ?? "")
                    )
                    for job in pending { job.fail(error) }
                    pending.removeAll()
                }
                deadline = until
            }
            backoff.withLock { $0 = schedule.backoff }

            // Wait for work, socket readiness or the deadline.
            var timeout: Int32 = wakeRead >= 0 ? -1 : 20
            if let deadline {
                timeout = min(timeout < 0 ? Int32.max : timeout, millisecondsUntil(deadline))
            }
            _ = pollSocket(&fds, timeoutMilliseconds: timeout)

            if let current = connection, fds.count > 1, fds[1].revents != 0 {
                let hangUp = fds[1].revents & Int16(POLLHUP | POLLERR | POLLNVAL) != 0
                if !current.consumePendingInput() || hangUp {
                    dropConnection(current.lastErrorMessage ?? "the server closed the connection")
                }
            } else if let connecting = attempt {
                let ready = fds.count > 1 && fds[1].revents != 0
                if ready {
                    progress = connecting.continueConnecting()
                }
                switch progress {
                case .ready:
                    connection = connecting
                    attempt = nil
                    schedule.connected(at: .now)
                    lastError = nil
                    onConnect?()
                    connected.store(true, ordering: .relaxed)
                case .failed(let error):
                    attemptFailed(error)
                case .wantRead(let fd), .wantWrite(let fd):
                    // A passed deadline is the schedule's to notice (`abandonAttempt`).
                    if fd < 0 {
                        attemptFailed(.connection("the connection attempt has no socket"))
                    }
                }
            }
        }

        // Shutdown: close connections, fail everything still queued, release close() waiters.
        connection?.close()
        attempt?.close()
        connected.store(false, ordering: .relaxed)
        backoff.withLock { $0 = nil }
        let (remaining, waiters) = state.withLock { state in
            state.exited = true
            let jobs = state.jobs
            state.jobs.removeAll()
            let waiters = state.exitWaiters
            state.exitWaiters.removeAll()
            closeDescriptor(wakeRead)
            closeDescriptor(wakeWrite)
            return (jobs, waiters)
        }
        let closed = PGError.closed("the database worker is closed")
        for job in pending + remaining { job.fail(closed) }
        for waiter in waiters { waiter.resume() }
    }
}
