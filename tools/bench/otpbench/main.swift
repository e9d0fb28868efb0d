// otpbench: the load generator of tools/bench/run. Speaks RESP2 over loopback to otpd on N connections from one
// thread (poll), bounded in sessions and in time, and prints its figures as one JSON line on stdout.
//
//   otpbench [--port P] [--mode lifecycle|issue|idle] [--connections N] [--sessions S] [--seconds T]
//            [--depth D | --rate R] [--prefix P] [--start I] [--extra "OPTION value ..."] [--code C]
//
// - lifecycle: each session is ISSUE s<i> sms:+1555<7 digits> email:s<i>@example.com, RECEIPT s<i> sms
//   delivered, VERIFY s<i> <code> (the null driver sends nothing, so the code is unknown: VERIFY records a
//   mismatch); issue: the ISSUE alone. Session i goes to connection i mod N.
// - closed loop (default): up to D commands in flight per connection (pipelined); with --rate R, open loop: the
//   k-th command of the run is due at R·k seconds after the start, on connection k mod N, one in flight per
//   connection, and its latency counts from when it was due (so a stalled server is not hidden).
// - idle: opens N connections, PINGs each once, prints its JSON line, then holds them for T seconds.
//
// Errors in replies count by their first word (`RATELIMITED`, `ERR`, ...); a connection that closes or sends
// what is not RESP counts its outstanding commands as `CLOSED` or `MALFORMED`.
import Foundation

#if canImport(Glibc)
import Glibc
#endif

struct Options {
    var host = "127.0.0.1"
    var port: UInt16 = 7379
    var mode = "lifecycle"
    var connections = 16
    var sessions = 1000
    var seconds = 0.0
    var depth = 48
    var rate = 0.0
    var prefix = "s"
    var start = 0
    var extra: [String] = []
    var code = "000000"
}

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("otpbench: \(message)\n".utf8))
    exit(2)
}

func parseOptions() -> Options {
    var o = Options()
    var arguments = CommandLine.arguments.dropFirst()
    func value(_ name: String) -> String {
        guard let v = arguments.popFirst() else { fail("\(name) needs a value") }
        return v
    }
    func number<T: LosslessStringConvertible>(_ name: String) -> T {
        let v = value(name)
        guard let n = T(v) else { fail("\(name): not a number: \(v)") }
        return n
    }
    while let argument = arguments.popFirst() {
        switch argument {
        case "--host": o.host = value(argument)
        case "--port": o.port = number(argument)
        case "--mode": o.mode = value(argument)
        case "--connections": o.connections = number(argument)
        case "--sessions": o.sessions = number(argument)
        case "--seconds": o.seconds = number(argument)
        case "--depth": o.depth = number(argument)
        case "--rate": o.rate = number(argument)
        case "--prefix": o.prefix = value(argument)
        case "--start": o.start = number(argument)
        case "--extra": o.extra = value(argument).split(separator: " ").map(String.init)
        case "--code": o.code = value(argument)
        case "-h", "--help":
            print("usage: otpbench [--port P] [--mode lifecycle|issue|idle] [--connections N] [--sessions S]")
            print("                [--seconds T] [--depth D | --rate R] [--prefix P] [--start I] [--extra OPTS]")
            exit(0)
        default: fail("unknown argument \(argument) (see --help)")
        }
    }
    guard ["lifecycle", "issue", "idle"].contains(o.mode) else { fail("--mode: lifecycle, issue or idle") }
    guard o.connections >= 1 else { fail("--connections must be at least 1") }
    guard o.sessions >= 0, o.seconds >= 0, o.depth >= 1, o.rate >= 0 else { fail("negative bound") }
    return o
}

/// Monotonic nanoseconds.
func now() -> UInt64 {
    var t = timespec()
    clock_gettime(CLOCK_MONOTONIC, &t)
    return UInt64(t.tv_sec) * 1_000_000_000 + UInt64(t.tv_nsec)
}

