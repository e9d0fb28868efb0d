import OTPDomain
import RESP

/// The commands that act on the connection itself: PING, HELLO, AUTH, QUIT.
extension CommandHandler {
    func ping(_ args: [String]) -> RESPValue {
        args.first.map { .bulk($0) } ?? .simpleString("PONG")
    }

    func auth(_ args: [String], state: inout ConnectionState) throws -> RESPValue {
        try authenticate(tenant: args[0], token: args[1], state: &state)
        return .simpleString("OK")
    }

    func quit(state: inout ConnectionState) -> RESPValue {
        state.closeAfterReply = true
        return .simpleString("OK")
    }

    func hello(_ args: [String], state: inout ConnectionState) throws -> RESPValue {
        var proto = state.protocolVersion
        if let v = args.first {
            guard let n = Int(v), n == 2 || n == 3 else {
                throw WireError(code: .err, message: "unsupported protocol version '\(Validation.printable(v))'")
            }
            proto = n
        }
        var i = 1
        while i < args.count {
            guard args[i].uppercased() == "AUTH", i + 2 < args.count else {
                throw WireError(code: .err, message: "syntax error in HELLO option '\(Validation.printable(args[i]))'")
            }
            try authenticate(tenant: args[i + 1], token: args[i + 2], state: &state)
            i += 3
        }
        state.protocolVersion = proto
        return .map([
            ("server", .bulk("otpd")), ("version", .bulk(Self.version)), ("proto", .integer(Int64(proto))),
            ("tenant", state.tenant.map { .bulk($0) } ?? .null),
        ])
    }

    private func authenticate(tenant: String, token: String, state: inout ConnectionState) throws {
        let match = authenticator.credential(tenant: tenant, token: token)
        if authenticator.isEmpty {
            throw WireError(code: .noAuth, message: "invalid credentials (this server has no tenants configured)")
        }
        guard let match else { throw WireError(code: .noAuth, message: "invalid credentials") }
        state.tenant = match.name
        state.roles = match.roles
    }
}
