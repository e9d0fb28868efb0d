import EventStore
import Logging
import NIOCore
import OTPDomain
import OTPService
import Postgres
import RESP
import Synchronization

/// What a connection has established: who it is, what it may run, which protocol version it speaks.
public struct ConnectionState: Sendable {
    /// The connection's id (CLIENT ID, HELLO's `id`), unique within the process.
    public var id: Int64
    /// The name given by CLIENT SETNAME or HELLO's SETNAME; nil when none (or cleared with an empty name).
    public var name: String?
    /// What CLIENT SETINFO reported: the client library's name and version.
    public var libraryName: String?
    public var libraryVersion: String?
    /// The authenticated tenant, or nil before AUTH (always `default` in single-tenant mode).
    public var tenant: String?
    /// The roles of the credential used.
    public var roles: Set<Role>
    /// 2 or 3 (after `HELLO 3`).
    public var protocolVersion = 2
    /// Set by QUIT: close after the reply.
    public var closeAfterReply = false
    /// The sessions subscribed to (SUBSCRIBE): each one's stream id by session id. The stream names the tenant
    /// of the moment it was subscribed, so a later AUTH (allowed in RESP3) cannot mix up whose session it was.
    public var subscriptions: [String: String] = [:]
    /// Where the connection's output goes from its first SUBSCRIBE on; nil before.
    var subscriber: SubscriberQueue?
}

/// Turns requests into replies: looks the command up in the table, checks arity, authentication and roles,
/// runs it, and maps what it threw to the protocol's error codes.
public final class CommandHandler: Sendable {
    let sessions: SessionService
    let analytics: AnalyticsQueries?
    /// The live status feed SUBSCRIBE follows; nil: SUBSCRIBE is refused.
    let feed: LiveFeed?
    /// Bytes of replies and messages that may wait for a subscribed client before it is cut off.
    let subscriberQueueLimit: Int
    let authenticator: Authenticator
    /// The keyed digest that fingerprints ISSUE's arguments.
    let fingerprint: @Sendable ([String]) -> String
    let logger: Logger
    /// The metrics: each command's answers and their duration, and database errors.
    let telemetry: Telemetry
    /// Each command's series, by upper-case name, and the one of every name not in the table.
    let meters: [String: Telemetry.CommandMeter]
    let unknownMeter: Telemetry.CommandMeter
    /// The last connection id handed out.
    private let lastConnectionID = Atomic<Int64>(0)
    /// The server's version, reported by HELLO.
    public static let version = "0.1.0"

    /// Creates a handler; with no tenants the server is single-tenant and needs no AUTH.
    public init(
        sessions: SessionService,
        analytics: AnalyticsQueries? = nil,
        feed: LiveFeed? = nil,
        subscriberQueueLimit: Int = 1 << 20,
        tenants: [TenantCredential],
        fingerprint: @escaping @Sendable ([String]) -> String,
        logger: Logger,
        telemetry: Telemetry = Telemetry()
    ) {
        self.sessions = sessions
        self.analytics = analytics
        self.feed = feed
        self.subscriberQueueLimit = subscriberQueueLimit
        self.authenticator = Authenticator(tenants)
        self.fingerprint = fingerprint
        self.logger = logger
        self.telemetry = telemetry
        self.meters = Command.table.mapValues { telemetry.commandMeter($0.name) }
        self.unknownMeter = telemetry.commandMeter("unknown", answersOK: false)
    }

    /// The state of a new connection.
    public func newConnection() -> ConnectionState {
        let id = lastConnectionID.wrappingAdd(1, ordering: .relaxed).newValue
        return authenticator.isEmpty
            ? ConnectionState(id: id, tenant: "default", roles: Set(Role.allCases))
            : ConnectionState(id: id, tenant: nil, roles: [])
    }

    /// What `answer` gives for one request: its reply, or the session command still to run (`complete`).
    public enum Answer: Sendable {
        /// Answered on the spot: the connection commands, PING and every refusal.
        case now(RESPValue)
        /// A command on the tenant's sessions, which waits on the database.
        case later(PendingCommand)
    }

    /// A session command that passed every check, ready to run off the connection's event loop.
    public struct PendingCommand: Sendable {
        let name: String
        let meter: Telemetry.CommandMeter
        let started: ContinuousClock.Instant
        let arguments: [String]
        let tenant: String
        let run: @Sendable (CommandHandler, [String], _ tenant: String) async throws -> RESPValue
    }

    /// Handles one request and returns its reply (`answer`, then `complete` when it waits on the database).
    public func handle(_ request: RESPRequest, state: inout ConnectionState) async -> RESPValue {
        switch answer(request, state: &state) {
        case .now(let reply): return reply
        case .later(let pending): return await complete(pending)
        }
    }

    /// Answers a request that needs no database at once, without suspending (the connection's event loop runs
    /// it), or returns the session command to `complete`. Either way the answer is counted in
    /// `otpd_commands_total` and timed in `otpd_command_duration_seconds`: by the table's name (`unknown` for any
    /// other), and by `ok` or the reply's error code, never by anything else the client sent.
    public func answer(_ request: RESPRequest, state: inout ConnectionState) -> Answer {
        let started = ContinuousClock.now
        // Clients send the name in upper case as a rule: only another spelling pays for `uppercased()`.
        let sent = request.arguments.first.map { String(buffer: $0) }
        let meter = sent.flatMap { meters[$0] ?? meters[$0.uppercased()] } ?? unknownMeter
        let answer = respond(request, state: &state, started: started, meter: meter)
        if case .now(let reply) = answer { record(reply, meter: meter, since: started) }
        return answer
    }