func connectTo(_ o: Options) -> Int32? {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { fail("socket: \(String(cString: strerror(errno))) (raise ulimit -n?)") }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = o.port.bigEndian
    guard inet_pton(AF_INET, o.host, &address.sin_addr) == 1 else { fail("--host: not an IPv4 address: \(o.host)") }
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
        }
    }
    guard connected == 0 else {
        close(fd)
        return nil
    }
    var one: Int32 = 1
    setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
    return fd
}

/// One connection: its socket, unsent bytes, unparsed bytes, and when each outstanding command was due or sent.
final class Connection {
    let fd: Int32
    let index: Int
    var out: [UInt8] = []
    var outOffset = 0
    var input: [UInt8] = []
    var inputStart = 0
    var outstanding: [UInt64] = []
    var outstandingHead = 0
    var alive = true
    /// The next command: session number (the connection's j-th session) and step.
    var session = 0
    var step = 0
    /// Commands this connection has sent (the open loop's schedule counts them).
    var sent = 0

    init(fd: Int32, index: Int) {
        self.fd = fd
        self.index = index
    }

    var inFlight: Int { outstanding.count - outstandingHead }
}

final class Bench {
    let o: Options
    var connections: [Connection] = []
    var latencies: [UInt32] = []  // microseconds
    var errors: [String: Int] = [:]
    var sent = 0
    var replies = 0
    var completedSessions = 0
    var startedSessions = 0
    var maxSendLag: UInt64 = 0
    let steps: [String]
    var t0: UInt64 = 0
    let isTerminal = isatty(2) == 1
    var lastProgress: UInt64 = 0

    init(_ o: Options) {
        self.o = o
        steps = o.mode == "lifecycle" ? ["ISSUE", "RECEIPT", "VERIFY"] : ["ISSUE"]
    }

    func count(_ kind: String, _ n: Int = 1) {
        errors[kind, default: 0] += n
    }

    func arguments(session i: Int, step: String) -> [String] {
        let id = "\(o.prefix)\(i)"
        switch step {
        case "ISSUE":
            let digits = String(i % 10_000_000)
            let phone = "+1555" + String(repeating: "0", count: 7 - digits.count) + digits
            return ["ISSUE", id, "sms:\(phone)", "email:\(id)@example.com"] + o.extra
        case "RECEIPT": return ["RECEIPT", id, "sms", "delivered"]
        default: return ["VERIFY", id, o.code]
        }
    }

    /// The session number of the connection's next command, or nil when it has no more to send.
    func nextSession(_ c: Connection, at t: UInt64) -> Int? {
        let i = o.start + c.index + c.session * o.connections
        guard i - o.start < o.sessions else { return nil }
        if c.step == 0 && o.seconds > 0 && Double(t - t0) / 1e9 >= o.seconds { return nil }
        return i
    }

    /// When the open loop's next command on this connection is due.
    func due(_ c: Connection) -> UInt64 {
        t0 + UInt64(Double(c.index + c.sent * o.connections) / o.rate * 1e9)
    }

    func enqueue(_ c: Connection, session i: Int, stamp: UInt64) {
        if c.step == 0 { startedSessions += 1 }
        encodeCommand(arguments(session: i, step: steps[c.step]), into: &c.out)
        c.outstanding.append(stamp)
        c.sent += 1
        sent += 1
        c.step += 1
        if c.step == steps.count {
            c.step = 0
            c.session += 1
        }
    }

    func drop(_ c: Connection, _ kind: String) {
        guard c.alive else { return }
        c.alive = false
        count(kind, c.inFlight)
        c.outstandingHead = c.outstanding.count
        close(c.fd)
    }

    func flush(_ c: Connection) {
        while c.alive && c.outOffset < c.out.count {
            let n = c.out.withUnsafeBytes { write(c.fd, $0.baseAddress! + c.outOffset, c.out.count - c.outOffset) }
            if n < 0 {
                if errno == EAGAIN || errno == EINTR { return }
                drop(c, "CLOSED")
                return
            }
            c.outOffset += n
        }
        if c.outOffset == c.out.count {
            c.out.removeAll(keepingCapacity: true)
            c.outOffset = 0
        }
    }

