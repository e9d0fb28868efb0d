import Foundation
import PostgresTesting
import Synchronization
import Testing

@testable import Postgres

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// QUALITY R8: a database that stops answering without closing (a black hole) fails calls within the
/// statement timeout plus a few seconds, and the pool recovers when it answers again.
@Suite("Calls to a server that stops answering", .heavy)
struct UnansweredCallTests {
    @Test func keepalivesAndTheTCPUserTimeoutAreSetOnTheSocket() async throws {
        let settings = PGSettings(
            keepalives: .init(idle: .seconds(7), interval: .seconds(3), count: 4, userTimeout: .seconds(9))
        )
        let options = try await withWorker("keepalive", settings: settings) { worker in
            try await worker.submit { connection in
                let fd = connection.socket
                let tcp = Int32(IPPROTO_TCP)
                // TCP_KEEPIDLE 4, TCP_KEEPINTVL 5, TCP_KEEPCNT 6, TCP_USER_TIMEOUT 18 (milliseconds), from netinet/tcp.h.
                return [
                    Self.option(fd, SOL_SOCKET, SO_KEEPALIVE), Self.option(fd, tcp, 4), Self.option(fd, tcp, 5),
                    Self.option(fd, tcp, 6), Self.option(fd, tcp, 18),
                ]
            }
        }
        #expect(options == [1, 7, 3, 4, 9000])

        // A URL parameter wins over the settings.
        let url = try PGURL(parsing: "postgresql://u@h/d?keepalives_idle=60&tcp_user_timeout=0")
        let parameters = Dictionary(url.connectionParameters(settings: settings), uniquingKeysWith: { $1 })
        #expect(parameters["keepalives"] == "1")
        #expect(parameters["keepalives_idle"] == "60")
        #expect(parameters["keepalives_interval"] == "3")
        #expect(parameters["keepalives_count"] == "4")
        #expect(parameters["tcp_user_timeout"] == "0")
        #expect(PGSettings(statementTimeout: .seconds(5)).responseTimeout == .seconds(8))
        #expect(PGSettings(statementTimeout: .zero).responseTimeout == nil)
    }

    private static func option(_ fd: Int32, _ level: Int32, _ name: Int32) -> Int32 {
        var value: Int32 = -1
        var length = socklen_t(MemoryLayout<Int32>.size)
        guard getsockopt(fd, level, name, &value, &length) == 0 else { return -1 }
        return value
    }

    /// The postmaster and its backends are stopped with SIGSTOP: TCP stays up and the kernel acknowledges every
    /// byte, so only the client's bound (statement timeout plus grace) ends the call.
    @Test func aQueryToAStoppedServerFailsWithinTheBoundThenThePoolRecovers() async throws {
        let directory = "/var/tmp/otpd-blackhole-\(UUID().uuidString.prefix(8))"
        let cluster = EmbeddedPostgres(dataDirectory: directory + "/data", settings: ["fsync": "off"])
        TestClusterCleanup.register(cluster, removing: directory)
        let url = try await BlockingThread.run { try cluster.start() }
        let settings = PGSettings(
            statementTimeout: .seconds(1),
            connectTimeout: .seconds(2),
            responseGrace: .seconds(1)
        )
        let bound = try #require(settings.responseTimeout)
        let pool = PGPool(url: url, size: 1, settings: settings, acquireTimeout: .seconds(10))
        let before = try await pool.withConnection { connection in
            try connection.query("SELECT \(1)::int AS one").rows.first?.decode("one", as: Int.self)
        }
        #expect(before == 1)

        let freeze = try ServerFreeze(cluster)
        defer { freeze.thaw() }
        #expect(freeze.processes.count > 1)  // the postmaster and at least our backend

        // The query in flight on the established connection, then one on a connection attempt to the frozen
        // server: each fails with `.connection` within its bound instead of waiting for the server.
        for limit in [bound, max(settings.connectTimeout, .seconds(2))] {
            let start = ContinuousClock.now
            let outcome = Mutex<Result<Int?, any Error>?>(nil)
            let call = Task {
                do {
                    let value = try await pool.withConnection { connection in
                        try connection.query("SELECT \(2)::int AS two").rows.first?.decode("two", as: Int.self)
                    }
                    outcome.withLock { $0 = .success(value) }
                } catch {
                    outcome.withLock { $0 = .failure(error) }
                }
            }
            let answered = await poll(for: limit + .seconds(4)) { outcome.withLock { $0 } }
            let elapsed = start.duration(to: .now)
            if answered == nil {
                Issue.record("the call was still waiting \(elapsed) after the server stopped answering")
                freeze.thaw()
                await call.value
                break
            }
            guard case .failure(let error as PGError) = answered else {
                Issue.record("expected a PGError, got \(String(describing: answered))")
                continue
            }
            #expect(error.code == .connection)
            #expect(elapsed < limit + .seconds(3), "answered after \(elapsed)")
            await call.value
        }

        freeze.thaw()
        let recovered: Int? = await poll(for: .seconds(20)) {
            try? await pool.withConnection { connection in
                try connection.query("SELECT \(3)::int AS three").rows.first?.decode("three", as: Int.self)
            }
        }
        #expect(recovered == 3)
        await pool.close()
        try await BlockingThread.run { cluster.stop() }
    }
}
