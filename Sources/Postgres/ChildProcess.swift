#if canImport(Glibc)
@preconcurrency import Glibc
#elseif canImport(Musl)
@preconcurrency import Musl
#endif

/// Runs programs with `posix_spawn` and `waitpid`, closing every inherited descriptor above stderr.
///
/// Foundation's `Process` on Linux notices a child's exit through a descriptor the child inherits; a daemon
/// the child starts (`pg_ctl start` leaves `postgres` running) keeps that descriptor open, so `waitUntilExit`
/// never returns. Spawning directly avoids that.
public enum ChildProcess {
    /// Runs `executable` with `arguments`, stdin from `inputPath` (or /dev/null) and stdout+stderr appended to
    /// `outputPath` (or /dev/null); returns the exit status (128 + signal when killed). `wait: false` returns 0
    /// at once.
    ///
    /// Both files are opened before the program starts, with this process's rights, so a program run as
    /// another user (`runuser`) can read an input this process alone may read.
    public static func run(
        _ executable: String,
        _ arguments: [String],
        inputPath: String? = nil,
        outputPath: String? = nil,
        wait: Bool = true
    )
        -> Int32?
    {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, inputPath ?? "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, outputPath ?? "/dev/null", O_WRONLY | O_CREAT | O_APPEND, 0o600)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        // glibc's _np extensions are not visible to Swift's Glibc module; look them up at run time.
        if let sym = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addclosefrom_np") {
            typealias CloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
            _ = unsafeBitCast(sym, to: CloseFrom.self)(&actions, 3)
        }
        if let sym = dlsym(UnsafeMutableRawPointer(bitPattern: 0), "posix_spawn_file_actions_addchdir_np") {
            // The postgres user may not be able to enter our working directory.
            typealias ChangeDirectory =
                @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, UnsafePointer<CChar>) -> Int32
            _ = unsafeBitCast(sym, to: ChangeDirectory.self)(&actions, "/")
        }

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var none = sigset_t()
        sigemptyset(&none)
        posix_spawnattr_setsigmask(&attributes, &none)
        var all = sigset_t()
        sigfillset(&all)
        posix_spawnattr_setsigdefault(&attributes, &all)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        let argv: [UnsafeMutablePointer<CChar>?] = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { for p in argv { free(p) } }
        var pid: pid_t = 0
        let rc = argv.withUnsafeBufferPointer { buffer -> Int32 in
            guard let arguments = buffer.baseAddress else { return EINVAL }
            return posix_spawn(&pid, executable, &actions, &attributes, arguments, environ)
        }
        guard rc == 0 else { return nil }
        guard wait else { return 0 }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) < 0 {
            if errno != EINTR { return nil }
        }
        let signal = status & 0x7f
        return signal == 0 ? (status >> 8) & 0xff : 128 + signal
    }
}
