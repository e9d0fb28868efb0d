import Foundation
import Synchronization
import PostgresTesting
import Testing

/// The real `otpd` executable: flags, the listening line, replies, and a clean exit on SIGTERM.
@Suite struct ExecutableTests {
    /// The otpd binary built beside the test bundle.
    static var binary: String {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("otpd").path
    }

    @Test func otpdPrintsItsAddressServesAndExitsZeroOnSIGTERM() async throws {
        guard FileManager.default.isExecutableFile(atPath: Self.binary) else {
            Issue.record("otpd was not built at \(Self.binary)")
            return
        }
        let url = try await TestDatabase.make(label: "binary")
        let dataDir = "/var/tmp/otpd-bin-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: dataDir) }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Self.binary)
        p.arguments = ["serve", "--listen", "127.0.0.1:0", "--database-url", url, "--data-dir", dataDir]
        var env = ProcessInfo.processInfo.environment
        env["OTPD_SCHEMA_DIR"] = repositoryRoot + "/schema"
        p.environment = env
        // Output to a file the test reads as it grows (no pipe readability handlers: see `run`).
        let outPath = dataDir + ".out"
        _ = FileManager.default.createFile(atPath: outPath, contents: nil)
        defer { try? FileManager.default.removeItem(atPath: outPath) }
        guard let out = FileHandle(forWritingAtPath: outPath) else { throw HarnessError("no output file") }
        defer { try? out.close() }
        p.standardOutput = out
        p.standardError = FileHandle.nullDevice
        let lines = OutputFile(path: outPath)
        try p.run()
        defer { if p.isRunning { p.terminate() } }
        let listening = try await eventually(timeout: .seconds(30), "the listening line") {
            lines.all.first { $0.hasPrefix("otpd listening on ") }
        }
        #expect(listening.range(of: #"^otpd listening on 127\.0\.0\.1:\d+$"#, options: .regularExpression) != nil)
        let port = Int(listening.split(separator: ":").last ?? "") ?? 0
        #expect(try await redisCLI(port, ["PING"]) == ["PONG"])
        _ = try await redisCLI(port, ["ISSUE", "x1", "email:a@example.com"])
        #expect(try await eventually("the log driver's message") { lines.all.contains { $0.contains("Your otpd code is") } ? true : nil })
        let status: Int32 = try await withCheckedThrowingContinuation { c in
            p.terminationHandler = { c.resume(returning: $0.terminationStatus) }
            kill(p.processIdentifier, SIGTERM)
        }
        #expect(status == 0)
        #expect(FileManager.default.fileExists(atPath: dataDir + "/secret"))
    }

    @Test func aBadConfigurationStopsTheStartWithTheKey() async throws {
        guard FileManager.default.isExecutableFile(atPath: Self.binary) else {
            Issue.record("otpd was not built at \(Self.binary)")
            return
        }
        let file = "/var/tmp/otpd-bad-\(UUID().uuidString.prefix(8)).toml"
        try "[limits]\nmin_gap_per_channel = \"soon\"\n".write(toFile: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: file) }
        let r = try await run([Self.binary, "--config", file])
        #expect(r.status == 2)
        #expect(r.stderr.contains("\(file): limits.min_gap_per_channel: must be a duration"))
    }
}

/// A process's output file, read as lines.
struct OutputFile: Sendable {
    var path: String
    var all: [String] {
        ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
    }
}
