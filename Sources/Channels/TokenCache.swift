/// A bearer token made on demand and reused until it is due for renewal; concurrent callers share one renewal.
actor TokenCache {
    /// A token and the moment (seconds on `clock`) from which it is renewed.
    struct Entry: Sendable {
        var token: String
        var renewAt: Double
    }

    private let make: @Sendable () async throws -> Entry
    private let clock: @Sendable () -> Double
    private var entry: Entry?
    private var renewing: Task<Entry, any Error>?

    /// Creates a cache; `make` produces a token and says when to renew it, `clock` reads seconds.
    init(clock: @escaping @Sendable () -> Double, make: @escaping @Sendable () async throws -> Entry) {
        self.clock = clock
        self.make = make
    }

    /// The cached token while it is fresh, else a new one.
    func token() async throws -> String {
        if let entry, clock() < entry.renewAt { return entry.token }
        if let renewing { return try await renewing.value.token }
        let task = Task { try await make() }
        renewing = task
        defer { renewing = nil }
        let fresh = try await task.value
        entry = fresh
        return fresh.token
    }

    /// Forgets `token` (the provider refused it), so the next call makes a new one; a newer token, made while
    /// a request with the refused one was in flight, is kept.
    func invalidate(_ token: String) {
        if entry?.token == token { entry = nil }
    }
}
