/// A query whose interpolated values become `$1`, `$2`, ... parameters instead of SQL text.
///
/// ```swift
/// let q: PGQuery = "SELECT * FROM t WHERE id = \(id) AND n = \(n)"
/// // q.sql == "SELECT * FROM t WHERE id = $1 AND n = $2", q.parameters == [id.pgText, n.pgText]
/// ```
/// Use `\(unescaped: "name")` for trusted SQL fragments and `\(identifier: name)` for quoted identifiers.
public struct PGQuery: Sendable, ExpressibleByStringInterpolation {
    /// The SQL text with `$n` placeholders.
    public var sql: String
    /// The text-format parameter values; `nil` is SQL NULL.
    public var parameters: [String?]

    /// Creates a query from raw SQL and explicit parameters; the caller is responsible for the SQL text.
    public init(unsafeSQL: String, parameters: [String?] = []) {
        self.sql = unsafeSQL
        self.parameters = parameters
    }

    /// Creates a query from a literal without interpolations.
    public init(stringLiteral value: String) {
        self.init(unsafeSQL: value)
    }

    /// Creates a query from an interpolated literal.
    public init(stringInterpolation: StringInterpolation) {
        self.init(unsafeSQL: stringInterpolation.sql, parameters: stringInterpolation.parameters)
    }

    /// Builds the SQL text and parameter list of a `PGQuery`.
    public struct StringInterpolation: StringInterpolationProtocol, Sendable {
        var sql: String
        var parameters: [String?]

        /// Creates an empty interpolation.
        public init(literalCapacity: Int, interpolationCount: Int) {
            sql = ""
            sql.reserveCapacity(literalCapacity + interpolationCount * 3)
            parameters = []
            parameters.reserveCapacity(interpolationCount)
        }

        /// Appends literal SQL text.
        public mutating func appendLiteral(_ literal: String) {
            sql += literal
        }

        /// Appends a value as the next `$n` parameter.
        public mutating func appendInterpolation<Value: PGEncodable>(_ value: Value) {
            parameters.append(value.pgText)
            sql += "$\(parameters.count)"
        }

        /// Appends an optional value as the next `$n` parameter; `nil` is SQL NULL.
        public mutating func appendInterpolation<Value: PGEncodable>(_ value: Value?) {
            parameters.append(value?.pgText ?? nil)
            sql += "$\(parameters.count)"
        }

        /// Appends a trusted SQL fragment (e.g. a table name from code) verbatim.
        public mutating func appendInterpolation(unescaped fragment: String) {
            sql += fragment
        }

        /// Appends an identifier in double quotes, doubling embedded quotes.
        public mutating func appendInterpolation(identifier: String) {
            sql += PGQuery.quoteIdentifier(identifier)
        }
    }

    /// Quotes an identifier for SQL: wraps it in double quotes and doubles embedded double quotes.
    public static func quoteIdentifier(_ identifier: String) -> String {
        var quoted = "\""
        for character in identifier {
            quoted += character == "\"" ? "\"\"" : String(character)
        }
        return quoted + "\""
    }
}
