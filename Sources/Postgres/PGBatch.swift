/// Statements to run in one round trip (`PGConnection.run`), each with what to do with its result.
///
/// For writes whose results decide nothing before the next is sent: a command's event append, its outbox rows
/// and its deadlines. A check that throws (a version conflict seen in an append's row count, say) throws from
/// `run` after every statement has run; inside a transaction, roll it back then.
public struct PGBatch {
    struct Item {
        let query: PGQuery
        let check: (Result<PGResult, PGError>) throws -> Void
    }

    private(set) var items: [Item] = []

    /// Creates an empty batch.
    public init() {}

    /// Adds a statement whose error, if the server refuses it, is thrown as it is.
    public mutating func add(_ query: PGQuery) {
        items.append(Item(query: query) { _ = try $0.get() })
    }

    /// Adds a statement whose result or error `check` inspects (and may turn into an error of its own).
    public mutating func add(_ query: PGQuery, check: @escaping (Result<PGResult, PGError>) throws -> Void) {
        items.append(Item(query: query, check: check))
    }

    /// Whether the batch holds no statement.
    public var isEmpty: Bool { items.isEmpty }
}
