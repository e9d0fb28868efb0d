import ArgumentParser
import EventStore
import Foundation
import OTPDomain
import OTPServer
import OTPService

/// Folds every stream with the server's own decoding and `evolve` (`SessionReplay`, as REPLAY does), checks
/// every chain and head, and compares each folded state with its projection row (`projections.session_view`).
///
/// A projection row is compared only when it has applied the stream's last version; one that is behind (the
/// projector lags) is counted as `behind`, a stream without a row as `missing`; neither is a failure. Exit 1
/// on a broken chain, a stream that does not decode, or a mismatch.
struct Replay: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Fold every stream as REPLAY does, check every hash chain and compare each session with its "
            + "projection row.",
        discussion: "Prints `broken:`, `unreadable:` and `mismatch:` lines, then events, streams, events/s and the "
            + "comparison's counts; exit 1 on a broken chain or a mismatch."
    )
    @OptionGroup var connection: Connection
    @OptionGroup var secret: SecretSource
    @Flag(help: "Every stream (required: `REPLAY session` replays one).") var all = false
    @Option(help: "Only this tenant's streams.") var tenant: String?

    func validate() throws {
        guard all else { throw ValidationError("give --all (REPLAY replays one session)") }
    }

    /// What replaying one stream found.
    struct Verdict: Sendable {
        var stream: String
        var lastVersion: Int
        var brokenAt: Int?
        var unreadableAt: Int?
        var state: SessionState?
        var projection: ProjectionRow?
    }

    func run() throws {
        let (secrets, c) = try secret.load(for: "whose event log this is")
        let url = try connection.url(or: c)
        let replay = SessionReplay(secrets: secrets)
        var start = ScanStart(nowMs: 0, hasProjection: false)
        var broken = 0
        var unreadable = 0
        var compared = 0
        var mismatches = 0
        var behind = 0
        var missing = 0
        let totals = try LogScan.run(
            url: url,
            options: ScanOptions(prefix: tenant.map { $0 + "/" }, keys: true, projection: true),
            start: { start = $0 },
            work: { stream in Self.replay(stream, with: replay) },
            report: { v in
                if let version = v.brokenAt {
                    broken += 1
                    print("broken: \(v.stream) at version \(version)")
                    return
                }
                guard let state = v.state else {
                    unreadable += 1
                    print("unreadable: \(v.stream) at version \(v.unreadableAt ?? 1)")
                    return
                }
                guard start.hasProjection else { return }
                guard let row = v.projection else {
                    missing += 1
                    return
                }
                if row.version < v.lastVersion {
                    behind += 1
                    return
                }
                compared += 1
                // The projection may hold the status as recorded, or as STATUS shows it now (an active session
                // past its TTL reads `expired` before the expiry event is recorded).
                let statuses = [state.status.rawValue, state.effectiveStatus(now: start.nowMs).rawValue]
                if row.version != v.lastVersion || !statuses.contains(row.status) {
                    mismatches += 1
                    print(
                        "mismatch: \(v.stream) at version \(v.lastVersion): projection says \(row.status) at version "
                            + "\(row.version), events say \(state.status.rawValue)"
                    )
                }
            }
        )
        print(
            "replayed \(totals.streams) streams, \(totals.events) events in \(format(totals.seconds)) s "
                + "(\(totals.eventsPerSecond) events/s)"
        )
        print(
            "chains: "
                + (broken + unreadable == 0 ? "all ok" : "\(broken) broken, \(unreadable) unreadable")
        )
        if start.hasProjection {
            print(
                "projection: \(compared) compared, \(mismatches) mismatches, \(behind) behind, \(missing) missing"
            )
        } else {
            print("projection: no projection to compare (projections.session_view does not exist)")
        }
        if broken + unreadable + mismatches > 0 { throw ExitCode(1) }
    }

    /// Checks one stream's chain and folds it.
    static func replay(_ stream: ScannedStream, with replay: SessionReplay) -> Verdict {
        var verdict = Verdict(
            stream: stream.id,
            lastVersion: stream.records.last?.version ?? 0,
            brokenAt: replay.firstBrokenVersion(stream.records, head: stream.head),
            projection: stream.projection
        )
        guard verdict.brokenAt == nil, let id = StreamID(text: stream.id) else { return verdict }
        do {
            verdict.state = try replay.fold(stream.records, sealedKey: stream.sealedKey, stream: id)
        } catch let e as UnreadableSession {
            verdict.unreadableAt = e.version
        } catch {
            verdict.unreadableAt = 1
        }
        return verdict
    }
}
