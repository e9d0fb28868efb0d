import EventStore
import Logging
import OTPDomain
import Postgres
import ServiceLifecycle
import Synchronization

/// Where the live feed hands a session's messages: a subscribed connection. `deliver` is called with the feed's
/// lock held, so it must not block: it queues and returns.
public protocol LiveSubscriber: AnyObject, Sendable {
    /// Takes one message; `stream` is the session's stream id (`tenant/session`).
    func deliver(_ message: LiveStatus, stream: String)
}

/// The live status feed behind SUBSCRIBE: follows the ordered event log while anyone on this instance is
/// subscribed, and hands every event of a subscribed session to its subscribers as a `LiveStatus`.
///
/// It reads the log, not each session: one statement a round (`EventStore.follow`) reads the subscribed streams'
/// events from the horizon of the round before, so the events any otpd instance appends reach this one's
/// subscribers within a round (`pollInterval`, sooner for this instance's own appends, which wake it). A stream
/// just subscribed to is read whole in the same statement: its fold gives the first message, the current state,
/// and its events from then on come in order, none missed and none twice, because both reads share one snapshot
/// and the next round goes on from its horizon.
///
/// The feed keeps one fold per subscribed stream, shared by its subscribers, and forgets it when the last one
/// leaves. Nothing is polled while nobody is subscribed.
public final class LiveFeed: Service, Sendable {
    /// How the feed reads.
    public struct Settings: Sendable {
        /// The longest wait between two reads while anyone is subscribed: the delay for events appended by other
        /// instances.
        public var pollInterval: Duration = .milliseconds(50)
        /// The least time between two reads, so a burst of local appends shares one.
        public var minGap: Duration = .milliseconds(5)
        /// Creates the defaults.
        public init() {}
    }

    fileprivate struct Followed {
        /// Distinguishes this following of a stream from an earlier one that ended and was started again.
        var id: Int
        var state = SessionState()
        /// The type and time of the last event folded.
        var last: (type: String, at: Int64)?
        /// False until the stream's first read: it gets no messages before its current state.
        var started = false
        var subscribers: [ObjectIdentifier: any LiveSubscriber] = [:]
    }

    fileprivate struct Registry {
        var streams: [String: Followed] = [:]
        var nextID = 0
        /// The horizon the next read goes on from.
        var horizon: UInt64 = 0
    }

    let pool: PGPool
    let settings: Settings
    let logger: Logger
    let wake: Signal
    private let registry = Mutex(Registry())
    private let codec = EventCodec()

    /// Creates a feed; `wake` is signalled by this instance's appends.
    public init(pool: PGPool, settings: Settings = Settings(), wake: Signal, logger: Logger) {
        self.pool = pool
        self.settings = settings
        self.wake = wake
        self.logger = logger
    }

    /// Adds a subscriber to a stream. When the stream is already followed, its current state is delivered at
    /// once; otherwise it comes with the next read (or, for a session not issued yet, with its ISSUE).
    public func subscribe(_ stream: String, _ subscriber: any LiveSubscriber) {
        let added = registry.withLock { r -> Bool in
            if r.streams[stream] == nil {
                r.nextID += 1
                r.streams[stream] = Followed(id: r.nextID)
            }
            r.streams[stream]!.subscribers[ObjectIdentifier(subscriber)] = subscriber
            guard let f = r.streams[stream], f.started else { return true }
            if let message = f.current { subscriber.deliver(message, stream: stream) }
            return false
        }
        if added { wake.signal() }
    }

    /// Removes a subscriber from a stream; the stream is no longer followed once nobody is subscribed to it.
    public func unsubscribe(_ stream: String, _ subscriber: any LiveSubscriber) {
        registry.withLock { r in
            r.streams[stream]?.subscribers[ObjectIdentifier(subscriber)] = nil
            if r.streams[stream]?.subscribers.isEmpty == true { r.streams[stream] = nil }
        }
    }

    /// The number of streams followed now.
    public var followedStreams: Int { registry.withLock { $0.streams.count } }

    /// Runs until graceful shutdown.
    public func run() async throws {
        var failures = 0
        while !Task.isShuttingDownGracefully && !Task.isCancelled {
            var wait: Duration? = settings.pollInterval
            do {
                if try await round() == false { wait = nil }  // nobody subscribed: a subscribe (or an append) wakes it
                failures = 0
            } catch {
                failures += 1
                logger.warning("live feed: cannot read the log; retrying", metadata: ["error": "\(error)"])
                wait = .seconds(1 << min(failures - 1, 3))
            }
            let (wake, pause, gap) = (self.wake, wait, settings.minGap)
            try? await cancelWhenGracefulShutdown {
                try await Task.sleep(for: gap)
                // No timer while nobody is subscribed: one cut short by each append would outlive it (`wait()`).
                if let pause { await wake.wait(timeout: pause) } else { await wake.wait() }
            }
        }
    }

    /// One read: the followed streams' new events and the new streams' whole histories, folded and delivered.
    /// Returns false when nothing is followed (nothing was read).
    @discardableResult
    public func round() async throws -> Bool {
        let (followed, starting, since) = registry.withLock { r in
            var followed: [String] = []
            var starting: [(String, Int)] = []
            for (stream, f) in r.streams {
                if f.started { followed.append(stream) } else { starting.append((stream, f.id)) }
            }
            return (followed, starting, r.horizon)
        }
        guard !followed.isEmpty || !starting.isEmpty else { return false }
        let read = try await pool.withConnection { conn in
            try EventStore.follow(followed, since: since, starting: starting.map(\.0), on: conn)
        }
        var byStream: [String: [(record: EventRecord, event: SessionEvent)]] = [:]
        for record in read.records {
            do {
                byStream[record.streamID, default: []].append((record, try codec.decode(record, key: nil)))
            } catch {
                logger.error(
                    "live feed: an event cannot be read and is left out of the feed",
                    metadata: ["stream": "\(record.streamID)", "version": "\(record.version)", "error": "\(error)"]
                )
            }
        }
        registry.withLock { r in
            r.horizon = read.horizon
            for (stream, startedID) in starting {
                // Unless it was left (and perhaps followed again) while the read ran, it is followed from here on:
                // its history folds into one message, the current state.
                guard r.streams[stream]?.id == startedID else { continue }
                r.streams[stream]!.started = true
                for (record, event) in byStream[stream] ?? [] { r.streams[stream]!.fold(record, event) }
                r.streams[stream]!.publish(stream)
            }
            for stream in followed {
                guard let events = byStream[stream], r.streams[stream]?.started == true else { continue }
                for (record, event) in events where r.streams[stream]!.fold(record, event) {
                    r.streams[stream]!.publish(stream)
                }
            }
        }
        return true
    }
}

extension LiveFeed.Followed {
    /// Folds the next event; false (and nothing changes) for one already folded.
    @discardableResult
    fileprivate mutating func fold(_ record: EventRecord, _ event: SessionEvent) -> Bool {
        guard record.version == state.version + 1 else { return false }
        state = SessionDecider.evolve(state, event, at: record.at)
        last = (record.type, record.at)
        return true
    }

    /// The message for the state folded so far; nil before the session's `issued`.
    fileprivate var current: LiveStatus? {
        last.flatMap { LiveStatus(state, type: $0.type, at: $0.at) }
    }

    /// Delivers the current state to every subscriber.
    fileprivate func publish(_ stream: String) {
        guard let message = current else { return }
        for s in subscribers.values { s.deliver(message, stream: stream) }
    }
}
