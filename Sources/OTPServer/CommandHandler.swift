import Crypto
import EventStore
import Logging
import OTPDomain
import OTPService
import Postgres
import RESP

/// What a connection has established: who it is, what it may run, which protocol version it speaks.
public struct ConnectionState: Sendable {
    /// The authenticated tenant, or nil before AUTH (always `default` in single-tenant mode).
    public var tenant: String?
    /// The roles of the credential used.
    public var roles: Set<Role>
    /// 2 or 3 (after `HELLO 3`).
    public var protocolVersion = 2
    /// Set by QUIT: close after the reply.
    public var closeAfterReply = false
}

/// A wire error: a code from the protocol's table and a message for people.
struct WireError: Error {
    var code: String
    var message: String
    var reply: RESPValue { .error("\(code) \(message)") }

    static func badArg(_ m: String) -> WireError { WireError(code: "BADARG", message: m) }
}

/// Turns requests into replies: authentication, roles, argument parsing, and the session service.
public final class CommandHandler: Sendable {
    let service: SessionService
    let tenants: [TenantCredential]
    let logger: Logger
    /// The server's version, reported by HELLO.
    public static let version = "0.1.0"

    /// One entry of the command table: its arity, who may run it, and what it runs.
    struct Command: Sendable {
        var minArgs: Int
        var maxArgs: Int
        /// The roles that may run it; nil: any connection, before AUTH too (PING, HELLO, AUTH, QUIT).
        var roles: Set<Role>?
        var run: Run
    }

    /// What a command runs, given its arguments (the command name removed).
    enum Run: Sendable {
        /// Acts on the connection itself.
        case connection(@Sendable (CommandHandler, [String], inout ConnectionState) throws -> RESPValue)
        /// Acts on the authenticated tenant's sessions.
        case session(@Sendable (CommandHandler, [String], _ tenant: String) async throws -> RESPValue)
    }

    static let table: [String: Command] = [
        "PING": Command(
            minArgs: 0,
            maxArgs: 1,
            roles: nil,
            run: .connection { _, args, _ in
                args.first.map { .bulk($0) } ?? .simpleString("PONG")
            }
        ),
        "HELLO": Command(
            minArgs: 0,
            maxArgs: 4,
            roles: nil,
            run: .connection { h, args, state in
                try h.hello(args, state: &state)
            }
        ),
        "AUTH": Command(
            minArgs: 2,
            maxArgs: 2,
            roles: nil,
            run: .connection { h, args, state in
                try h.authenticate(tenant: args[0], token: args[1], state: &state)
                return .simpleString("OK")
            }
        ),
        "QUIT": Command(
            minArgs: 0,
            maxArgs: 0,
            roles: nil,
            run: .connection { _, _, state in
                state.closeAfterReply = true
                return .simpleString("OK")
            }
        ),
        "ISSUE": Command(
            minArgs: 2,
            maxArgs: 64,
            roles: [.service],
            run: .session { h, args, tenant in
                try await h.issue(args, tenant: tenant)
            }
        ),
        "VERIFY": Command(
            minArgs: 2,
            maxArgs: 2,
            roles: [.service],
            run: .session { h, args, tenant in
                try await h.verify(args, tenant: tenant)
            }
        ),
        "RESEND": Command(
            minArgs: 1,
            maxArgs: 1,
            roles: [.service],
            run: .session { h, args, tenant in
                try await h.sessionMap(.resend, args, tenant: tenant, full: false)
            }
        ),
        "CANCEL": Command(
            minArgs: 1,
            maxArgs: 1,
            roles: [.service],
            run: .session { h, args, tenant in
                try await h.sessionMap(.cancel, args, tenant: tenant, full: true)
            }
        ),
        "RECEIPT": Command(
            minArgs: 3,
            maxArgs: 4,
            roles: [.gateway],
            run: .session { h, args, tenant in
                try await h.receipt(args, tenant: tenant)
            }
        ),
        "STATUS": Command(
            minArgs: 1,
            maxArgs: 1,
            roles: [.service, .auditor],
            run: .session { h, args, tenant in
                try await h.status(args, tenant: tenant)
            }
        ),
        "HISTORY": Command(
            minArgs: 1,
            maxArgs: 1,
            roles: [.auditor],
            run: .session { h, args, tenant in
                try await h.history(args, tenant: tenant)
            }
        ),
        "REPLAY": Command(
            minArgs: 1,
            maxArgs: 1,
            roles: [.auditor],
            run: .session { h, args, tenant in
                try await h.replay(args, tenant: tenant)
            }
        ),
    ]

