import Foundation
import Postgres
import Synchronization

#if canImport(Glibc)
@preconcurrency import Glibc
#elseif canImport(Musl)
@preconcurrency import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Stops a running cluster's server processes (the postmaster, then each of its children) with SIGSTOP.
///
/// A black hole: the connections stay open and the kernel still acknowledges what clients send, but nothing
/// answers, so neither TCP nor the server's own timeouts end a call; only the client's bound does. `thaw()`
/// continues every process; call it in a `defer` so no test leaves a stopped cluster behind (the cleanup
/// watchdog continues a stopped postmaster too).
public final class ServerFreeze: Sendable {
    private let stopped = Mutex<[pid_t]>([])

    /// Stops the server running in `cluster`'s data directory; throws when none is running.
    public init(_ cluster: EmbeddedPostgres) throws {
        let pidFile = cluster.effectiveDataDirectory + "/postmaster.pid"
        guard let text = try? String(contentsOfFile: pidFile, encoding: .utf8),
            let line = text.split(separator: "\n").first,
            let postmaster = pid_t(line.trimmingCharacters(in: .whitespaces)), postmaster > 0
        else { throw PGError(code: .launch, message: "no server is running in \(cluster.effectiveDataDirectory)") }
        // The postmaster first, so that it forks no backend after the children were listed.
        guard kill(postmaster, SIGSTOP) == 0 else {
            throw PGError(code: .launch, message: "could not stop the postmaster \(postmaster) (errno \(errno))")
        }
        var list = [postmaster]
        for child in Self.children(of: postmaster) where kill(child, SIGSTOP) == 0 {
            list.append(child)
        }
        stopped.withLock { $0 = list }
    }

    deinit {
        thaw()
    }

    /// The processes stopped, the postmaster first.
    public var processes: [pid_t] {
        stopped.withLock { $0 }
    }

    /// Continues every stopped process; later calls do nothing.
    public func thaw() {
        let list = stopped.withLock { list in
            defer { list.removeAll() }
            return list
        }
        for pid in list.reversed() { _ = kill(pid, SIGCONT) }
    }

    /// The pids whose parent is `parent`, from `/proc/<pid>/stat`.
    static func children(of parent: pid_t) -> [pid_t] {
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        return entries.compactMap { name -> pid_t? in
            guard let pid = pid_t(name),
                let stat = try? String(contentsOfFile: "/proc/\(name)/stat", encoding: .utf8),
                let close = stat.lastIndex(of: ")")
            else { return nil }
            // "pid (comm) state ppid ...": comm may contain spaces and parentheses, so read after the last ")".
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            guard fields.count > 1, let ppid = pid_t(fields[1]), ppid == parent else { return nil }
            return pid
        }
    }
}
