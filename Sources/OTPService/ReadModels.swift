import EventStore
import OTPDomain
import Postgres

/// The read models' tables (`schema/0010_projections.sql`): loads session summaries from them and writes what
/// changed, inside the caller's transaction.
///
/// Rows travel as one JSON parameter per statement (`json_to_recordset`), so a batch of any size is one
/// statement per table and no value is ever spliced into SQL. The schema is `projections` for the live
/// tables, or the rebuild's shadow schema.
public struct ReadModels: Sendable {
    /// The live tables' schema.
    public static let live = ReadModels(schema: "projections")
    /// The tables every read model has, in the order they are written.
    static let tables = ["session_view", "message_view", "delivery_stats", "delivery_latency", "fallback_paths"]
    /// The tables with a row per session or message (the others add up contributions).
    static let rowTables = ["session_view", "message_view"]

    /// The schema the tables are in (an identifier from code, never from input).
    public let schema: String

    init(schema: String) { self.schema = schema }

    /// The summaries of `streams` as the tables hold them; a stream without a row is absent.
    public func load(_ streams: some Collection<String>, on conn: PGConnection) throws -> [String: SessionSummary] {
        guard !streams.isEmpty else { return [:] }
        var ids = JSONRows()
        for s in streams { ids.value(s) }
        let wanted = ids.text
        var summaries: [String: SessionSummary] = [:]
        let sessions = try conn.query(
            """
            SELECT stream_id, policy, variant, country, status, version, current_token, issued_ms, verified_ms,
                   ended_ms, last_event_ms
            FROM \(unescaped: schema).session_view
            WHERE stream_id IN (SELECT json_array_elements_text(\(wanted)::json))
            """
        )
        for row in sessions.rows {
            let id = try row.decode("stream_id", as: String.self)
            guard let stream = StreamID(text: id) else { continue }
            var s = SessionSummary(stream: stream)
            s.isIssued = true
            s.policy = try row.decode("policy")
            let variant = try row.decode("variant", as: Int.self)
            s.variant = variant == 0 ? nil : variant
            let country = try row.decode("country", as: String.self)
            s.country = country == StatsKey.noCountry ? nil : country
            s.status = SessionStatus(rawValue: try row.decode("status")) ?? .pending
            s.version = try row.decode("version")
            s.currentToken = try row.decode("current_token")
            s.issuedAt = try row.decode("issued_ms")
            s.verifiedAt = try row.decodeIfPresent("verified_ms")
            s.endedAt = try row.decodeIfPresent("ended_ms")
            s.lastEventAt = try row.decode("last_event_ms")
            summaries[id] = s
        }
        let messages = try conn.query(
            """
            SELECT stream_id, token, step, channel, provider, started_ms, sent_ms, delivered_ms, opened_ms, failed,
                   escalated, verified_ms, expired, withdrawn, price_micros
            FROM \(unescaped: schema).message_view
            WHERE stream_id IN (SELECT json_array_elements_text(\(wanted)::json))
            ORDER BY stream_id, token
            """
        )
        for row in messages.rows {
            let id = try row.decode("stream_id", as: String.self)
            guard summaries[id] != nil, let channel = DeliveryChannel(rawValue: try row.decode("channel")) else {
                continue
            }
            var m = MessageSummary(
                token: try row.decode("token"),
                step: try row.decode("step"),
                channel: channel,
                at: try row.decode("started_ms")
            )
            m.provider = try row.decodeIfPresent("provider")
            m.sentAt = try row.decodeIfPresent("sent_ms")
            m.deliveredAt = try row.decodeIfPresent("delivered_ms")
            m.openedAt = try row.decodeIfPresent("opened_ms")
            m.failed = try row.decode("failed")
            m.escalated = try row.decode("escalated")
            m.verifiedAt = try row.decodeIfPresent("verified_ms")
            m.expired = try row.decode("expired")
            m.withdrawn = try row.decode("withdrawn")
            m.price = try row.decodeIfPresent("price_micros", as: Int64.self).map(Money.init(micros:))
            summaries[id]?.messages.append(m)
        }
        return summaries
    }

