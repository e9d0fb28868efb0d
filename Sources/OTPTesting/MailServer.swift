import Foundation

/// aiosmtpd on 127.0.0.1 and a free port (`tools/testing/smtp_server.py`), recording what it reads and receives.
public final class MailServer {
    /// Where the script writes what it read and received.
    public let directory: String
    /// The port it listens on.
    public let port: Int
    private let process: Process

    private init(directory: String, port: Int, process: Process) {
        self.directory = directory
        self.port = port
        self.process = process
    }

    /// Starts the script with `options` (and the certificate, when given) and waits for its port.
    public static func start(_ options: [String] = [], certificates: TLSFiles?) async throws -> MailServer {
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("tools/testing/smtp_server.py").path
        let dir = NSTemporaryDirectory() + "otpd-smtp-server-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let out = dir + "/stdout.txt"
        let err = dir + "/stderr.txt"
        _ = FileManager.default.createFile(atPath: out, contents: nil)
        _ = FileManager.default.createFile(atPath: err, contents: nil)
        guard let outHandle = FileHandle(forWritingAtPath: out), let errHandle = FileHandle(forWritingAtPath: err)
        else { throw TestSupportError("cannot create the server's output files") }
        defer {
            try? outHandle.close()
            try? errHandle.close()
        }
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        var arguments = ["python3", script, "--dir", dir] + options
        if let certificates { arguments += ["--cert", certificates.cert, "--key", certificates.key] }
        p.arguments = arguments
        p.standardOutput = outHandle
        p.standardError = errHandle
        p.standardInput = FileHandle.nullDevice
        try p.run()
        // Poll for the port with a bound: the script prints it once aiosmtpd accepts.
        for _ in 0..<600 {
            let text = (try? String(contentsOfFile: out, encoding: .utf8)) ?? ""
            if let line = text.split(separator: "\n").first, let port = Int(line) {
                return MailServer(directory: dir, port: port, process: p)
            }
            guard p.isRunning else { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        if p.isRunning { p.terminate() }
        let stderr = (try? String(contentsOfFile: err, encoding: .utf8)) ?? ""
        throw TestSupportError("smtp_server.py did not start (is aiosmtpd installed?): \(stderr)")
    }

    /// Each message the server accepted, as the script wrote it.
    public func messages() throws -> [[String: Any]] {
        let names = try FileManager.default.contentsOfDirectory(atPath: directory)
            .filter { $0.hasPrefix("message-") && $0.hasSuffix(".json") }.sorted()
        return try names.map { name in
            let data = try Data(contentsOf: URL(fileURLWithPath: directory + "/" + name))
            guard let object = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
                throw TestSupportError("\(name) is not a JSON object")
            }
            return object
        }
    }

    /// The records of `commands.jsonl`, in order.
    private func log() -> [[String: Any]] {
        let text = (try? String(contentsOfFile: directory + "/commands.jsonl", encoding: .utf8)) ?? ""
        return text.split(separator: "\n").compactMap {
            try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
        }
    }

    /// The verb of each command line the server read, in order.
    public func commands() -> [String] {
        log().compactMap { $0["command"] as? String }
    }

    /// Each AUTH attempt: the mechanism and whether the credentials were right.
    public func authAttempts() -> [String] {
        log().compactMap { r in
            guard let mechanism = r["auth"] as? String, let ok = r["success"] as? Bool else { return nil }
            return "\(mechanism) \(ok ? "ok" : "refused")"
        }
    }

    /// Stops the script and removes its directory.
    public func stop() {
        if process.isRunning {
            process.terminate()
            // SIGTERM, then SIGKILL if it has not ended within 5 s (a signal mask inherited from our thread, say).
            for _ in 0..<100 where process.isRunning { usleep(50_000) }
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(atPath: directory)
    }
}
