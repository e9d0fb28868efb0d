import Postgres
import Testing

@Suite("PGURL parsing and rendering")
struct URLTests {
    @Test func parsesUserPercentEncodedPasswordHostPortDatabaseAndParameters() throws {
        let url = try PGURL(
            parsing:
                "postgresql://alice:p%40ss%3Aw%2Frd@db.example.com:6543/my%20db?sslmode=disable&application_name=svc%201"
        )
        #expect(url.user == "alice")
        #expect(url.password == "p@ss:w/rd")
        #expect(url.host == "db.example.com")
        #expect(url.port == 6543)
        #expect(url.database == "my db")
        #expect(url.parameters == ["sslmode": "disable", "application_name": "svc 1"])
    }

    @Test func hostQueryParameterSelectsAUnixSocketDirectory() throws {
        let url = try PGURL(parsing: "postgres://otpd@/otpd?host=%2Fvar%2Frun%2Fpostgresql")
        #expect(url.user == "otpd")
        #expect(url.password == nil)
        #expect(url.host == "/var/run/postgresql")
        #expect(url.port == nil)
        #expect(url.database == "otpd")
        #expect(url.parameters.isEmpty)
    }

    @Test func parsesBracketedIPv6HostsAndMinimalURLs() throws {
        let v6 = try PGURL(parsing: "postgresql://u@[::1]:5433/d")
        #expect(v6.host == "::1")
        #expect(v6.port == 5433)
        let minimal = try PGURL(parsing: "postgresql://localhost")
        #expect(minimal.host == "localhost")
        #expect(minimal.user == nil)
        #expect(minimal.database == nil)
    }

    @Test func rejectsOtherSchemesBadPortsAndBadEscapes() {
        #expect(throws: PGError.self) { try PGURL(parsing: "mysql://u@h/d") }
        #expect(throws: PGError.self) { try PGURL(parsing: "postgresql://u@h:99999/d") }
        #expect(throws: PGError.self) { try PGURL(parsing: "postgresql://u@h:abc/d") }
        #expect(throws: PGError.self) { try PGURL(parsing: "postgresql://u:%zz@h/d") }
    }

    @Test func renderingRoundTripsAndDescriptionHidesThePassword() throws {
        let url = PGURL(
            user: "otpd",
            password: "s3cr@t/",
            host: "127.0.0.1",
            port: 5433,
            database: "t_x",
            parameters: ["sslmode": "disable"]
        )
        let reparsed = try PGURL(parsing: url.urlString)
        #expect(reparsed == url)
        #expect(!url.description.contains("s3cr"))
        #expect(url.description.contains("***"))
        let socket = PGURL(user: "otpd", host: "/tmp/pg", database: "otpd")
        #expect(try PGURL(parsing: socket.urlString) == socket)
    }
}

@Suite("PGQuery and value coding")
struct CodingTests {
    @Test func interpolatedValuesBecomeNumberedParameters() {
        let id = 5
        let name: String? = nil
        let query: PGQuery =
            "SELECT * FROM \(unescaped: "events") WHERE id = \(id) AND n = \(name) AND s = \("it's") AND \(identifier: "we\"ird") = 1"
        #expect(query.sql == "SELECT * FROM events WHERE id = $1 AND n = $2 AND s = $3 AND \"we\"\"ird\" = 1")
        #expect(query.parameters == ["5", nil, "it's"])
        let plain: PGQuery = "SELECT 1"
        #expect(plain.sql == "SELECT 1")
        #expect(plain.parameters.isEmpty)
    }

    @Test func encodesAndDecodesScalarTextFormats() throws {
        #expect(true.pgText == "t")
        #expect(false.pgText == "f")
        #expect([UInt8]([0x00, 0xab, 0xff]).pgText == "\\x00abff")
        #expect(try [UInt8](pgText: "\\x00ABff") == [0x00, 0xab, 0xff])
        #expect(Double.infinity.pgText == "Infinity")
        #expect(try Double(pgText: "-Infinity") == -.infinity)
        #expect(try Double(pgText: "NaN").isNaN)
        #expect(try Int64(pgText: "-9223372036854775808") == .min)
        #expect(throws: PGError.self) { try Int32(pgText: "2147483648") }
        #expect(throws: PGError.self) { try [UInt8](pgText: "\\x0") }
        #expect(throws: PGError.self) { try Bool(pgText: "maybe") }
    }

    @Test func rowDecodingReportsNullAndMissingColumnsAsDecodingErrors() throws {
        let row = PGRow(columns: ["a", "b"], values: ["42", nil])
        #expect(try row.decode("a", as: Int.self) == 42)
        #expect(try row.decode(0, as: String.self) == "42")
        #expect(try row.decodeIfPresent("b", as: Int.self) == nil)
        #expect(row["b"] == nil)
        #expect(row[7] == nil)
        let nullError = #expect(throws: PGError.self) { try row.decode("b", as: Int.self) }
        #expect(nullError?.code == .decoding)
        #expect(throws: PGError.self) { try row.decode("zzz", as: Int.self) }
    }

    @Test func errorDescriptionIsRedacted() {
        let error = PGError(
            code: .server,
            sqlState: "23505",
            message: "duplicate key value violates unique constraint \"u_pkey\""
        )
        #expect(error.isUniqueViolation)
        #expect(
            error.description
                == "PGError(code: server, sqlState: 23505): the database server reported a unique violation"
        )
        #expect(error.debugDescription.contains("u_pkey"))
        #expect(!String(describing: error).contains("u_pkey"))
        #expect(PGError(code: .server, sqlState: "57014").isQueryCanceled)
    }
}