    /// Creates a handler; with no tenants the server is single-tenant and needs no AUTH.
    public init(service: SessionService, tenants: [TenantCredential], logger: Logger) {
        self.service = service
        self.tenants = tenants
        self.logger = logger
    }

    /// The state of a new connection.
    public func newConnection() -> ConnectionState {
        tenants.isEmpty
            ? ConnectionState(tenant: "default", roles: Set(Role.allCases))
            : ConnectionState(tenant: nil, roles: [])
    }

    /// Handles one request and returns its reply.
    public func handle(_ request: RESPRequest, state: inout ConnectionState) async -> RESPValue {
        let args = request.strings
        guard let first = args.first else { return .error("ERR empty command") }
        let name = first.uppercased()
        let rest = Array(args.dropFirst())
        var shown: String { Validation.printable(first) }  // only for error replies
        guard let command = Self.table[name] else {
            if state.tenant == nil { return .error("NOAUTH authentication required") }
            return .error("ERR unknown command '\(shown)'")
        }
        if command.roles != nil && state.tenant == nil { return .error("NOAUTH authentication required") }
        guard rest.count >= command.minArgs && rest.count <= command.maxArgs else {
            return .error("ERR wrong number of arguments for '\(shown)'")
        }
        if let allowed = command.roles, allowed.isDisjoint(with: state.roles) {
            return .error("NOPERM this credential may not run \(name)")
        }
        do {
            switch command.run {
            case .connection(let run):
                return try run(self, rest, &state)
            case .session(let run):
                guard let tenant = state.tenant else { return .error("NOAUTH authentication required") }
                return try await run(self, rest, tenant)
            }
        } catch let e as WireError {
            return e.reply
        } catch let r as Rejection {
            return Self.reply(r)
        } catch let u as UnreadableSession {
            logger.error("session history unreadable", metadata: ["stream": "\(u.stream)", "version": "\(u.version)"])
            return .error("ERR \(u.description); nothing was recorded (REPLAY checks the session's hash chain)")
        } catch {
            logger.warning("command failed", metadata: ["command": "\(name)", "error": "\(error)"])
            return .error("UNAVAILABLE the database cannot be reached; nothing was recorded")
        }
    }

    static func reply(_ r: Rejection) -> RESPValue {
        switch r {
        case .notFound: .error("NOTFOUND no such session")
        case .conflict(let m): .error("CONFLICT \(m)")
        case .badArgument(let m): .error("BADARG \(m)")
        case .rateLimited(let s): .error("RATELIMITED retry_after=\(s)")
        }
    }

    // MARK: - Connection commands

    private func authenticate(tenant: String, token: String, state: inout ConnectionState) throws {
        // Every credential is compared, in constant time, so an unknown tenant costs what a wrong token costs.
        let digest = Array(SHA256.hash(data: Array(token.utf8)))
        var match: TenantCredential?
        for c in tenants {
            let sameToken = ConstantTime.equals(c.tokenSHA256, digest)
            let sameName = ConstantTime.equals(Array(c.name.utf8), Array(tenant.utf8))
            if sameToken && sameName && match == nil { match = c }
        }
        if tenants.isEmpty {
            throw WireError(code: "NOAUTH", message: "invalid credentials (this server has no tenants configured)")
        }
        guard let match else { throw WireError(code: "NOAUTH", message: "invalid credentials") }
        state.tenant = match.name
        state.roles = match.roles
    }

