import Foundation
import PostgresTesting
import Testing

@testable import Postgres

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// QUALITY S9: the embedded PostgreSQL admits no other local user.
@Suite("Embedded cluster access", .heavy)
struct EmbeddedAccessTests {
    /// A fresh directory the postgres user can traverse (so the cluster is not relocated when we are root).
    private func clusterDirectory(_ label: String) throws -> String {
        var template = Array("/var/tmp/otpd-\(label)-XXXXXX".utf8CString)
        let directory: String = try template.withUnsafeMutableBufferPointer { buffer in
            guard let base = buffer.baseAddress, mkdtemp(base) != nil else {
                throw PGError(code: .launch, message: "mkdtemp failed")
            }
            return String(cString: base)
        }
        _ = chmod(directory, 0o755)
        return directory
    }

    private static let fast = ["fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"]

    /// `url` without its password, reading no password file either (not even `~/.pgpass`).
    private func withoutPassword(_ url: PGURL) -> PGURL {
        var bare = url
        bare.password = nil
        bare.parameters["passfile"] = "/dev/null"
        return bare
    }

    /// The connection error for `url`, or nil when it connects.
    private func refusal(_ url: PGURL) -> PGError? {
        do {
            let connection = try PGConnection(url: url.urlString)
            connection.close()
            return nil
        } catch {
            return error
        }
    }

    @Test func aNewClusterAdmitsOnlyItsRoleWithTheGeneratedPassword() async throws {
        let directory = try clusterDirectory("access")
        let cluster = EmbeddedPostgres(dataDirectory: directory + "/data", settings: Self.fast)
        TestClusterCleanup.register(cluster, removing: directory)
        let urlString = try await BlockingThread.run { try cluster.start() }
        let url = try PGURL(parsing: urlString)
        let password = try #require(url.password)
        #expect(password.count == 64)
        #expect(!url.description.contains(password))
        #expect(!"\(url)".contains(password))

        // The URL the launcher returns works.
        let user = try await BlockingThread.run {
            let connection = try PGConnection(url: urlString)
            defer { connection.close() }
            try connection.execute("CREATE ROLE intruder LOGIN PASSWORD 'intruder-password'")
            return try connection.query("SELECT current_user AS u").rows.first?.decode("u", as: String.self)
        }
        #expect(user == "otpd")

        // Without the password, with a wrong one, or as another role (even one with a password): refused.
        var wrong = url
        wrong.password = String(repeating: "0", count: 64)
        var otherRole = url
        otherRole.user = "intruder"
        otherRole.password = "intruder-password"
        var superuser = url
        superuser.user = "postgres"
        for refused in [withoutPassword(url), wrong, otherRole, superuser] {
            let error = refusal(refused)
            #expect(error?.code == .connection, "\(refused) was admitted")
        }

        // The password is kept for this user alone, and the access rules trust no one.
        let file = cluster.passwordFile
        var info = stat()
        #expect(lstat(file, &info) == 0)
        #expect(info.st_uid == geteuid())
        #expect(info.st_mode & 0o777 == 0o600)
        #expect(EmbeddedPostgres.readPassword(file) == .found(password))
        let rules = try String(contentsOfFile: cluster.effectiveDataDirectory + "/pg_hba.conf", encoding: .utf8)
        #expect(!rules.contains("trust"))
        #expect(rules == EmbeddedPostgres.accessRules)

        if geteuid() == 0 {
            // Another local account: cannot read the password file, and psql without it is refused.
            #expect(try otherAccount(["/usr/bin/test", "-r", file]).status != 0)
            let initdb = URL(fileURLWithPath: try Binaries.find().initdb).resolvingSymlinksInPath()
            let psql = try #require(
                [initdb.deletingLastPathComponent().path + "/psql", "/usr/bin/psql"]
                    .first { FileManager.default.isExecutableFile(atPath: $0) }
            )
            let bare = try otherAccount([psql, "-w", "-X", "-c", "SELECT 1", withoutPassword(url).urlString])
            #expect(bare.status != 0, "\(bare.output)")
            #expect(bare.output.contains("password"), "\(bare.output)")
        }

