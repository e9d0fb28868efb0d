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

/// Turns requests into replies: looks the command up in the table, checks arity, authentication and roles,
/// runs it, and maps what it threw to the protocol's error codes.
public final class CommandHandler: Sendable {
    let sessions: SessionService
    let authenticator: Authenticator
    /// The keyed digest that fingerprints ISSUE's arguments.
    let fingerprint: @Sendable ([String]) -> String
    let logger: Logger
    /// The server's version, reported by HELLO.
    public static let version = "0.1.0"

    /// Creates a handler; with no tenants the server is single-tenant and needs no AUTH.
    public init(
        sessions: SessionService,
        tenants: [TenantCredential],
        fingerprint: @escaping @Sendable ([String]) -> String,
        logger: Logger
    ) {
        self.sessions = sessions
        self.authenticator = Authenticator(tenants)
        self.fingerprint = fingerprint
        self.logger = logger
    }

    /// The state of a new connection.
    public func newConnection() -> ConnectionState {
        authenticator.isEmpty
            ? ConnectionState(tenant: "default", roles: Set(Role.allCases))
            : ConnectionState(tenant: nil, roles: [])
    }

    /// Handles one request and returns its reply.
    public func handle(_ request: RESPRequest, state: inout ConnectionState) async -> RESPValue {
        let args = request.strings
        guard let first = args.first else { return WireError(code: .err, message: "empty command").reply }
        let name = first.uppercased()
        let rest = Array(args.dropFirst())
        var shown: String { Validation.printable(first) }  // only for error replies
        guard let command = Command.table[name] else {
            if state.tenant == nil { return WireError.authenticationRequired.reply }
            return WireError(code: .err, message: "unknown command '\(shown)'").reply
        }
        if command.roles != nil && state.tenant == nil { return WireError.authenticationRequired.reply }
        guard command.arity.contains(rest.count) else {
            return WireError(code: .err, message: "wrong number of arguments for '\(shown)'").reply
        }
        if let allowed = command.roles, allowed.isDisjoint(with: state.roles) {
            return WireError(code: .noPerm, message: "this credential may not run \(name)").reply
        }
        do {
            switch command.run {
            case .connection(let run):
                return try run(self, rest, &state)
            case .session(let run):
                guard let tenant = state.tenant else { return WireError.authenticationRequired.reply }
                return try await run(self, rest, tenant)
            }
        } catch let e as WireError {
            return e.reply
        } catch let r as Rejection {
            return WireError(r).reply
        } catch let u as UnreadableSession {
            logger.error("session history unreadable", metadata: ["stream": "\(u.stream)", "version": "\(u.version)"])
            let message = "\(u.description); nothing was recorded (REPLAY checks the session's hash chain)"
            return WireError(code: .err, message: message).reply
        } catch let e as PGError where e.code == .commitOutcomeUnknown {
            logger.warning("commit outcome unknown", metadata: ["command": "\(name)", "error": "\(e)"])
            let message =
                "the connection to the database was lost while committing; the command may have been recorded "
                + "(STATUS shows it; ISSUE and RECEIPT may be repeated safely)"
            return WireError(code: .unavailable, message: message).reply
        } catch {
            logger.warning("command failed", metadata: ["command": "\(name)", "error": "\(error)"])
            return WireError(code: .unavailable, message: "the database cannot be reached; nothing was recorded").reply
        }
    }
}
