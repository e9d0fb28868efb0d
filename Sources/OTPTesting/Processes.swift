import Foundation

/// The result of a client process.
public struct ProcessResult: Sendable {
    /// The exit status.
    public var status: Int32
    /// Everything it printed on standard output.
    public var stdout: String
    /// Everything it printed on standard error.
    public var stderr: String
}

/// Runs a program to completion without blocking a cooperative thread.
///
/// Output goes to temporary files, not pipes: Foundation's pipe readability handlers are dispatch sources,
/// and closing their descriptors while the sources wind down has crashed libdispatch's event loop here.
public func run(
    _ arguments: [String],
    input: String? = nil,
    environment: [String: String] = [:]
) async throws -> ProcessResult {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    p.arguments = arguments
    var env = ProcessInfo.processInfo.environment
    for (k, v) in environment { env[k] = v }
    p.environment = env
    let base = NSTemporaryDirectory() + "otpd-test-\(UUID().uuidString)"
    let files = (out: base + ".out", err: base + ".err", in: base + ".in")
    defer { for f in [files.out, files.err, files.in] { try? FileManager.default.removeItem(atPath: f) } }
    _ = FileManager.default.createFile(atPath: files.out, contents: nil)
    _ = FileManager.default.createFile(atPath: files.err, contents: nil)
    _ = FileManager.default.createFile(atPath: files.in, contents: Data((input ?? "").utf8))
    guard let out = FileHandle(forWritingAtPath: files.out), let err = FileHandle(forWritingAtPath: files.err),
        let inp = FileHandle(forReadingAtPath: files.in)
    else { throw TestSupportError("cannot create temporary files") }
    defer {
        try? out.close()
        try? err.close()
        try? inp.close()
    }
    p.standardOutput = out
    p.standardError = err
    p.standardInput = inp
    let status: Int32 = try await withCheckedThrowingContinuation { c in
        p.terminationHandler = { proc in c.resume(returning: proc.terminationStatus) }
        do { try p.run() } catch { c.resume(throwing: error) }
    }
    let o = (try? String(contentsOfFile: files.out, encoding: .utf8)) ?? ""
    let e = (try? String(contentsOfFile: files.err, encoding: .utf8)) ?? ""
    return ProcessResult(status: status, stdout: o, stderr: e)
}

/// A test helper's failure, said in words.
public struct TestSupportError: Error, CustomStringConvertible {
    /// What went wrong.
    public var description: String
    /// Creates an error.
    public init(_ d: String) { description = d }
}
