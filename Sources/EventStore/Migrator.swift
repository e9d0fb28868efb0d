import Foundation
import Postgres

/// Applies the numbered, forward-only migrations of `schema/` and records them.
public struct Migrator: Sendable {
    /// One migration file.
    public struct Migration: Sendable, Hashable {
        /// Its number, from the file name's prefix.
        public var number: Int
        /// The file name.
        public var name: String
        /// The SQL it runs.
        public var sql: String
    }

    /// The migrations, in order.
    public var migrations: [Migration]

    /// Loads `NNNN_name.sql` files from a directory.
    public init(directory: String) throws {
        let files = try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasSuffix(".sql") }
            .sorted()
        migrations = try files.map { name in
            guard let number = Int(name.prefix { $0.isNumber }), number > 0 else {
                throw AppendError(description: "migration file '\(name)' does not start with a number")
            }
            let sql = try String(contentsOfFile: directory + "/" + name, encoding: .utf8)
            return Migration(number: number, name: name, sql: sql)
        }
        if Set(migrations.map(\.number)).count != migrations.count {
            throw AppendError(description: "two migration files in \(directory) share a number")
        }
    }

    /// Finds the `schema/` directory: `OTPD_SCHEMA_DIR`, else `./schema`, else beside the executable's package.
    public static func locateSchemaDirectory(fallback: String? = nil) -> String? {
        var candidates: [String] = []
        if let env = ProcessInfo.processInfo.environment["OTPD_SCHEMA_DIR"] { candidates.append(env) }
        candidates.append(FileManager.default.currentDirectoryPath + "/schema")
        // .build/<config>/otpd -> the package root is three levels up.
        let exe = URL(fileURLWithPath: CommandLine.arguments.first ?? "").resolvingSymlinksInPath()
        candidates.append(exe.deletingLastPathComponent().appendingPathComponent("../../../schema").standardized.path)
        if let fallback { candidates.append(fallback) }
        var isDir: ObjCBool = false
        return candidates.first { FileManager.default.fileExists(atPath: $0, isDirectory: &isDir) && isDir.boolValue }
    }

    /// Applies every migration not yet recorded, each in its own transaction; returns the names applied.
    ///
    /// An advisory lock serializes concurrent starts of several instances.
    @discardableResult
    public func apply(on conn: PGConnection) throws -> [String] {
        try conn.execute(
            """
            CREATE TABLE IF NOT EXISTS schema_migrations (
                number     integer PRIMARY KEY,
                name       text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )
            """
        )
        try conn.query("SELECT pg_advisory_lock(7379001)")
        defer { _ = try? conn.query("SELECT pg_advisory_unlock(7379001)") }
        let done = Set(
            try conn.query("SELECT number FROM schema_migrations").rows.map { try $0.decode(0, as: Int.self) }
        )
        var applied: [String] = []
        for m in migrations where !done.contains(m.number) {
            try conn.transaction { c in
                try c.execute(m.sql)
                try c.query("INSERT INTO schema_migrations (number, name) VALUES (\(m.number), \(m.name))")
            }
            applied.append(m.name)
        }
        return applied
    }
}
