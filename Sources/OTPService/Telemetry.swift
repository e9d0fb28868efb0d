import OTPDomain
import Prometheus
import Synchronization

/// The service's Prometheus metrics: one object per `Application`, owning its own registry (never the
/// process-wide `MetricsSystem`, so many servers in one process, as in the tests, each count their own).
///
/// Every family is registered with its help text when the object is made, so `GET /metrics` lists all of them
/// from the start. Labels take values from small fixed sets only (command names from the command table, error
/// codes, event types, channels, driver names, escalation reasons, receipt outcomes): no label ever holds a
/// session id, a destination or a code (docs/OPERATIONS.md, "Metrics").
public final class Telemetry: Sendable {
    /// The registry every family lives in; `exposition()` renders it.
    public let registry = PrometheusCollectorRegistry()

    /// `otpd_command_duration_seconds`'s buckets: 0.5 ms to 10 s.
    static let commandBuckets: [Duration] = [
        .microseconds(500), .milliseconds(1), .microseconds(2_500), .milliseconds(5), .milliseconds(10),
        .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500),
        .seconds(1), .milliseconds(2_500), .seconds(5), .seconds(10),
    ]
    /// `otpd_provider_duration_seconds`'s buckets: 10 ms to 30 s.
    static let providerBuckets: [Duration] = [
        .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250),
        .milliseconds(500), .seconds(1), .milliseconds(2_500), .seconds(5), .seconds(10), .seconds(30),
    ]
    /// `otpd_timer_lateness_seconds`'s buckets: 1 ms to 60 s (QUALITY.md's P3 bar is 100 ms at p99).
    static let latenessBuckets: [Double] = [
        0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
    ]

    /// The families: name (after `otpd_`), unit suffix and help text, each used for every series of its family.
    enum Family {
        static let commands = ("commands", "total", "Commands answered on the RESP port, by command and result.")
        static let commandDuration = (
            "command_duration", "seconds", "Time from a command's arrival to its reply, by command."
        )
        static let events = ("events_appended", "total", "Events committed to the event store, by type.")
        static let messages = (
            "messages", "total",
            "Provider calls by channel, driver and outcome (sent, failed, retried later in the step)."
        )
        static let providerDuration = (
            "provider_duration", "seconds", "Duration of provider calls (a driver's send), by channel and driver."
        )
        static let receipts = (
            "receipts", "total",
            "Delivery receipts accepted (RESP RECEIPT and the HTTP side alike), by channel and outcome."
        )
        static let escalations = ("escalations", "total", "Moves to another step, by reason.")
        static let timersPending = (
            "timers_pending", "", "Deadlines in the timers table (the whole table, as seen by this instance)."
        )
        static let timerLateness = (
            "timer_lateness", "seconds", "How late a deadline fired: the event's time minus the deadline."
        )
        static let projectorLag = (
            "projector_lag", "seconds", "How far the projector is behind the event log."
        )
        static let databaseErrors = (
            "database_errors", "total",
            "Times the database could not be reached: commands answered UNAVAILABLE, failed claims, HTTP 503s."
        )
        static let connections = ("connections", "", "Open connections on the RESP port.")
        static let providerState = (
            "provider_state", "",
            "Each listed provider's circuit breaker in this instance: 0 closed, 1 open (skipped), 2 probing."
        )
    }

    static func descriptor(_ family: (String, String, String)) -> MetricNameDescriptor {
        MetricNameDescriptor(namespace: "otpd", metricName: family.0, unitName: family.1, helpText: family.2)
    }

    /// The unlabelled series.
    let timersPending: Gauge
    let timerLateness: ValueHistogram
    let projectorLag: Gauge
    let databaseErrors: Counter
    let connections: Gauge

    /// Labelled counters and histograms already made, by label values (the registry's own lookup builds its
    /// key from the descriptor on every call; this one is a dictionary read).
    private let counters = Mutex<[CounterKey: Counter]>([:])
    private let histograms = Mutex<[CounterKey: DurationHistogram]>([:])
    private let providerStates = Mutex<[String: Gauge]>([:])

    private struct CounterKey: Hashable {
        var family: String
        var values: [String]
    }

    /// Creates the registry with every family in it.
    public init() {
        timersPending = registry.makeGauge(descriptor: Self.descriptor(Family.timersPending))
        timerLateness = registry.makeValueHistogram(
            descriptor: Self.descriptor(Family.timerLateness),
            buckets: Self.latenessBuckets
        )
        projectorLag = registry.makeGauge(descriptor: Self.descriptor(Family.projectorLag))
        databaseErrors = registry.makeCounter(descriptor: Self.descriptor(Family.databaseErrors))
        connections = registry.makeGauge(descriptor: Self.descriptor(Family.connections))
        // Labelled families show once they have a series: start the fixed, small sets at zero, so each family
        // is listed (and a first increase is seen by rate()) before anything happened.
        for reason in [EscalationReason.timeout, .failure, .resend, .fraud] {
            _ = counter(Family.escalations, [("reason", reason.rawValue)])
        }
        for channel in DeliveryChannel.allCases {
            for outcome in [ReceiptOutcome.delivered, .failed, .opened] {
                _ = counter(Family.receipts, [("channel", channel.rawValue), ("outcome", outcome.rawValue)])
            }
        }
        for type in Self.eventTypes { _ = counter(Family.events, [("type", type)]) }
    }

    /// Every event type (`SessionEvent.type`), started at zero.
    static let eventTypes = [
        "issued", "sent", "delivery_failed", "delivered", "opened", "timed_out", "escalated",
        "verification_failed", "verified", "locked", "expired", "cancelled", "exhausted", "escalation_withdrawn",
        "erased",
    ]

    private func counter(_ family: (String, String, String), _ labels: [(String, String)]) -> Counter {
        let key = CounterKey(family: family.0, values: labels.map(\.1))
        if let made = counters.withLock({ $0[key] }) { return made }
        let made = registry.makeCounter(descriptor: Self.descriptor(family), labels: labels)
        counters.withLock { $0[key] = made }
        return made
    }

    private func histogram(
        _ family: (String, String, String),
        _ labels: [(String, String)],
        buckets: [Duration]
    ) -> DurationHistogram {
        let key = CounterKey(family: family.0, values: labels.map(\.1))
        if let made = histograms.withLock({ $0[key] }) { return made }
        let made = registry.makeDurationHistogram(
            descriptor: Self.descriptor(family),
            labels: labels,
            buckets: buckets
        )
        histograms.withLock { $0[key] = made }
        return made
    }

    // MARK: Commands

    /// A command's series, made once per command name so the hot path touches no lock for a successful command.
    public struct CommandMeter: Sendable {
        let telemetry: Telemetry
        let command: String
        let ok: Counter?
        let duration: DurationHistogram

        /// Counts one answer: `result` is `ok` or the reply's error code (a fixed set, never free text).
        public func record(result: String, duration elapsed: Duration) {
            if result == "ok", let ok {
                ok.increment()
            } else {
                telemetry.counter(Family.commands, [("command", command), ("result", result)]).increment()
            }
            duration.record(elapsed)
        }
    }

    /// The series of one command; `command` must come from a fixed table (an unknown name: one value such as
    /// `unknown`, with `answersOK` false, so no `ok` series is listed for it), never from what a client sent.
    public func commandMeter(_ command: String, answersOK: Bool = true) -> CommandMeter {
        CommandMeter(
            telemetry: self,
            command: command,
            ok: answersOK ? counter(Family.commands, [("command", command), ("result", "ok")]) : nil,
            duration: histogram(Family.commandDuration, [("command", command)], buckets: Self.commandBuckets)
        )
    }

    // MARK: Events

    /// Counts committed events by type, and the escalations among them by reason.
    public func committed(_ events: [SessionEvent]) {
        for event in events {
            counter(Family.events, [("type", event.type)]).increment()
            if case .escalated(let e) = event {
                counter(Family.escalations, [("reason", e.reason.rawValue)]).increment()
            }
        }
    }

    /// Counts a receipt the command path accepted.
    public func receipt(channel: DeliveryChannel, outcome: ReceiptOutcome) {
        counter(Family.receipts, [("channel", channel.rawValue), ("outcome", outcome.rawValue)]).increment()
    }

    // MARK: Delivery

    /// What a provider call came to, for `otpd_messages_total`.
    public enum MessageOutcome: String, Sendable {
        /// The provider accepted the message.
        case sent
        /// The call failed and the step does not try this provider again (or the outcome is unknown).
        case failed
        /// The call failed and is tried again later in the step.
        case retried
    }

    /// Starts a channel's driver's series at zero, so they are listed before its first message.
    public func prepareChannel(_ channel: DeliveryChannel, driver: String) {
        for outcome in [MessageOutcome.sent, .failed, .retried] {
            _ = counter(
                Family.messages,
                [("channel", channel.rawValue), ("driver", driver), ("outcome", outcome.rawValue)]
            )
        }
        _ = histogram(
            Family.providerDuration,
            [("channel", channel.rawValue), ("driver", driver)],
            buckets: Self.providerBuckets
        )
    }

    /// Sets `otpd_provider_state{provider}`: 0 closed, 1 open, 2 probing.
    public func setProviderState(_ provider: String, _ state: CircuitBreakers.State) {
        let gauge = providerStates.withLock { made in
            if let g = made[provider] { return g }
            let g = registry.makeGauge(
                descriptor: Self.descriptor(Family.providerState),
                labels: [("provider", provider)]
            )
            made[provider] = g
            return g
        }
        gauge.set(Double(state.rawValue))
    }

    /// Records one provider call: how long it took and what it came to. `driver` is the driver's fixed name.
    public func providerCall(channel: DeliveryChannel, driver: String, duration: Duration, outcome: MessageOutcome) {
        histogram(
            Family.providerDuration,
            [("channel", channel.rawValue), ("driver", driver)],
            buckets: Self.providerBuckets
        ).record(duration)
        counter(
            Family.messages,
            [("channel", channel.rawValue), ("driver", driver), ("outcome", outcome.rawValue)]
        ).increment()
    }

    // MARK: Timers, projector, database, connections

    /// Sets the number of deadlines in the timers table.
    public func setTimersPending(_ count: Int) { timersPending.set(Double(count)) }

    /// Records how late a deadline fired, in seconds (negative values count as 0).
    public func timerFired(lateness seconds: Double) { timerLateness.record(max(0, seconds)) }

    /// Sets how far the projector is behind the event log, in seconds.
    public func setProjectorLag(seconds: Double) { projectorLag.set(seconds) }

    /// Counts one time the database could not be reached.
    public func databaseError() { databaseErrors.increment() }

    /// Counts a RESP connection opened (`+1`) or closed (`-1`).
    public func connectionsChanged(by delta: Int) { connections.increment(by: Double(delta)) }

    /// The Prometheus text exposition (format 0.0.4) of every family.
    public func exposition() -> [UInt8] {
        var buffer: [UInt8] = []
        buffer.reserveCapacity(16 * 1024)
        registry.emit(into: &buffer)
        return buffer
    }

    /// The exposition's content type.
    public static let contentType = "text/plain; version=0.0.4; charset=utf-8"
}
