#if canImport(Glibc)
@preconcurrency import Glibc
#elseif canImport(Musl)
@preconcurrency import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Waits until `fd` is ready for `events` or the timeout (milliseconds, -1 = forever) passes; retries on EINTR.
func pollSocket(_ fds: inout [pollfd], timeoutMilliseconds: Int32) -> Int32 {
    while true {
        let count = fds.withUnsafeMutableBufferPointer { buffer in
            poll(buffer.baseAddress, nfds_t(buffer.count), timeoutMilliseconds)
        }
        if count < 0 && errno == EINTR { continue }
        return count
    }
}

/// The milliseconds left until `deadline`, rounded up and clamped to `Int32`, never negative.
func millisecondsUntil(_ deadline: ContinuousClock.Instant) -> Int32 {
    let remaining = ContinuousClock.now.duration(to: deadline)
    if remaining <= .zero { return 0 }
    let ms = PGSettings.milliseconds(remaining) + 1
    return Int32(clamping: ms)
}

/// Closes a file descriptor if it is valid.
func closeDescriptor(_ fd: Int32) {
    if fd >= 0 { _ = close(fd) }
}
