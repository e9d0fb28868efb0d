import OTPDomain
import RESP

/// The commands that act on the connection itself: PING, HELLO, AUTH, QUIT, and the handshake Redis clients send
/// on connect (CLIENT, SELECT, ECHO, COMMAND).
extension CommandHandler {
    func auth(_ args: [String], state: inout ConnectionState) throws -> RESPValue {
        try authenticate(tenant: args[0], token: args[1], state: &state)
        return .simpleString("OK")
    }

    func quit(state: inout ConnectionState) -> RESPValue {
        state.closeAfterReply = true
        return .simpleString("OK")
    }

    /// `HELLO [protover [AUTH tenant token] [SETNAME name]]`: nothing changes unless every part is accepted.
    func hello(_ args: [String], state: inout ConnectionState) throws -> RESPValue {
        var proto = state.protocolVersion
        if let v = args.first {
            guard let n = Int(v), n == 2 || n == 3 else {
                throw WireError(code: .err, message: "unsupported protocol version '\(Validation.printable(v))'")
            }
            proto = n
        }
        var credential: (tenant: String, token: String)?
        var name: String?
        var i = 1
        while i < args.count {
            switch args[i].uppercased() {
            case "AUTH" where i + 2 < args.count:
                credential = (args[i + 1], args[i + 2])
                i += 3
            case "SETNAME" where i + 1 < args.count:
                try Self.validateName(args[i + 1])
                name = args[i + 1]
                i += 2
            default:
                throw WireError(code: .err, message: "syntax error in HELLO option '\(Validation.printable(args[i]))'")
            }
        }
        if let credential { try authenticate(tenant: credential.tenant, token: credential.token, state: &state) }
        if let name { state.name = name.isEmpty ? nil : name }
        state.protocolVersion = proto
        // Redis's keys in Redis's order, then ours.
        return .map([
            ("server", .bulk("otpd")), ("version", .bulk(Self.version)), ("proto", .integer(Int64(proto))),
            ("id", .integer(state.id)), ("mode", .bulk("standalone")), ("role", .bulk("master")),
            ("modules", .array([])), ("tenant", state.tenant.map { .bulk($0) } ?? .null),
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

    /// Runs one of CLIENT's or COMMAND's subcommands.
    func run(_ commands: Subcommands, _ args: [String], _ state: inout ConnectionState) throws -> RESPValue {
        let given = args.first ?? ""
        guard let sub = commands.table[given.uppercased()] else {
            let shown = Validation.printable(given)
            throw WireError(code: .err, message: "unknown subcommand '\(shown)'. Try \(commands.name) HELP.")
        }
        let rest = Array(args.dropFirst())
        guard sub.arity.contains(rest.count) else {
            throw WireError(code: .err, message: "wrong number of arguments for '\(commands.name) \(sub.name)'")
        }
        return try sub.run(self, rest, &state)
    }

    /// `CLIENT SETNAME name`: an empty name clears it.
    func setName(_ name: String, state: inout ConnectionState) throws -> RESPValue {
        try Self.validateName(name)
        state.name = name.isEmpty ? nil : name
        return .simpleString("OK")
    }

    /// `CLIENT SETINFO LIB-NAME|LIB-VER value`, kept for CLIENT INFO.
    func setInfo(_ attribute: String, _ value: String, state: inout ConnectionState) throws -> RESPValue {
        let shown = Validation.printable(attribute)
        guard Self.isAttribute(value) else {
            throw WireError(code: .err, message: "\(shown) cannot contain spaces, newlines or special characters.")
        }
        switch attribute.uppercased() {
        case "LIB-NAME": state.libraryName = value.isEmpty ? nil : value
        case "LIB-VER": state.libraryVersion = value.isEmpty ? nil : value
        default: throw WireError(code: .err, message: "Unrecognized option '\(shown)'")
        }
        return .simpleString("OK")
    }

    /// `CLIENT INFO`: Redis's `key=value` line, with the fields otpd knows.
    func clientInfo(_ state: ConnectionState) -> RESPValue {
        let fields = [
            ("id", "\(state.id)"), ("name", state.name ?? ""), ("db", "0"), ("user", state.tenant ?? ""),
            ("resp", "\(state.protocolVersion)"), ("lib-name", state.libraryName ?? ""),
            ("lib-ver", state.libraryVersion ?? ""),
        ]
        return .bulk(fields.map { "\($0)=\($1)" }.joined(separator: " ") + "\n")
    }

    /// `COMMAND INFO [name ...]`: Redis's ten-field entry per known command (no flags, no keys), null otherwise.
    func commandInfo(_ names: [String]) -> RESPValue {
        let commands = names.isEmpty ? Command.table.keys.sorted() : names
        return .array(
            commands.map { name in
                guard let c = Command.table[name.uppercased()] else { return .null }
                // Redis's arity counts the command's name; negative: at least that many.
                let arity = c.arity.count == 1 ? c.arity.lowerBound + 1 : -(c.arity.lowerBound + 1)
                return .array([
                    .bulk(c.name.lowercased()), .integer(Int64(arity)), .array([]), .integer(0), .integer(0),
                    .integer(0), .array([]), .array([]), .array([]), .array([]),
                ])
            }
        )
    }

    /// `SELECT index`: otpd has one database, 0.
    func select(_ args: [String]) throws -> RESPValue {
        guard let index = Int(args[0]) else {
            throw WireError(code: .err, message: "value is not an integer or out of range")
        }
        guard index == 0 else { throw WireError(code: .err, message: "DB index is out of range") }
        return .simpleString("OK")
    }

    /// `INFO [section ...]`: the `server` and `replication` sections, as Redis writes them (clients such as
    /// Valkey GLIDE read `role` on connect); an unknown section adds nothing, as in Redis.
    func info(_ sections: [String]) -> RESPValue {
        let all: [(name: String, lines: [String])] = [
            ("server", ["otpd_version:\(Self.version)", "redis_mode:standalone"]),
            ("replication", ["role:master", "connected_slaves:0"]),
        ]
        let asked = Set(sections.map { $0.lowercased() })
        let everything = asked.isEmpty || !asked.isDisjoint(with: ["default", "all", "everything"])
        let text = all.filter { everything || asked.contains($0.name) }.map { section in
            (["# \(section.name.prefix(1).uppercased() + section.name.dropFirst())"] + section.lines)
                .joined(separator: "\r\n") + "\r\n"
        }
        return .bulk(text.joined(separator: "\r\n"))
    }

    /// Redis's rule for names and CLIENT SETINFO values: printable ASCII without spaces (empty is allowed).
    private static func isAttribute(_ s: String) -> Bool {
        s.utf8.allSatisfy { $0 > 0x20 && $0 < 0x7F }
    }

    private static func validateName(_ name: String) throws {
        guard isAttribute(name) else {
            throw WireError(code: .err, message: "Client names cannot contain spaces, newlines or special characters.")
        }
    }
}