    /// Writes sessions whose summaries went from `before` (nil: new to the read models) to `after`: their rows,
    /// and the change of their contribution to the aggregates. `appliedAt` is the database clock now. `fresh`:
    /// none of the sessions has rows yet, so they are inserted without looking for one (a rebuild's tables
    /// before their keys are built).
    public func write(
        _ changes: [(before: SessionSummary?, after: SessionSummary)],
        appliedAt: Int64,
        fresh: Bool = false,
        on conn: PGConnection
    ) throws {
        var sessions = JSONRows()
        var messages = JSONRows()
        var contribution = Contribution()
        for (before, after) in changes where after.isIssued && before != after {
            contribution.add(Contribution.change(from: before, to: after))
            sessions.row { r in
                r.field("stream_id", after.stream.text)
                r.field("tenant", after.stream.tenant)
                r.field("session", after.stream.session)
                r.field("policy", after.policy)
                r.field("variant", after.variant ?? 0)
                r.field("country", after.country ?? StatsKey.noCountry)
                r.field("status", after.status.rawValue)
                r.field("version", after.version)
                r.field("current_token", after.currentToken)
                r.field("channels", after.path.map(\.rawValue))
                r.field("converted_step", after.converted?.step)
                r.field("converted_channel", after.converted?.channel.rawValue)
                r.field("issued_ms", after.issuedAt)
                r.field("first_sent_ms", after.messages.compactMap(\.sentAt).min())
                r.field("first_delivered_ms", after.messages.compactMap(\.deliveredAt).min())
                r.field("verified_ms", after.verifiedAt)
                r.field("ended_ms", after.endedAt)
                r.field("last_event_ms", after.lastEventAt)
                r.field("applied_ms", appliedAt)
            }
            let old = Dictionary((before?.messages ?? []).map { ($0.token, $0) }, uniquingKeysWith: { $1 })
            for (i, m) in after.messages.enumerated() where old[m.token] != m || before?.isIssued != true {
                messages.row { r in
                    r.field("stream_id", after.stream.text)
                    r.field("token", m.token)
                    r.field("tenant", after.stream.tenant)
                    r.field("step", m.step)
                    r.field("channel", m.channel.rawValue)
                    r.field("country", after.country ?? StatsKey.noCountry)
                    r.field("policy", after.policy)
                    r.field("variant", after.variant ?? 0)
                    r.field("provider", m.provider)
                    r.field("first_step", i == 0)
                    r.field("issued_ms", after.issuedAt)
                    r.field("started_ms", m.startedAt)
                    r.field("sent_ms", m.sentAt)
                    r.field("delivered_ms", m.deliveredAt)
                    r.field("opened_ms", m.openedAt)
                    r.field("failed", m.failed)
                    r.field("escalated", m.escalated)
                    r.field("verified_ms", m.verifiedAt)
                    r.field("expired", m.expired)
                    r.field("withdrawn", m.withdrawn)
                    r.field("price_micros", m.price?.micros)
                }
            }
        }
        if !sessions.isEmpty {
            try conn.query(
                """
                INSERT INTO \(unescaped: schema).session_view AS t
                SELECT * FROM json_to_recordset(\(sessions.text)::json) AS r(
                    stream_id text, tenant text, session text, policy text, variant integer, country text,
                    status text, version integer, current_token integer, channels text[], converted_step integer,
                    converted_channel text, issued_ms bigint, first_sent_ms bigint, first_delivered_ms bigint,
                    verified_ms bigint, ended_ms bigint, last_event_ms bigint, applied_ms bigint)
                \(unescaped: fresh ? "" : """
                ON CONFLICT (stream_id) DO UPDATE SET
                    status = excluded.status, version = excluded.version, current_token = excluded.current_token,
                    channels = excluded.channels, converted_step = excluded.converted_step,
                    converted_channel = excluded.converted_channel, first_sent_ms = excluded.first_sent_ms,
                    first_delivered_ms = excluded.first_delivered_ms, verified_ms = excluded.verified_ms,
                    ended_ms = excluded.ended_ms, last_event_ms = excluded.last_event_ms,
                    applied_ms = excluded.applied_ms
                """)
                """
            )
        }
        if !messages.isEmpty {
            try conn.query(
                """
                INSERT INTO \(unescaped: schema).message_view AS t
                SELECT * FROM json_to_recordset(\(messages.text)::json) AS r(
                    stream_id text, token integer, tenant text, step integer, channel text, country text,
                    policy text, variant integer, provider text, first_step boolean, issued_ms bigint,
                    started_ms bigint, sent_ms bigint, delivered_ms bigint, opened_ms bigint, failed boolean,
                    escalated boolean, verified_ms bigint, expired boolean, withdrawn boolean, price_micros bigint)
                \(unescaped: fresh ? "" : """
                ON CONFLICT (stream_id, token) DO UPDATE SET
                    provider = excluded.provider, sent_ms = excluded.sent_ms, delivered_ms = excluded.delivered_ms,
                    opened_ms = excluded.opened_ms, failed = excluded.failed, escalated = excluded.escalated,
                    verified_ms = excluded.verified_ms, expired = excluded.expired, withdrawn = excluded.withdrawn,
                    price_micros = excluded.price_micros
                """)
                """
            )
        }
        try add(contribution, on: conn)
    }