        // A restart keeps the password, so pools holding the URL reconnect.
        try await BlockingThread.run { cluster.stop() }
        let restarted = try await BlockingThread.run { try cluster.start() }
        #expect(restarted == urlString)
        try await BlockingThread.run { cluster.stop() }
    }

    /// A developer's `.otpd/pg` from before passwords: `initdb --auth=trust`, started as the old launcher
    /// did. `start()` stops it, gives the role a password in single-user mode and rewrites pg_hba.conf before
    /// the server listens again; the data stays.
    @Test func aClusterCreatedWithTrustIsUpgradedInPlace() async throws {
        let directory = try clusterDirectory("trust")
        let data = directory + "/data"
        let cluster = EmbeddedPostgres(dataDirectory: data, settings: Self.fast)
        TestClusterCleanup.register(cluster, removing: directory)
        let port = try EmbeddedPostgres.freePort()
        let legacy = PGURL(user: "otpd", host: "127.0.0.1", port: port, database: "postgres")

        try await BlockingThread.run {
            let binaries = try Binaries.find()
            try FileManager.default.createDirectory(atPath: data, withIntermediateDirectories: false)
            _ = chmod(data, 0o700)
            if Command.isRoot {
                let owner = try Command.postgresUser()
                _ = chown(data, owner.uid, owner.gid)
            }
            let initdb = try Command.run(
                binaries.initdb,
                [
                    "-D", data, "-U", "otpd", "--auth=trust", "-E", "UTF8", "--locale=C", "--no-instructions",
                    "--no-sync",
                ],
                asPostgres: Command.isRoot
            )
            guard initdb.status == 0 else { throw PGError(code: .launch, message: initdb.output) }
            let options = "-c listen_addresses=127.0.0.1 -c port=\(port) -c unix_socket_directories='' -c fsync=off"
            let started = try Command.run(
                binaries.pgCtl,
                ["-D", data, "-l", data + "/legacy.log", "-w", "-t", "60", "-o", options, "start"],
                asPostgres: Command.isRoot
            )
            guard started.status == 0 else { throw PGError(code: .launch, message: started.output) }
        }
        // The old state: anyone on the machine gets in without a password.
        let before = try await BlockingThread.run {
            let connection = try PGConnection(url: self.withoutPassword(legacy).urlString)
            defer { connection.close() }
            try connection.execute("CREATE DATABASE otpd")
            var otpd = self.withoutPassword(legacy)
            otpd.database = "otpd"
            let data = try PGConnection(url: otpd.urlString)
            defer { data.close() }
            try data.execute("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('from before')")
            return try connection.query("SELECT 1 AS one").rows.count
        }
        #expect(before == 1)

        // The server is still running with trust when otpd starts.
        let urlString = try await BlockingThread.run { try cluster.start() }
        let url = try PGURL(parsing: urlString)
        #expect(url.port == port)
        #expect(url.password != nil)
        var bareLegacy = withoutPassword(url)
        bareLegacy.database = "postgres"
        #expect(refusal(bareLegacy)?.code == .connection)
        #expect(refusal(withoutPassword(url))?.code == .connection)
        let kept = try await BlockingThread.run {
            let connection = try PGConnection(url: urlString)
            defer { connection.close() }
            return try connection.query("SELECT v FROM kept").rows.first?.decode("v", as: String.self)
        }
        #expect(kept == "from before")
        #expect(EmbeddedPostgres.readPassword(cluster.passwordFile) == .found(url.password ?? ""))

        // A password file others may read is not trusted: the next start sets a new password.
        try await BlockingThread.run { cluster.stop() }
        _ = chmod(cluster.passwordFile, 0o644)
        let rotated = try await BlockingThread.run { try cluster.start() }
        #expect(try PGURL(parsing: rotated).password != url.password)
        #expect(refusal(url)?.code == .connection)
        #expect(refusal(try PGURL(parsing: rotated)) == nil)
        try await BlockingThread.run { cluster.stop() }
    }

    /// Runs `command` as the `nobody` account (root only) and returns its exit status and output.
    private func otherAccount(_ command: [String]) throws -> (status: Int32, output: String) {
        let runuser = try Command.runuserPath()
        let output = "/tmp/otpd-nobody-\(UUID().uuidString).log"
        defer { try? FileManager.default.removeItem(atPath: output) }
        let status = ChildProcess.run(runuser, ["-u", "nobody", "--"] + command, outputPath: output)
        return (try #require(status), (try? String(contentsOfFile: output, encoding: .utf8)) ?? "")
    }
}
