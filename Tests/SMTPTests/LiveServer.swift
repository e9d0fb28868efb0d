import Foundation
import Testing

/// A failure of the test harness itself.
struct HarnessError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// Runs a program to completion; its exit status and standard error.
func runProgram(_ arguments: [String]) async throws -> (status: Int32, stderr: String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = arguments
    let err = NSTemporaryDirectory() + "otpd-smtp-\(UUID().uuidString).err"
    _ = FileManager.default.createFile(atPath: err, contents: nil)
    defer { try? FileManager.default.removeItem(atPath: err) }
    guard let handle = FileHandle(forWritingAtPath: err) else { throw HarnessError("cannot create \(err)") }
    defer { try? handle.close() }
    p.standardOutput = FileHandle.nullDevice
    p.standardError = handle
    let status: Int32 = try await withCheckedThrowingContinuation { c in
        p.terminationHandler = { c.resume(returning: $0.terminationStatus) }
        do { try p.run() } catch { c.resume(throwing: error) }
    }
    return (status, (try? String(contentsOfFile: err, encoding: .utf8)) ?? "")
}

/// A throwaway CA and a server certificate it signed for localhost (and 127.0.0.1 unless told otherwise), made
/// with `openssl`. NIOSSL accepts a certificate that names either the server name or the address connected to.
struct TestCertificates {
    let directory: String
    var ca: String { directory + "/ca.pem" }
    var cert: String { directory + "/cert.pem" }
    var key: String { directory + "/key.pem" }

    static func make(withIPAddress: Bool = true) async throws -> TestCertificates {
        let dir = NSTemporaryDirectory() + "otpd-smtp-tls-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let files = TestCertificates(directory: dir)
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        try await openssl(
            ["req", "-x509"] + ec + ["-keyout", dir + "/ca-key.pem", "-out", files.ca, "-days", "2"]
                + ["-subj", "/CN=otpd SMTP test CA", "-addext", "basicConstraints=critical,CA:TRUE"]
                + ["-addext", "keyUsage=critical,keyCertSign,cRLSign"]
        )
        let ext = dir + "/server.ext"
        try """
        basicConstraints=critical,CA:FALSE
        keyUsage=critical,digitalSignature
        subjectAltName=\(withIPAddress ? "IP:127.0.0.1," : "")DNS:localhost
        extendedKeyUsage=serverAuth

        """.write(toFile: ext, atomically: true, encoding: .utf8)
        try await openssl(
            ["req", "-new"] + ec + ["-keyout", files.key, "-out", dir + "/server.csr", "-subj", "/CN=mx.test"]
        )
        try await openssl(
            ["x509", "-req", "-in", dir + "/server.csr", "-CA", files.ca, "-CAkey", dir + "/ca-key.pem"]
                + ["-set_serial", "2", "-days", "2", "-out", files.cert, "-extfile", ext]
        )
        return files
    }

    private static func openssl(_ arguments: [String]) async throws {
        let r = try await runProgram(["openssl"] + arguments)
        guard r.status == 0 else { throw HarnessError("openssl \(arguments.first ?? "") failed: \(r.stderr)") }
    }

    func remove() {
        try? FileManager.default.removeItem(atPath: directory)
    }
}

/// aiosmtpd on 127.0.0.1 and a free port (`Resources/smtp_server.py`), recording what it reads and receives.
final class MailServer {
    let directory: String
    let port: Int
    private let process: Process

    private init(directory: String, port: Int, process: Process) {
        self.directory = directory
        self.port = port
        self.process = process
    }

    /// Starts the script with `options` (and the certificate, when given) and waits for its port.
    static func start(_ options: [String] = [], certificates: TestCertificates?) async throws -> MailServer {
        let script = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("Resources/smtp_server.py").path
        let dir = NSTemporaryDirectory() + "otpd-smtp-server-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let out = dir + "/stdout.txt"
        let err = dir + "/stderr.txt"
        _ = FileManager.default.createFile(atPath: out, contents: nil)
        _ = FileManager.default.createFile(atPath: err, contents: nil)
        guard let outHandle = FileHandle(forWritingAtPath: out), let errHandle = FileHandle(forWritingAtPath: err)
        else { throw HarnessError("cannot create the server's output files") }
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
        throw HarnessError("smtp_server.py did not start (is aiosmtpd installed?): \(stderr)")
    }

    /// Each message the server accepted, as the script wrote it.
    func messages() throws -> [[String: Any]] {
        let names = try FileManager.default.contentsOfDirectory(atPath: directory)
            .filter { $0.hasPrefix("message-") && $0.hasSuffix(".json") }.sorted()
        return try names.map { name in
            let data = try Data(contentsOf: URL(fileURLWithPath: directory + "/" + name))
            guard let object = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
                throw HarnessError("\(name) is not a JSON object")
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
    func commands() -> [String] {
        log().compactMap { $0["command"] as? String }
    }

    /// Each AUTH attempt: the mechanism and whether the credentials were right.
    func authAttempts() -> [String] {
        log().compactMap { r in
            guard let mechanism = r["auth"] as? String, let ok = r["success"] as? Bool else { return nil }
            return "\(mechanism) \(ok ? "ok" : "refused")"
        }
    }

    /// Stops the script and removes its directory.
    func stop() {
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
