import EventStore
import OTPDomain
import OTPService
import RESP

/// The commands on a tenant's sessions: each parses its arguments into a typed command, runs it, and builds
/// its reply from the committed state.
extension CommandHandler {
    private func stream(_ tenant: String, _ session: String) throws -> StreamID {
        StreamID(tenant: tenant, session: try Arguments.sessionID(session))
    }

    func issue(_ args: [String], tenant: String) async throws -> RESPValue {
        let request = try IssueRequest.parse(args, fingerprint: fingerprint)
        let outcome = try await sessions.execute(
            .issue(request),
            on: StreamID(tenant: tenant, session: request.session)
        )
        return Replies.issue(outcome.state, now: outcome.now)
    }

    func verify(_ args: [String], tenant: String) async throws -> RESPValue {
        let id = try stream(tenant, args[0])
        let outcome = try await sessions.execute(.verify(code: args[1]), on: id)
        return Replies.verify(
            outcome.state,
            session: id.session,
            result: outcome.decision.verifyResult,
            now: outcome.now
        )
    }

    func resend(_ args: [String], tenant: String) async throws -> RESPValue {
        let outcome = try await sessions.execute(.resend, on: try stream(tenant, args[0]))
        // A finished or erased session records nothing and shows where it stands.
        guard outcome.state.effectiveStatus(now: outcome.now).isActive, !outcome.state.erased else {
            return Replies.status(outcome.state, now: outcome.now)
        }
        return Replies.issue(outcome.state, now: outcome.now)
    }

    func cancel(_ args: [String], tenant: String) async throws -> RESPValue {
        let outcome = try await sessions.execute(.cancel, on: try stream(tenant, args[0]))
        return Replies.status(outcome.state, now: outcome.now)
    }

    func erase(_ args: [String], tenant: String) async throws -> RESPValue {
        let outcome = try await sessions.execute(.erase, on: try stream(tenant, args[0]))
        return Replies.status(outcome.state, now: outcome.now)
    }

    func receipt(_ args: [String], tenant: String) async throws -> RESPValue {
        let id = try stream(tenant, args[0])
        let command = try Arguments.receipt(channel: args[1], outcome: args[2], detail: args.count > 3 ? args[3] : nil)
        _ = try await sessions.execute(command, on: id)
        return .simpleString("OK")
    }

    func status(_ args: [String], tenant: String) async throws -> RESPValue {
        let loaded = try await sessions.load(try stream(tenant, args[0]))
        guard loaded.state.issued != nil else { throw Rejection.notFound }
        return Replies.status(loaded.state, now: loaded.now)
    }

    func history(_ args: [String], tenant: String) async throws -> RESPValue {
        let records = try await sessions.records(try stream(tenant, args[0])).records
        guard !records.isEmpty else { throw Rejection.notFound }
        return .array(records.map(Replies.history))
    }

    func replay(_ args: [String], tenant: String) async throws -> RESPValue {
        let id = try stream(tenant, args[0])
        let stored = try await sessions.records(id)
        // A stream whose events were all deleted still has its head: reported, not "no such session".
        guard !stored.records.isEmpty || stored.head != nil else { throw Rejection.notFound }
        // Rebuilt from these events alone; nil when a row no longer decodes (tampered beyond reading).
        let rebuilt = try? await sessions.fold(stored.records, stream: id)
        let served = try? await sessions.load(id).state
        return Replies.replay(
            session: id.session,
            events: stored.records.count,
            brokenAt: sessions.firstBrokenVersion(stored),
            rebuilt: rebuilt,
            matches: rebuilt != nil && rebuilt == served,
            now: stored.now
        )
    }

    func stats(_ args: [String], tenant: String) async throws -> RESPValue {
        let query = try StatsQuery.parse(args)
        guard let analytics else { throw Rejection.badArgument("STATS is not served by this server") }
        return .array(try await analytics.stats(query, tenant: tenant).map(Replies.stats))
    }
}