    /// Adds a contribution to the aggregate tables (negative counts subtract); a group whose counts all come
    /// back to 0 (a session's path row once its status moved on) is removed, so the tables hold what a rebuild
    /// would write.
    func add(_ c: Contribution, on conn: PGConnection) throws {
        var stats = JSONRows()
        for (k, v) in c.stats where v != StatsCounts() {
            stats.row { r in
                r.group(k)
                r.field("issued", v.issued)
                r.field("sent", v.sent)
                r.field("delivered", v.delivered)
                r.field("failed", v.failed)
                r.field("opened", v.opened)
                r.field("escalated", v.escalated)
                r.field("verified", v.verified)
                r.field("expired", v.expired)
            }
        }
        try add(stats, to: Self.deliveryStats, on: conn)
        var latency = JSONRows()
        for (k, n) in c.latency where n != 0 {
            latency.row { r in
                r.group(k.group)
                r.field("kind", k.kind.rawValue)
                r.field("le_ms", k.leMs)
                r.field("count", n)
            }
        }
        try add(latency, to: Self.deliveryLatency, on: conn)
        var paths = JSONRows()
        for (k, n) in c.paths where n != 0 {
            paths.row { r in
                r.field("hour_ms", k.hourMs)
                r.field("tenant", k.tenant)
                r.field("policy", k.policy)
                r.field("variant", k.variant)
                r.field("path", k.path)
                r.field("status", k.status.rawValue)
                r.field("sessions", n)
            }
        }
        try add(paths, to: Self.fallbackPaths, on: conn)
    }

    /// An aggregate table: its key columns (with their JSON field types), and its counters.
    struct Aggregate {
        var table: String
        var keys: [(column: String, type: String)]
        var counts: [String]
    }

    static let groupKeys: [(column: String, type: String)] = [
        ("hour", "bigint"), ("tenant", "text"), ("channel", "text"), ("country", "text"), ("policy", "text"),
        ("variant", "integer"),
    ]
    static let deliveryStats = Aggregate(
        table: "delivery_stats",
        keys: groupKeys,
        counts: ["issued", "sent", "delivered", "failed", "opened", "escalated", "verified", "expired"]
    )
    static let deliveryLatency = Aggregate(
        table: "delivery_latency",
        keys: groupKeys + [("kind", "text"), ("le_ms", "bigint")],
        counts: ["count"]
    )
    static let fallbackPaths = Aggregate(
        table: "fallback_paths",
        keys: [
            ("hour", "bigint"), ("tenant", "text"), ("policy", "text"), ("variant", "integer"), ("path", "text"),
            ("status", "text"),
        ],
        counts: ["sessions"]
    )

