import Foundation
import Postgres
import PostgresTesting
import Synchronization
import Testing

/// A flag shared between a test and a body running on a worker thread.
final class Flag: Sendable {
    private let value = Atomic<Bool>(false)
    func set() { value.store(true, ordering: .releasing) }
    var isSet: Bool { value.load(ordering: .acquiring) }
}

@Suite("PGPool", .heavy)
struct PoolTests {
    @Test func poolRunsManyConcurrentBodies() async throws {
        let url = try await TestDatabase.make(label: "pool")
        // 40 bodies of 20 ms on 4 connections take 0.2 s; the generous wait keeps a loaded machine from failing it.
        let pool = PGPool(url: url, size: 4, acquireTimeout: .seconds(60))
        let results: [(Int, Int, Int)]
        do {
            results = try await withThrowingTaskGroup(of: (Int, Int, Int).self) { group in
                for index in 0..<40 {
                    group.addTask {
                        try await pool.withConnection { connection in
                            let row = try connection.query(
                                "SELECT pg_sleep(0.02), pg_backend_pid() AS pid, \(index)::int AS i"
                            ).rows.first
                            return (
                                index, try row?.decode("i", as: Int.self) ?? -1,
                                try row?.decode("pid", as: Int.self) ?? -1
                            )
                        }
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
        } catch {
            await pool.close()
            throw error
        }
        await pool.close()
        #expect(results.count == 40)
        #expect(results.allSatisfy { $0.0 == $0.1 })
        let backends = Set(results.map(\.2))
        #expect(backends.count > 1)
        #expect(backends.count <= 4)
    }

    @Test func bodyErrorsPropagateAsIs() async throws {
        let url = try await TestDatabase.make(label: "poolerr")
        let pool = PGPool(url: url, size: 1)
        await #expect(throws: Boom.self) {
            try await pool.withConnection { _ in throw Boom() }
        }
        let error = await #expect(throws: PGError.self) {
            try await pool.withConnection { connection in try connection.query("SELECT * FROM missing_table") }
        }
        #expect(error?.sqlState == "42P01")
        // The worker is still healthy afterwards.
        let one = try await pool.withConnection { connection in
            try connection.query("SELECT \(1)::int AS one").rows.first?.decode("one", as: Int.self)
        }
        #expect(one == 1)
        await pool.close()
        let closed = await #expect(throws: PGError.self) {
            try await pool.withConnection { _ in 1 }
        }
        #expect(closed?.code == .closed)
    }

    @Test func unreachableServerFailsFastWithConnectionErrors() async throws {
        // Nothing listens on loopback port 1; an invalid URL cannot connect at all.
        for url in ["postgresql://otpd@127.0.0.1:1/otpd", "mysql://nope"] {
            let pool = PGPool(url: url, size: 1, acquireTimeout: .seconds(1))
            let start = ContinuousClock.now
            let error = await #expect(throws: PGError.self) {
                try await pool.withConnection { _ in 1 }
            }
            #expect(error?.code == .connection)
            // A refused connection fails at once (milliseconds alone); 5 s leaves room for a loaded CI machine
            // (2.6 s seen with the whole suite running) and is still far below a hang on the connect timeout.
            #expect(start.duration(to: .now) < .seconds(5))
            await pool.close()
        }
    }

    @Test func waitingForABusyPoolTimesOut() async throws {
        let url = try await TestDatabase.make(label: "pooltimeout")
        let pool = PGPool(url: url, size: 1, acquireTimeout: .milliseconds(200))
        let started = Flag()
        let holder = Task {
            try await pool.withConnection { connection in
                started.set()
                try connection.query("SELECT pg_sleep(4)")
            }
        }
        let running = await poll(for: .seconds(10)) { started.isSet ? true : nil }
        #expect(running == true)
        let start = ContinuousClock.now
        let error = await #expect(throws: PGError.self) {
            try await pool.withConnection { _ in 1 }
        }
        #expect(error?.code == .timeout)
        // Long before the holder lets go (4 s), with room for a loaded machine (CI saw 1.9 s for a 200 ms wait).
        #expect(start.duration(to: .now) < .seconds(3))
        _ = try await holder.value
        // Once free again, the worker is handed out normally.
        #expect(try await pool.withConnection { _ in 2 } == 2)
        await pool.close()
    }

    @Test func poolRecoversByItselfAfterItsBackendIsTerminated() async throws {
        let url = try await TestDatabase.make(label: "poolkill")
        let pool = PGPool(url: url, size: 1)
        let admin = PGWorker(url: url)
        let backendPID: Int = try await pool.withConnection { connection in
            try connection.query("SELECT pg_backend_pid() AS pid").rows.first?.decode("pid", as: Int.self) ?? -1
        }
        let terminated = try await admin.submit { connection in
            try connection.query("SELECT pg_terminate_backend(\(backendPID)) AS ok").rows.first?.decode(
                "ok",
                as: Bool.self
            )
        }
        #expect(terminated == true)
        let unexpected = Mutex<[String]>([])
        let newPID: Int? = await poll(for: .seconds(15)) {
            do {
                let pid = try await pool.withConnection { connection in
                    try connection.query("SELECT pg_backend_pid() AS pid").rows.first?.decode("pid", as: Int.self)
                }
                return pid
            } catch let error as PGError where error.code == .connection {
                return nil  // Still reconnecting: expected, try again.
            } catch {
                unexpected.withLock { $0.append(String(describing: error)) }
                return nil
            }
        }
        await pool.close()
        await admin.close()
        #expect(newPID != nil)
        #expect(newPID != backendPID)
        #expect(unexpected.withLock { $0 }.isEmpty)
    }

    /// After an outage long enough for the reconnect backoff to grow past a second, the first worker that
    /// connects wakes the others: a burst of bodies right after it, one per worker, all run instead of failing
    /// fast.
    @Test func afterAnOutageTheWholePoolComesBackWithItsFirstConnection() async throws {
        let dir = "/var/tmp/otpd-poolback-\(UUID().uuidString.prefix(8))"
        let pg = EmbeddedPostgres(dataDirectory: dir + "/data", settings: ["fsync": "off"])
        TestClusterCleanup.register(pg, removing: dir)
        let url = try await BlockingThread.run { try pg.start() }
        let size = 4
        let pool = PGPool(url: url, size: size)
        #expect(await poll(for: .seconds(15)) { pool.connectedCount == size ? true : nil } == true)

        try await BlockingThread.run { pg.stop() }
        #expect(await poll(for: .seconds(15)) { pool.connectedCount == 0 ? true : nil } == true)
        // The outage itself: each worker keeps failing to connect, and its backoff doubles towards 5 s. Once
        // every worker waits out more than a second, none of them would be back in time for the burst alone.
        let backedOff = await poll(for: .seconds(20)) {
            pool.reconnectBackoffs.allSatisfy { $0.map { $0 > .seconds(1) } ?? false } ? true : nil
        }
        #expect(backedOff == true)
        _ = try await BlockingThread.run { try pg.start() }
        #expect(await poll(for: .seconds(15), every: .milliseconds(5)) { pool.connectedCount > 0 ? true : nil } == true)

        let failures = await withTaskGroup(of: String?.self) { group in
            for _ in 0..<size {
                group.addTask {
                    do {
                        try await pool.withConnection { connection in try connection.query("SELECT pg_sleep(0.3)") }
                        return nil
                    } catch {
                        return String(describing: error)
                    }
                }
            }
            return await group.reduce(into: [String]()) { if let f = $1 { $0.append(f) } }
        }
        #expect(failures == [])
        await pool.close()
        try await BlockingThread.run { pg.stop() }
    }
}
