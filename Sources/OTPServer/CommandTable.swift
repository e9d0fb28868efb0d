import NIOCore
import RESP

/// One entry of the command table: its name, how many arguments it takes, who may run it, and what it runs.
struct Command: Sendable {
    var name: String
    /// The accepted number of arguments, the command name not counted.
    var arity: ClosedRange<Int>
    /// The roles that may run it; nil: any connection, before AUTH too; `anyRole`: any connection after AUTH.
    var roles: Set<Role>?
    var run: Run

    /// What a command runs, given its arguments (the command name removed).
    enum Run: Sendable {
        /// Answers with the arguments' bytes as they came (PING, ECHO): no text needed, any bytes kept.
        case bytes(@Sendable ([ByteBuffer]) -> RESPValue)
        /// Acts on the connection itself.
        case connection(@Sendable (CommandHandler, [String], inout ConnectionState) throws -> RESPValue)
        /// Acts on the authenticated tenant's sessions.
        case session(@Sendable (CommandHandler, [String], _ tenant: String) async throws -> RESPValue)
    }

    init(_ name: String, _ arity: ClosedRange<Int>, roles: Set<Role>?, _ run: Run) {
        self.name = name
        self.arity = arity
        self.roles = roles
        self.run = run
    }
}

extension Command {
    /// Any authenticated credential: every credential has at least one role.
    static let anyRole = Set(Role.allCases)

    /// Every command otpd answers, by upper-case name (docs/PROTOCOL.md's table).
    static let table: [String: Command] = Dictionary(
        uniqueKeysWithValues: [
            Command("PING", 0...1, roles: nil, .bytes { $0.first.map(RESPValue.bulkString) ?? .simpleString("PONG") }),
            Command("HELLO", 0...6, roles: nil, .connection { h, args, state in try h.hello(args, state: &state) }),
            Command("AUTH", 2...2, roles: nil, .connection { h, args, state in try h.auth(args, state: &state) }),
            Command("QUIT", 0...0, roles: nil, .connection { h, _, state in h.quit(state: &state) }),
            // The handshake clients send on connect (docs/PROTOCOL.md, "Connection commands"): after AUTH, no role.
            Command("CLIENT", 1...63, roles: anyRole, .connection { try $0.run(.client, $1, &$2) }),
            Command("COMMAND", 0...63, roles: anyRole, .connection { try $0.run(.command, $1, &$2) }),
            Command("SELECT", 1...1, roles: anyRole, .connection { h, args, _ in try h.select(args) }),
            Command("ECHO", 1...1, roles: anyRole, .bytes { .bulkString($0[0]) }),
            Command("INFO", 0...63, roles: anyRole, .connection { h, args, _ in h.info(args) }),
            Command("ISSUE", 2...64, roles: [.service], .session { try await $0.issue($1, tenant: $2) }),
            Command("VERIFY", 2...2, roles: [.service], .session { try await $0.verify($1, tenant: $2) }),
            Command("RESEND", 1...1, roles: [.service], .session { try await $0.resend($1, tenant: $2) }),
            Command("CANCEL", 1...1, roles: [.service], .session { try await $0.cancel($1, tenant: $2) }),
            Command("RECEIPT", 3...4, roles: [.gateway], .session { try await $0.receipt($1, tenant: $2) }),
            Command("ERASE", 1...1, roles: [.service], .session { try await $0.erase($1, tenant: $2) }),
            Command("STATUS", 1...1, roles: [.service, .auditor], .session { try await $0.status($1, tenant: $2) }),
            Command("HISTORY", 1...1, roles: [.auditor], .session { try await $0.history($1, tenant: $2) }),
            Command("REPLAY", 1...1, roles: [.auditor], .session { try await $0.replay($1, tenant: $2) }),
            Command(
                "SUBSCRIBE",
                1...63,
                roles: [.service, .auditor],
                .connection { try $0.subscribe($1, state: &$2) }
            ),
            Command(
                "UNSUBSCRIBE",
                0...63,
                roles: [.service, .auditor],
                .connection { try $0.unsubscribe($1, state: &$2) }
            ),
            Command("STATS", 0...4, roles: [.analyst], .session { try await $0.stats($1, tenant: $2) }),
        ].map { ($0.name, $0) }
    )
}

/// One subcommand of CLIENT or COMMAND: its name, how many arguments follow it, and what it runs.
struct Subcommand: Sendable {
    var name: String
    /// The accepted number of arguments, the command and subcommand names not counted.
    var arity: ClosedRange<Int>
    var run: @Sendable (CommandHandler, [String], inout ConnectionState) throws -> RESPValue

    init(
        _ name: String,
        _ arity: ClosedRange<Int>,
        _ run: @escaping @Sendable (CommandHandler, [String], inout ConnectionState) throws -> RESPValue
    ) {
        self.name = name
        self.arity = arity
        self.run = run
    }
}

/// A command's subcommands by upper-case name; the empty name is the command sent alone.
struct Subcommands: Sendable {
    /// The command they belong to.
    var name: String
    var table: [String: Subcommand]

    init(_ name: String, _ entries: [Subcommand]) {
        self.name = name
        table = Dictionary(uniqueKeysWithValues: entries.map { ($0.name, $0) })
    }

    /// CLIENT's: what Redis clients send on connect, and a few to read it back.
    static let client: Subcommands = Subcommands(
        "CLIENT",
        [
            Subcommand("SETNAME", 1...1) { h, args, state in try h.setName(args[0], state: &state) },
            Subcommand("GETNAME", 0...0) { _, _, state in state.name.map { .bulk($0) } ?? .null },
            Subcommand("SETINFO", 2...2) { h, args, state in try h.setInfo(args[0], args[1], state: &state) },
            Subcommand("ID", 0...0) { _, _, state in .integer(state.id) },
            Subcommand("INFO", 0...0) { h, _, state in h.clientInfo(state) },
            Subcommand("HELP", 0...0) { _, _, _ in client.help },
        ]
    )

    /// COMMAND's: the minimal answers Redis allows (clients read only key positions from them).
    static let command: Subcommands = Subcommands(
        "COMMAND",
        [
            Subcommand("", 0...0) { _, _, _ in .array([]) },
            Subcommand("DOCS", 0...62) { _, _, _ in .array([]) },
            Subcommand("COUNT", 0...0) { _, _, _ in .integer(Int64(Command.table.count)) },
            Subcommand("INFO", 0...62) { h, args, _ in h.commandInfo(args) },
            Subcommand("HELP", 0...0) { _, _, _ in command.help },
        ]
    )

    /// HELP's answer: the subcommands, one simple string each.
    var help: RESPValue {
        .array(table.keys.filter { !$0.isEmpty }.sorted().map { .simpleString("\(name) \($0)") })
    }
}
