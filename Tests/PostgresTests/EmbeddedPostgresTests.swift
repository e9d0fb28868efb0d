import Foundation
import Postgres
import PostgresTesting
import Testing

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

@Suite("EmbeddedPostgres and reconnects", .heavy)
struct EmbeddedPostgresTests {
    /// Creates a root-owned 0700 directory (unreachable for the postgres user when we are root).
    private func privateTemporaryDirectory() throws -> String {
        var template = Array("/var/tmp/otpd-pgtest-XXXXXX".utf8CString)
        return try template.withUnsafeMutableBufferPointer { buffer in
            guard let base = buffer.baseAddress, mkdtemp(base) != nil else {
                throw PGError(code: .launch, message: "mkdtemp failed")
            }
            return String(cString: base)
        }
    }

    @Test func stoppedServerFailsFastThenThePoolRecoversAfterRestart() async throws {
        let directory = try privateTemporaryDirectory()
        let requested = directory + "/data"
        let cluster = EmbeddedPostgres(
            dataDirectory: requested,
            database: "otpd",
            settings: ["fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"]
        )
        let effective = cluster.effectiveDataDirectory
        if geteuid() == 0 {
            // A root-owned 0700 parent is unreachable for postgres: the cluster moves under /var/tmp.
            #expect(effective.hasPrefix("/var/tmp/otpd-"))
            #expect(effective != requested)
        } else {
            #expect(effective == requested)
        }
        let clusterDirectory = (effective as NSString).deletingLastPathComponent
        TestClusterCleanup.register(cluster, removing: clusterDirectory)
        if clusterDirectory != directory {
            TestClusterCleanup.register(cluster, removing: directory)
        }

        let url = try await BlockingThread.run { try cluster.start() }
        let parsed = try PGURL(parsing: url)
        #expect(parsed.user == "otpd" && parsed.host == "127.0.0.1" && parsed.database == "otpd")
        #expect(parsed.password != nil)
        #expect(FileManager.default.fileExists(atPath: effective + "/PG_VERSION"))

        let pool = PGPool(url: url, size: 2, acquireTimeout: .seconds(2))
        let one = try await pool.withConnection { connection in
            try connection.query("SELECT \(1)::int AS one").rows.first?.decode("one", as: Int.self)
        }
        #expect(one == 1)

        try await BlockingThread.run { cluster.stop() }
        for _ in 0..<3 {
            let start = ContinuousClock.now
            let error = await #expect(throws: PGError.self) {
                try await pool.withConnection { connection in try connection.query("SELECT 1") }
            }
            #expect(error?.code == .connection)
            // Refused at once alone; 5 s leaves room for a loaded CI machine and is still no hang.
            #expect(start.duration(to: .now) < .seconds(5))
        }

        let restartedURL = try await BlockingThread.run { try cluster.start() }
        #expect(restartedURL == url)  // the previous port is reused, so existing pools can reconnect
        let recovered: Int? = await poll(for: .seconds(20)) {
            try? await pool.withConnection { connection in
                try connection.query("SELECT \(2)::int AS two").rows.first?.decode("two", as: Int.self)
            }
        }
        #expect(recovered == 2)
        await pool.close()

        // A port that is already taken gives a clear launch error with the log tail.
        try await BlockingThread.run { cluster.stop() }
        let listener = try LoopbackListener()
        defer { listener.close() }
        let busyPort = listener.port
        let conflicting = EmbeddedPostgres(dataDirectory: requested, settings: ["fsync": "off"], port: busyPort)
        let launchError = await #expect(throws: PGError.self) {
            try await BlockingThread.run { try conflicting.start() }
        }
        #expect(launchError?.code == .launch)
        #expect(launchError?.description.contains("already in use") == true)
        #expect(launchError?.description.contains("log tail") == true)

        try? FileManager.default.removeItem(atPath: clusterDirectory)
        try? FileManager.default.removeItem(atPath: directory)
    }
}

/// A TCP socket listening on a free 127.0.0.1 port, to make a port busy.
struct LoopbackListener {
    let fd: Int32
    let port: Int

    init() throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw PGError(code: .launch, message: "socket failed") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = in_addr_t(UInt32(0x7f00_0001).bigEndian)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let ok = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { raw in
                bind(fd, raw, length) == 0 && listen(fd, 1) == 0 && getsockname(fd, raw, &length) == 0
            }
        }
        guard ok else {
            Glibc.close(fd)
            throw PGError(code: .launch, message: "bind/listen failed")
        }
        self.fd = fd
        self.port = Int(UInt16(bigEndian: address.sin_port))
    }

    func close() {
        _ = Glibc.close(fd)
    }
}
