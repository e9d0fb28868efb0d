import CLibPQ

extension PGConnection {
    /// Connects (blocking) to the database at `url` with the session `settings`.
    public convenience init(url: String, settings: PGSettings = .init()) throws(PGError) {
        let parsed = try PGURL(parsing: url)
        let pairs = parsed.connectionParameters(settings: settings)
        let handle = try Self.withKeywordArrays(pairs) { keywords, values in
            PQconnectdbParams(keywords, values, 0)
        }
        guard let handle else { throw .connection("could not allocate a libpq connection") }
        guard PQstatus(handle) == CONNECTION_OK else {
            let message = Self.errorMessage(handle)
            PQfinish(handle)
            throw .connection(message)
        }
        self.init(handle: handle, settings: settings)
    }

    /// Progress of a non-blocking connection attempt.
    enum ConnectProgress {
        case wantRead(Int32)
        case wantWrite(Int32)
        case ready
        case failed(PGError)
    }

    /// Starts a non-blocking connection attempt (`PQconnectStartParams`); drive it with `continueConnecting`.
    static func startConnecting(url: String, settings: PGSettings) throws(PGError) -> (PGConnection, ConnectProgress) {
        let parsed = try PGURL(parsing: url)
        let pairs = parsed.connectionParameters(settings: settings)
        let handle = try withKeywordArrays(pairs) { keywords, values in
            PQconnectStartParams(keywords, values, 0)
        }
        guard let handle else { throw .connection("could not allocate a libpq connection") }
        if PQstatus(handle) == CONNECTION_BAD {
            let message = errorMessage(handle)
            PQfinish(handle)
            throw .connection(message)
        }
        let connection = PGConnection(handle: handle, settings: settings)
        // Per the libpq docs, behave as if PQconnectPoll last returned PGRES_POLLING_WRITING.
        return (connection, .wantWrite(PQsocket(handle)))
    }

    /// Advances a non-blocking connection attempt after its socket became ready.
    func continueConnecting() -> ConnectProgress {
        guard let handle else { return .failed(.closed("connection is closed")) }
        switch PQconnectPoll(handle) {
        case PGRES_POLLING_OK: return .ready
        case PGRES_POLLING_READING: return .wantRead(PQsocket(handle))
        case PGRES_POLLING_WRITING: return .wantWrite(PQsocket(handle))
        default: return .failed(.connection(Self.errorMessage(handle)))
        }
    }

    private static func withKeywordArrays<R>(
        _ pairs: [(String, String)],
        _ body: (UnsafePointer<UnsafePointer<CChar>?>, UnsafePointer<UnsafePointer<CChar>?>) -> R
    ) throws(PGError) -> R {
        if pairs.contains(where: { $0.0.utf8.contains(0) || $0.1.utf8.contains(0) }) {
            throw .connection("invalid database URL: a part contains a NUL byte")
        }
        // NULL-terminated, as PQconnectdbParams and PQconnectStartParams expect.
        guard let keywords = CStringArray(pairs.map(\.0) + [nil]), let values = CStringArray(pairs.map(\.1) + [nil])
        else { throw .connection("out of memory for the connection parameters") }
        return withExtendedLifetime((keywords, values)) { body(keywords.base, values.base) }
    }
}
