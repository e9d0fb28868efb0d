import EventStore
import OTPDomain
import OTPService
import RESP

/// The reply maps of docs/PROTOCOL.md, built from a session's committed state.
enum Replies {
    /// ISSUE's and RESEND's map.
    static func issue(_ s: SessionState, now: Int64) -> RESPValue {
        guard let issued = s.issued else { return .null }
        return .map([
            ("session", .bulk(issued.session)), ("status", .bulk(s.effectiveStatus(now: now).rawValue)),
            ("channel", .bulk(s.currentStep?.channel.rawValue ?? "")), ("step", .integer(Int64(s.step))),
            ("steps", .bulk(issued.plan.steps.map(\.channel.rawValue).joined(separator: ","))),
            ("policy", .bulk(issued.plan.policy)), ("expires_at", .integer(s.expiresAt)),
        ])
    }

    /// STATUS's and CANCEL's map.
    static func status(_ s: SessionState, now: Int64) -> RESPValue {
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

    /// VERIFY's map.
    static func verify(_ s: SessionState, session: String, result: VerifyResult?, now: Int64) -> RESPValue {
        .map([
            ("session", .bulk(session)), ("result", .bulk((result ?? .mismatch).rawValue)),
            ("status", .bulk(s.effectiveStatus(now: now).rawValue)),
            ("attempts_left", .integer(Int64(s.attemptsLeft))),
        ])
    }

    /// One STATS group, its keys in PROTOCOL.md's order.
    static func stats(_ g: StatsGroup) -> RESPValue {
        .map(
            g.fields.map { field in
                switch field.value {
                case .text(let t): (field.key, .bulk(t))
                case .integer(let n): (field.key, .integer(n))
                case .null: (field.key, .null)
                }
            }
        )
    }

    /// One HISTORY entry: a stored event as it is.
    static func history(_ r: EventRecord) -> RESPValue {
        .map([
            ("version", .integer(Int64(r.version))), ("type", .bulk(r.type)), ("at", .integer(r.at)),
            ("data", .bulk(r.data)), ("hash", .bulk(Hex.encode(r.hash))),
        ])
    }

    /// REPLAY's map: the chain's verdict and whether the events alone rebuild the served state.
    static func replay(
        session: String,
        events: Int,
        brokenAt broken: Int?,
        rebuilt: SessionState?,
        matches: Bool,
        now: Int64
    ) -> RESPValue {
        var fields: [(key: String, value: RESPValue)] = [
            ("session", .bulk(session)), ("events", .integer(Int64(events))),
            ("status", rebuilt.map { .bulk($0.effectiveStatus(now: now).rawValue) } ?? .null),
            ("chain", .bulk(broken == nil ? "ok" : "broken")),
        ]
        if let broken { fields.append(("broken_at", .integer(Int64(broken)))) }
        fields.append(("matches", .integer(matches ? 1 : 0)))
        return .map(fields)
    }
}
