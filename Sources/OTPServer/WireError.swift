import OTPDomain
import RESP

/// An error reply: a code from the protocol's table and a message for people (`-CODE message`).
struct WireError: Error, Sendable, Equatable {
    /// The codes of docs/PROTOCOL.md's error table.
    struct Code: RawRepresentable, Sendable, Hashable {
        var rawValue: String
        init(rawValue: String) { self.rawValue = rawValue }

        /// A malformed command: unknown, wrong arity, bad HELLO.
        static let err = Code(rawValue: "ERR")
        /// Authentication required, or credentials refused.
        static let noAuth = Code(rawValue: "NOAUTH")
        /// The credential's roles do not include the command.
        static let noPerm = Code(rawValue: "NOPERM")
        /// An argument is malformed or cannot be satisfied.
        static let badArg = Code(rawValue: "BADARG")
        /// No such session for this tenant.
        static let notFound = Code(rawValue: "NOTFOUND")
        /// ISSUE reused a session id with other arguments.
        static let conflict = Code(rawValue: "CONFLICT")
        /// A pacing or abuse limit holds.
        static let rateLimited = Code(rawValue: "RATELIMITED")
        /// The database cannot be reached; nothing was recorded.
        static let unavailable = Code(rawValue: "UNAVAILABLE")
        /// The framing is broken or a request took too long to arrive; the connection closes.
        static let proto = Code(rawValue: "PROTO")
        /// Too many connections, or shutting down; the connection closes.
        static let busy = Code(rawValue: "BUSY")

        /// Every code above (the values `otpd_commands_total`'s `result` label takes besides `ok`).
        static let all: Set<Code> = [
            .err, .noAuth, .noPerm, .badArg, .notFound, .conflict, .rateLimited, .unavailable, .proto, .busy,
        ]
    }

    var code: Code
    var message: String

    /// The error as a reply.
    var reply: RESPValue { .error("\(code.rawValue) \(message)") }

    /// A command that needs AUTH on a connection without it.
    static let authenticationRequired = WireError(code: .noAuth, message: "authentication required")

    /// The reply to a domain rejection.
    init(_ rejection: Rejection) {
        switch rejection {
        case .notFound: self.init(code: .notFound, message: "no such session")
        case .conflict(let m): self.init(code: .conflict, message: m)
        case .badArgument(let m): self.init(code: .badArg, message: m)
        case .rateLimited(let s): self.init(code: .rateLimited, message: "retry_after=\(s)")
        }
    }

    init(code: Code, message: String) {
        self.code = code
        self.message = message
    }
}