    private func hello(_ args: [String], state: inout ConnectionState) throws -> RESPValue {
        var proto = state.protocolVersion
        if let v = args.first {
            guard let n = Int(v), n == 2 || n == 3 else {
                throw WireError(code: "ERR", message: "unsupported protocol version '\(Validation.printable(v))'")
            }
            proto = n
        }
        var i = 1
        while i < args.count {
            guard args[i].uppercased() == "AUTH", i + 2 < args.count else {
                throw WireError(code: "ERR", message: "syntax error in HELLO option '\(Validation.printable(args[i]))'")
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

    // MARK: - Session commands

    private func sessionID(_ s: String) throws -> String {
        guard Validation.isSessionID(s) else {
            throw WireError.badArg("session id must be 1 to 128 characters of A-Z a-z 0-9 . _ : -")
        }
        return s
    }

    private func issue(_ args: [String], tenant: String) async throws -> RESPValue {
        let request = try IssueArguments.parse(args)
        let outcome = try await service.issue(request, tenant: tenant)
        return Self.issueMap(outcome.state, now: outcome.now)
    }

    private func verify(_ args: [String], tenant: String) async throws -> RESPValue {
        let session = try sessionID(args[0])
        let outcome = try await service.execute(.verify(code: args[1]), tenant: tenant, session: session)
        let s = outcome.state
        return .map([
            ("session", .bulk(session)), ("result", .bulk((outcome.decision.verifyResult ?? .mismatch).rawValue)),
            ("status", .bulk(s.effectiveStatus(now: outcome.now).rawValue)),
            ("attempts_left", .integer(Int64(s.attemptsLeft))),
        ])
    }

    private func sessionMap(
        _ command: SessionCommand,
        _ args: [String],
        tenant: String,
        full: Bool
    ) async throws -> RESPValue {
        let session = try sessionID(args[0])
        let outcome = try await service.execute(command, tenant: tenant, session: session)
        return full ? Self.statusMap(outcome.state, now: outcome.now) : Self.issueMap(outcome.state, now: outcome.now)
    }

    private func receipt(_ args: [String], tenant: String) async throws -> RESPValue {
        let session = try sessionID(args[0])
        guard let channel = Channel(rawValue: args[1].lowercased()) else {
            throw WireError.badArg("unknown channel '\(Validation.printable(args[1]))' (sms, email, voice, push)")
        }
        guard let outcome = ReceiptOutcome(rawValue: args[2].lowercased()) else {
            throw WireError.badArg("outcome must be delivered, failed or opened")
        }
        var detail: String?
        if args.count > 3 {
            guard args[3].utf8.count <= 256 else { throw WireError.badArg("detail must be at most 256 bytes") }
            detail = args[3]
        }
        _ = try await service.execute(
            .recordReceipt(channel: channel, outcome: outcome, detail: detail),
            tenant: tenant,
            session: session
        )
        return .simpleString("OK")
    }

    private func status(_ args: [String], tenant: String) async throws -> RESPValue {
        let session = try sessionID(args[0])
        let loaded = try await service.load(tenant: tenant, session: session)
        guard loaded.state.issued != nil else { throw Rejection.notFound }
        return Self.statusMap(loaded.state, now: loaded.now)
    }

    private func history(_ args: [String], tenant: String) async throws -> RESPValue {
        let session = try sessionID(args[0])
        let (records, _) = try await service.records(tenant: tenant, session: session)
        guard !records.isEmpty else { throw Rejection.notFound }
        return .array(
            records.map { r in
                .map([
                    ("version", .integer(Int64(r.version))), ("type", .bulk(r.type)), ("at", .integer(r.at)),
                    ("data", .bulk(r.data)), ("hash", .bulk(Hex.encode(r.hash))),
                ])
            }
        )
    }

    private func replay(_ args: [String], tenant: String) async throws -> RESPValue {
        let session = try sessionID(args[0])
        let (records, now) = try await service.records(tenant: tenant, session: session)
        guard !records.isEmpty else { throw Rejection.notFound }
        let broken = HashChain.firstBrokenVersion(records)
        // Rebuilt from these events alone; nil when a row no longer decodes (tampered beyond reading).
        let rebuilt = try? await service.fold(records, tenant: tenant, session: session)
        let served = try? await service.load(tenant: tenant, session: session).state
        var fields: [(key: String, value: RESPValue)] = [
            ("session", .bulk(session)), ("events", .integer(Int64(records.count))),
            ("status", rebuilt.map { .bulk($0.effectiveStatus(now: now).rawValue) } ?? .null),
            ("chain", .bulk(broken == nil ? "ok" : "broken")),
        ]
        if let broken { fields.append(("broken_at", .integer(Int64(broken)))) }
        fields.append(("matches", .integer(rebuilt != nil && rebuilt == served ? 1 : 0)))
        return .map(fields)
    }

    // MARK: - Reply maps

    static func issueMap(_ s: SessionState, now: Int64) -> RESPValue {
        guard let issued = s.issued else { return .null }
        return .map([
            ("session", .bulk(issued.session)), ("status", .bulk(s.effectiveStatus(now: now).rawValue)),
            ("channel", .bulk(s.currentStep?.channel.rawValue ?? "")), ("step", .integer(Int64(s.step))),
            ("steps", .bulk(issued.plan.steps.map(\.channel.rawValue).joined(separator: ","))),
            ("policy", .bulk(issued.plan.policy)), ("expires_at", .integer(s.expiresAt)),
        ])
    }

    static func statusMap(_ s: SessionState, now: Int64) -> RESPValue {
        guard let issued = s.issued else { return .null }
        func time(_ t: Int64?) -> RESPValue { t.map { .integer($0) } ?? .null }
        return .map([
            ("session", .bulk(issued.session)), ("status", .bulk(s.effectiveStatus(now: now).rawValue)),
            ("channel", .bulk(s.currentStep?.channel.rawValue ?? "")), ("step", .integer(Int64(s.step))),
            ("steps", .bulk(issued.plan.steps.map(\.channel.rawValue).joined(separator: ","))),
            ("policy", .bulk(issued.plan.policy)), ("attempts_left", .integer(Int64(s.attemptsLeft))),
            ("issued_at", .integer(s.issuedAt)), ("expires_at", .integer(s.expiresAt)), ("sent_at", time(s.sentAt)),
            ("delivered_at", time(s.deliveredAt)), ("verified_at", time(s.verifiedAt)),
            ("version", .integer(Int64(s.version))),
        ])
    }
}

/// Parses ISSUE's arguments: `session destination [destination ...] [OPTION value ...]`.
enum IssueArguments {
    static func parse(_ args: [String]) throws -> IssueRequest {
        guard Validation.isSessionID(args[0]) else {
            throw WireError.badArg("session id must be 1 to 128 characters of A-Z a-z 0-9 . _ : -")
        }
        var i = 1
        var destinations: [Destination] = []
        while i < args.count && args[i].contains(":") {
            let d = try Destination.parse(args[i])
            guard !destinations.contains(where: { $0.channel == d.channel }) else {
                throw WireError.badArg("at most one destination per channel (\(d.channel.rawValue) given twice)")
            }
            destinations.append(d)
            i += 1
        }
        guard !destinations.isEmpty else { throw WireError.badArg("ISSUE needs at least one destination") }
        guard destinations.count <= 8 else { throw WireError.badArg("at most 8 destinations") }
        var r = IssueRequest(session: args[0], destinations: destinations)
        var seen = Set<String>()
        while i < args.count {
            let option = args[i].uppercased()
            guard i + 1 < args.count else {
                throw WireError.badArg("option '\(Validation.printable(args[i]))' needs a value")
            }
            let value = args[i + 1]
            guard seen.insert(option).inserted else { throw WireError.badArg("option \(option) given twice") }
            switch option {
            case "POLICY":
                guard (1...64).contains(value.count) else { throw WireError.badArg("POLICY must be a policy name") }
                r.policy = value
            case "TTL": r.ttlSeconds = try integer(value, option, SessionDecider.ttlRange, "30 to 3600 seconds")
            case "DIGITS": r.digits = try integer(value, option, SessionDecider.digitsRange, "4 to 10")
            case "MAXATTEMPTS": r.maxAttempts = try integer(value, option, SessionDecider.maxAttemptsRange, "1 to 10")
            case "LOCALE":
                guard Validation.isLocaleTag(value) else {
                    throw WireError.badArg("LOCALE must be a BCP 47 tag such as en-GB")
                }
                r.locale = value
            case "APP":
                guard (1...40).contains(value.count),
                    value.unicodeScalars.allSatisfy({ $0.value >= 0x20 && $0.value != 0x7F })
                else { throw WireError.badArg("APP must be 1 to 40 printable characters") }
                r.app = value
            case "PREFER":
                var prefer: [Channel] = []
                for name in value.split(separator: ",") {
                    guard let c = Channel(rawValue: name.lowercased()) else {
                        throw WireError.badArg("PREFER: unknown channel '\(Validation.printable(name))'")
                    }
                    if !prefer.contains(c) { prefer.append(c) }
                }
                guard !prefer.isEmpty else { throw WireError.badArg("PREFER needs channel[,channel...]") }
                r.prefer = prefer
            case "CARRIER":
                guard (1...64).contains(value.count),
                    value.unicodeScalars.allSatisfy({ $0.value > 0x20 && $0.value < 0x7F })
                else { throw WireError.badArg("CARRIER must be 1 to 64 printable characters") }
                r.carrier = value
            default:
                throw WireError.badArg("unknown option '\(Validation.printable(args[i]))'")
            }
            i += 2
        }
        return r
    }

    private static func integer(
        _ text: String,
        _ option: String,
        _ range: ClosedRange<Int>,
        _ what: String
    ) throws -> Int {
        guard let n = Int(text), range.contains(n) else { throw WireError.badArg("\(option) must be \(what)") }
        return n
    }
}
