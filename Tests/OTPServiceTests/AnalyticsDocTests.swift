import Foundation
import Postgres
import PostgresTesting
import Testing

@testable import OTPService

/// docs/ANALYTICS.md's queries run as they are written, against read models with sessions in them.
@Suite(.heavy) struct AnalyticsDocTests {
    @Test func everyQueryInTheAnalystsGuideRuns() async throws {
        let doc = try String(
            contentsOfFile: schemaDirectory.replacingOccurrences(of: "/schema", with: "/docs/ANALYTICS.md"),
            encoding: .utf8
        )
        let blocks = doc.components(separatedBy: "```sql\n").dropFirst().map {
            String($0.prefix { $0 != "`" })
        }
        #expect(blocks.count >= 10)
        let f = try await Fixture.make("analytics_doc", policies: [fastPolicy])
        let d = Driver(f: f)
        try await knownScenario(d)
        try await d.project()
        var answered = 0
        for sql in blocks {
            let rows = try await f.pool.withConnection { conn in
                try conn.query(PGQuery(unsafeSQL: sql)).rows.count
            }
            if rows > 0 { answered += 1 }
        }
        // Every query runs; most have an answer in the scenario. Four cannot: the A/B test (no variants here),
        // week on week (no last week), silent failures (nothing sent over 10 minutes ago) and countries with
        // 20 sessions.
        #expect(answered == blocks.count - 4)
        await f.pool.close()
    }
}