    func read(_ c: Connection, buffer: UnsafeMutableRawBufferPointer) {
        while c.alive {
            let n = Glibc.read(c.fd, buffer.baseAddress!, buffer.count)
            if n == 0 {
                drop(c, "CLOSED")
                return
            }
            if n < 0 {
                if errno == EAGAIN || errno == EINTR { break }
                drop(c, "CLOSED")
                return
            }
            c.input.append(contentsOf: UnsafeRawBufferPointer(rebasing: buffer[0..<n]))
            if n < buffer.count { break }
        }
        let t = now()
        do {
            try c.input.withUnsafeBufferPointer { bytes in
                while let reply = try ReplyParser.parse(bytes, from: c.inputStart, to: bytes.count) {
                    c.inputStart += reply.length
                    guard c.outstandingHead < c.outstanding.count else {
                        throw MalformedReply(reason: "a reply to no command")
                    }
                    let stamp = c.outstanding[c.outstandingHead]
                    c.outstandingHead += 1
                    replies += 1
                    latencies.append(UInt32(min((t &- stamp) / 1000, UInt64(UInt32.max))))
                    if let kind = reply.errorKind { count(kind) }
                    // A connection sends whole sessions, step by step: every steps.count-th reply ends one.
                    if (c.sent - c.inFlight) % steps.count == 0 { completedSessions += 1 }
                }
            }
        } catch {
            drop(c, "MALFORMED")
            return
        }
        if c.inputStart > 65536 && c.inputStart * 2 > c.input.count {
            c.input.removeFirst(c.inputStart)
            c.inputStart = 0
        }
        if c.outstandingHead > 4096 && c.outstandingHead * 2 > c.outstanding.count {
            c.outstanding.removeFirst(c.outstandingHead)
            c.outstandingHead = 0
        }
    }

    func progress(final: Bool = false) {
        let t = now()
        guard final || t - lastProgress >= (isTerminal ? 250_000_000 : 1_000_000_000) else { return }
        lastProgress = t
        let elapsed = Double(t - t0) / 1e9
        let errorCount = errors.values.reduce(0, +)
        let line = String(
            format: "otpbench %@: %d sent, %d replies (%.0f/s), %d errors, %.1f s",
            o.mode,
            sent,
            replies,
            Double(replies) / max(elapsed, 1e-9),
            errorCount,
            elapsed
        )
        FileHandle.standardError.write(Data((isTerminal ? "\r\(line)\u{1B}[K" : "\(line)\n").utf8))
        if final && isTerminal { FileHandle.standardError.write(Data("\n".utf8)) }
    }

    func open() {
        for i in 0..<o.connections {
            guard let fd = connectTo(o) else {
                count("CONNECT")
                continue
            }
            connections.append(Connection(fd: fd, index: i))
        }
        if connections.isEmpty { fail("no connection to \(o.host):\(o.port)") }
    }

