import CLibPQ

#if canImport(Glibc)
@preconcurrency import Glibc
#elseif canImport(Musl)
@preconcurrency import Musl
#elseif canImport(Darwin)
import Darwin
#endif

extension PGConnection {
    /// Waits up to `timeout` for a notification on a channel this connection `LISTEN`s to; `nil` on timeout.
    public func waitForNotification(timeout: Duration) throws(PGError) -> PGNotification? {
        let handle = try liveHandle()
        let deadline = ContinuousClock.now.advanced(by: timeout)
        while true {
            guard PQconsumeInput(handle) == 1 else {
                throw .connection(Self.errorMessage(handle))
            }
            if let notify = PQnotifies(handle) {
                defer { PQfreemem(notify) }
                let channel = notify.pointee.relname.map { String(cString: $0) } ?? ""
                let payload = notify.pointee.extra.map { String(cString: $0) } ?? ""
                return PGNotification(channel: channel, payload: payload)
            }
            let remaining = millisecondsUntil(deadline)
            if remaining <= 0 { return nil }
            let socket = PQsocket(handle)
            guard socket >= 0 else { throw .connection("the connection has no socket") }
            var fds = [pollfd(fd: socket, events: Int16(POLLIN), revents: 0)]
            if pollSocket(&fds, timeoutMilliseconds: remaining) < 0 {
                throw .connection("poll() failed with errno \(errno)")
            }
        }
    }
}
