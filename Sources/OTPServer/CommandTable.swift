import RESP

/// One entry of the command table: its name, how many arguments it takes, who may run it, and what it runs.
struct Command: Sendable {
    var name: String
    /// The accepted number of arguments, the command name not counted.
    var arity: ClosedRange<Int>
    /// The roles that may run it; nil: any connection, before AUTH too.
    var roles: Set<Role>?
    var run: Run

    /// What a command runs, given its arguments (the command name removed).
    enum Run: Sendable {
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
    /// Every command otpd answers, by upper-case name (docs/PROTOCOL.md's table).
    static let table: [String: Command] = Dictionary(
        uniqueKeysWithValues: [
            Command("PING", 0...1, roles: nil, .connection { h, args, _ in h.ping(args) }),
            Command("HELLO", 0...4, roles: nil, .connection { h, args, state in try h.hello(args, state: &state) }),
            Command("AUTH", 2...2, roles: nil, .connection { h, args, state in try h.auth(args, state: &state) }),
            Command("QUIT", 0...0, roles: nil, .connection { h, _, state in h.quit(state: &state) }),
            Command("ISSUE", 2...64, roles: [.service], .session { try await $0.issue($1, tenant: $2) }),
            Command("VERIFY", 2...2, roles: [.service], .session { try await $0.verify($1, tenant: $2) }),
            Command("RESEND", 1...1, roles: [.service], .session { try await $0.resend($1, tenant: $2) }),
            Command("CANCEL", 1...1, roles: [.service], .session { try await $0.cancel($1, tenant: $2) }),
            Command("RECEIPT", 3...4, roles: [.gateway], .session { try await $0.receipt($1, tenant: $2) }),
            Command("STATUS", 1...1, roles: [.service, .auditor], .session { try await $0.status($1, tenant: $2) }),
            Command("HISTORY", 1...1, roles: [.auditor], .session { try await $0.history($1, tenant: $2) }),
            Command("REPLAY", 1...1, roles: [.auditor], .session { try await $0.replay($1, tenant: $2) }),
        ].map { ($0.name, $0) }
    )
}