    /// Adds rows of counts to an aggregate's groups (`hour` travels as `hour_ms`), then drops the groups among
    /// them whose counts are all 0.
    private func add(_ rows: JSONRows, to a: Aggregate, on conn: PGConnection) throws {
        guard !rows.isEmpty else { return }
        func field(_ k: String) -> String { k == "hour" ? "hour_ms" : k }
        func value(_ k: String) -> String { k == "hour" ? "to_timestamp(r.hour_ms / 1000.0)" : "r.\(k)" }
        let record =
            (a.keys.map { "\(field($0.column)) \($0.type)" } + a.counts.map { "\($0) bigint" }).joined(separator: ", ")
        let keys = a.keys.map(\.column)
        let table = "\(schema).\(a.table)"
        let json = rows.text
        try conn.query(
            """
            INSERT INTO \(unescaped: table) AS t (\(unescaped: (keys + a.counts).joined(separator: ", ")))
            SELECT \(unescaped: (keys.map(value) + a.counts.map { "r.\($0)" }).joined(separator: ", "))
            FROM json_to_recordset(\(json)::json) AS r(\(unescaped: record))
            ON CONFLICT (\(unescaped: keys.joined(separator: ", "))) DO UPDATE SET
            \(unescaped: a.counts.map { "\($0) = t.\($0) + excluded.\($0)" }.joined(separator: ", "))
            """
        )
        try conn.query(
            """
            DELETE FROM \(unescaped: table) AS t USING json_to_recordset(\(json)::json) AS r(\(unescaped: record))
            WHERE \(unescaped: (keys.map { "t.\($0) = \(value($0))" } + a.counts.map { "t.\($0) = 0" }).joined(separator: " AND "))
            """
        )
    }
}

/// A JSON array built by hand, for `json_to_recordset`: rows of fields, or plain values.
struct JSONRows {
    private var body = ""
    private(set) var isEmpty = true

    /// The array's text.
    var text: String { "[" + body + "]" }

    /// Appends one string value.
    mutating func value(_ s: String) {
        separate()
        JSONRows.quote(s, into: &body)
    }

    /// Appends one object, its fields written by `fields`.
    mutating func row(_ fields: (inout Row) -> Void) {
        separate()
        var r = Row()
        fields(&r)
        body += r.text + "}"
    }

    private mutating func separate() {
        if isEmpty { isEmpty = false } else { body += "," }
    }

    /// One object's fields.
    struct Row {
        var text = "{"
        private var empty = true

        private mutating func key(_ k: String) {
            if empty { empty = false } else { text += "," }
            text += "\"\(k)\":"
        }

        mutating func field(_ k: String, _ v: String?) {
            key(k)
            if let v { JSONRows.quote(v, into: &text) } else { text += "null" }
        }

        mutating func field(_ k: String, _ v: Int?) {
            key(k)
            text += v.map(String.init) ?? "null"
        }

        mutating func field(_ k: String, _ v: Int64?) {
            key(k)
            text += v.map(String.init) ?? "null"
        }

        mutating func field(_ k: String, _ v: Bool) {
            key(k)
            text += v ? "true" : "false"
        }

        mutating func field(_ k: String, _ v: [String]) {
            key(k)
            text += "["
            for (i, s) in v.enumerated() {
                if i > 0 { text += "," }
                JSONRows.quote(s, into: &text)
            }
            text += "]"
        }

        /// A `delivery_stats` group's key columns.
        mutating func group(_ k: StatsKey) {
            field("hour_ms", k.hourMs)
            field("tenant", k.tenant)
            field("channel", k.channel.rawValue)
            field("country", k.country)
            field("policy", k.policy)
            field("variant", k.variant)
        }
    }

    /// Writes `s` as a JSON string.
    static func quote(_ s: String, into out: inout String) { out += JSONText.quoted(s) }
}