    /// Closed or open loop until every connection has sent its share and had its replies, or the time bound
    /// (plus 30 s for outstanding replies) has passed.
    func runLoad() {
        open()
        t0 = now()
        lastProgress = t0
        let hardStop: UInt64? = o.seconds > 0 ? t0 + UInt64((o.seconds + 30) * 1e9) : nil
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 16, alignment: 1)
        defer { buffer.deallocate() }
        var fds = [pollfd](repeating: pollfd(), count: connections.count)
        while true {
            let t = now()
            var waitNs: UInt64 = 100_000_000
            var busy = false
            for c in connections where c.alive {
                if o.rate > 0 {
                    if c.inFlight == 0, let i = nextSession(c, at: t) {
                        let d = due(c)
                        if d <= t {
                            maxSendLag = max(maxSendLag, t - d)
                            enqueue(c, session: i, stamp: d)
                        } else {
                            waitNs = min(waitNs, d - t)
                        }
                    }
                } else {
                    while c.inFlight < o.depth, let i = nextSession(c, at: t) { enqueue(c, session: i, stamp: t) }
                }
                flush(c)
                if c.alive && (c.inFlight > 0 || nextSession(c, at: t) != nil) { busy = true }
            }
            if !busy { break }
            if let stop = hardStop, t >= stop {
                for c in connections { drop(c, "TIMEOUT") }
                break
            }
            for (k, c) in connections.enumerated() {
                fds[k] = pollfd(
                    fd: c.alive ? c.fd : -1,
                    events: Int16(POLLIN) | (c.outOffset < c.out.count ? Int16(POLLOUT) : 0),
                    revents: 0
                )
            }
            let timeout = o.rate > 0 ? Int32(max(0, min(100, Double(waitNs) / 1e6))) : 100
            _ = poll(&fds, nfds_t(fds.count), timeout)
            for (k, c) in connections.enumerated() where c.alive && fds[k].revents != 0 {
                if fds[k].revents & Int16(POLLOUT) != 0 { flush(c) }
                if fds[k].revents & Int16(POLLIN | POLLHUP | POLLERR) != 0 { read(c, buffer: buffer) }
            }
            progress()
        }
        progress(final: true)
        let elapsed = Double(now() - t0) / 1e9
        report(elapsed: elapsed)
    }

    /// Opens the connections, PINGs each, prints the JSON line, holds them for `seconds`.
    func runIdle() {
        t0 = now()
        open()
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 12, alignment: 1)
        defer { buffer.deallocate() }
        for c in connections {
            encodeCommand(["PING"], into: &c.out)
            c.outstanding.append(now())
            sent += 1
            flush(c)
        }
        let stop = now() + 30_000_000_000
        var fds = [pollfd](repeating: pollfd(), count: connections.count)
        while connections.contains(where: { $0.alive && $0.inFlight > 0 }) && now() < stop {
            for (k, c) in connections.enumerated() {
                fds[k] = pollfd(fd: c.alive && c.inFlight > 0 ? c.fd : -1, events: Int16(POLLIN), revents: 0)
            }
            _ = poll(&fds, nfds_t(fds.count), 100)
            for (k, c) in connections.enumerated() where c.alive && fds[k].revents != 0 { read(c, buffer: buffer) }
            progress()
        }
        for c in connections where c.alive && c.inFlight > 0 { drop(c, "TIMEOUT") }
        progress(final: true)
        let elapsed = Double(now() - t0) / 1e9
        let open = connections.filter(\.alive).count
        report(elapsed: elapsed, extra: ", \"open\": \(open)")
        fflush(nil)  // every stream: the JSON line must be out before the hold
        if o.seconds > 0 { usleep(UInt32(min(o.seconds, 3600) * 1e6)) }
        for c in connections where c.alive { close(c.fd) }
    }

    func report(elapsed: Double, extra: String = "") {
        latencies.sort()
        func percentile(_ p: Double) -> Double {
            guard !latencies.isEmpty else { return 0 }
            let index = min(latencies.count - 1, Int((p * Double(latencies.count)).rounded(.up)) - 1)
            return Double(latencies[max(0, index)]) / 1000
        }
        let errorsJSON = errors.sorted { $0.key < $1.key }.map { "\"\($0.key)\": \($0.value)" }.joined(
            separator: ", "
        )
        let errorCount = errors.values.reduce(0, +)
        var line = "{\"mode\": \"\(o.mode)\", \"connections\": \(o.connections), "
        line += "\"loop\": \"\(o.rate > 0 ? "open" : "closed")\", "
        if o.rate > 0 { line += "\"target_rate\": \(o.rate), \"max_send_lag_ms\": \(Double(maxSendLag) / 1e6), " }
        line += "\"sessions_started\": \(startedSessions), \"sessions_completed\": \(completedSessions), "
        line += "\"sent\": \(sent), \"replies\": \(replies), \"errors\": \(errorCount), "
        line += "\"errors_by_kind\": {\(errorsJSON)}, \"elapsed_s\": \(String(format: "%.3f", elapsed)), "
        line += "\"rate\": \(String(format: "%.1f", Double(replies) / max(elapsed, 1e-9))), "
        line += "\"latency_ms\": {\"p50\": \(percentile(0.5)), \"p90\": \(percentile(0.9)), "
        line += "\"p99\": \(percentile(0.99)), \"max\": \(percentile(1))}\(extra)}"
        print(line)
    }
}

signal(SIGPIPE, SIG_IGN)
let options = parseOptions()
let bench = Bench(options)
if options.mode == "idle" {
    bench.runIdle()
} else {
    bench.runLoad()
}