    /// Runs a session command that `answer` passed on, and counts its reply.
    public func complete(_ pending: PendingCommand) async -> RESPValue {
        let reply: RESPValue
        do {
            reply = try await pending.run(self, pending.arguments, pending.tenant)
        } catch {
            reply = self.reply(to: error, of: pending.name)
        }
        record(reply, meter: pending.meter, since: pending.started)
        return reply
    }

    private func record(_ reply: RESPValue, meter: Telemetry.CommandMeter, since started: ContinuousClock.Instant) {
        let result: String
        if case .error(let text) = reply {
            let code = WireError.Code(rawValue: String(text.prefix { $0 != " " }))
            result = WireError.Code.all.contains(code) ? code.rawValue : WireError.Code.err.rawValue
            if code == .unavailable { telemetry.databaseError() }
        } else {
            result = "ok"
        }
        meter.record(result: result, duration: ContinuousClock.now - started)
    }

    private func respond(
        _ request: RESPRequest,
        state: inout ConnectionState,
        started: ContinuousClock.Instant,
        meter: Telemetry.CommandMeter
    ) -> Answer {
        guard let firstBytes = request.arguments.first else {
            return .now(WireError(code: .err, message: "empty command").reply)
        }
        let first = String(buffer: firstBytes)  // an unknown name is only looked up and shown, never used
        let name = first.uppercased()
        let raw = Array(request.arguments.dropFirst())
        var shown: String { Validation.printable(first) }  // only for error replies
        guard let command = Command.table[name] else {
            if state.tenant == nil { return .now(WireError.authenticationRequired.reply) }
            return .now(WireError(code: .err, message: "unknown command '\(shown)'").reply)
        }
        if command.roles != nil && state.tenant == nil { return .now(WireError.authenticationRequired.reply) }

        guard command.arity.contains(raw.count) else {
            return .now(WireError(code: .err, message: "wrong number of arguments for '\(shown)'").reply)
        }
        if state.inSubscribedMode, let reply = Self.subscribedModeReply(name, raw, sent: first) { return .now(reply) }
        if let allowed = command.roles, allowed.isDisjoint(with: state.roles) {
            return .now(WireError(code: .noPerm, message: "this credential may not run \(name)").reply)
        }
        // Arguments stay bytes until here; a command that takes text gets them as UTF-8, and bytes that are not
        // UTF-8 are refused by position instead of being repaired into other bytes.
        var rest: [String] = []
        if case .bytes = command.run {
        } else {
            rest.reserveCapacity(raw.count)
            for (i, bytes) in raw.enumerated() {
                guard let text = String(validating: bytes.readableBytesView, as: UTF8.self) else {
                    return .now(
                        WireError(code: .badArg, message: "argument \(i + 1) of \(name) is not UTF-8 text").reply
                    )
                }
                rest.append(text)
            }
        }
        switch command.run {
        case .bytes(let run):
            return .now(run(raw))
        case .connection(let run):
            do {
                return .now(try run(self, rest, &state))
            } catch {
                return .now(reply(to: error, of: name))
            }
        case .session(let run):
            guard let tenant = state.tenant else { return .now(WireError.authenticationRequired.reply) }
            return .later(
                PendingCommand(
                    name: name,
                    meter: meter,
                    started: started,
                    arguments: rest,
                    tenant: tenant,
                    run: run
                )
            )
        }
    }

    /// The reply to what a command threw: its own refusal, or the protocol's code for what went wrong.
    private func reply(to error: any Error, of name: String) -> RESPValue {
        switch error {
        case let e as WireError:
            return e.reply
        case let r as Rejection:
            return WireError(r).reply
        case let u as UnreadableSession:
            logger.error("session history unreadable", metadata: ["stream": "\(u.stream)", "version": "\(u.version)"])
            let message = "\(u.description); nothing was recorded (REPLAY checks the session's hash chain)"
            return WireError(code: .err, message: message).reply
        case let e as PGError where ["55P03", "40P01", "40001"].contains(e.sqlState ?? ""):
            // Too many commands at once for one session or destination (a lock wait ran out, a deadlock or a
            // serialization failure): nothing was recorded, and the database is fine; try again shortly.
            logger.info("command contended", metadata: ["command": "\(name)", "error": "\(e)"])
            return WireError(.rateLimited(retryAfterSeconds: 1)).reply
        case let e as AppendError where e == .versionConflict:
            logger.info("command contended", metadata: ["command": "\(name)", "error": "\(e)"])
            return WireError(.rateLimited(retryAfterSeconds: 1)).reply
        case let e as PGError where e.code == .commitOutcomeUnknown:
            logger.warning("commit outcome unknown", metadata: ["command": "\(name)", "error": "\(e)"])
            let message =
                "the connection to the database was lost while committing; the command may have been recorded "
                + "(STATUS shows it; ISSUE and RECEIPT may be repeated safely)"
            return WireError(code: .unavailable, message: message).reply
        default:
            logger.warning("command failed", metadata: ["command": "\(name)", "error": "\(error)"])
            return WireError(code: .unavailable, message: "the database cannot be reached; nothing was recorded").reply
        }
    }
}
