import Foundation
import OTPServer
import OTPTesting
import PostgresTesting
import Testing

/// `[[test_destination]]`: a team's own end-to-end tests against a real otpd, without sending.
@Suite(.serialized, .heavy) struct TestDestinationTests {
    static let config = """
        [[test_destination]]
        destination = "sms:+15005550006"
        code = "424242"

        [[test_destination]]
        destination = "email:qa@example.com"
        code = "424242"
        """

    /// Nothing reaches the provider, `sent` names provider `test`, the configured code verifies, and neither
    /// pacing nor STATS count the session; a real session beside it still sends.
    @Test func aTestDestinationSendsNothingAndVerifiesWithItsCode() async throws {
        let capture = try await FakeProvider.start { _ in (status: 200, body: #"{"provider_ref":"r"}"#, delay: .zero) }
        let server = try await TestServer.start(
            label: "testdest",
            config: Self.config + """

                [channel.sms]
                driver = "webhook"
                url = "\(capture.baseURL)/sms"

                [limits]
                sessions_per_destination_day = 1
                """
        )
        defer {
            Task {
                await server.stop()
                await capture.stop()
            }
        }
        // Twice to one test number although one session a day is allowed per destination: pacing leaves it out.
        for id in ["t1", "t2"] {
            let issued = pairs(try await redisCLI(server.port, ["ISSUE", id, "sms:+15005550006"]))
            #expect(issued["status"] == "pending", "\(id): \(issued)")
            try await server.waitUntilSent(id)
        }
        let history = try await redisCLI(server.port, ["HISTORY", "t1"])
        let sent = try #require(history.firstIndex(of: "sent").map { history[$0 + 4] })
        #expect(sent.contains(#""provider":"test""#), "\(sent)")
        #expect(pairs(try await redisCLI(server.port, ["VERIFY", "t1", "111111"]))["result"] == "mismatch")
        #expect(pairs(try await redisCLI(server.port, ["VERIFY", "t1", "424242"]))["result"] == "verified")

        // A real session goes to the provider as usual; the test ones never did.
        _ = try await redisCLI(server.port, ["ISSUE", "r1", "sms:+15551230100"])
        try await server.waitUntilSent("r1")
        #expect(capture.requests.count == 1)
        #expect(capture.requests.allSatisfy { !$0.text.contains("15005550006") })
        // STATS counts the real session only.
        let stats = try await eventually("the real session projected") { () -> [String: String]? in
            let s = pairs(try await redisCLI(server.port, ["STATS"]))
            return s["issued"] == "1" ? s : nil
        }
        #expect(stats["group"] == "sms" && stats["verified"] == "0", "\(stats)")
    }

    /// A mix of test and real destinations is refused, naming why.
    @Test func anIssueThatMixesTestAndRealDestinationsIsABadArgument() async throws {
        let server = try await TestServer.start(label: "testdest-mix", config: Self.config)
        defer { Task { await server.stop() } }
        let reply = try await redisCLI(server.port, ["ISSUE", "m1", "sms:+15005550006", "email:someone@example.org"])
        #expect(reply.first == "BADARG ISSUE mixes test destinations and real ones", "\(reply)")
        // Both test destinations together are a test session.
        let both = pairs(try await redisCLI(server.port, ["ISSUE", "m2", "sms:+15005550006", "email:QA@example.com"]))
        #expect(both["status"] == "pending")
    }

    /// The configuration: a test destination outside the reserved ranges stops the start, naming the key,
    /// unless it is allowed; the start lists them in one warning.
    @Test func unreservedTestDestinationsAreRefusedUnlessAllowed() throws {
        let unreserved = """
            [[test_destination]]
            destination = "sms:+4915112345678"
            code = "123456"
            """
        #expect {
            try Configuration.parse(unreserved, file: "otpd.toml")
        } throws: { error in
            "\(error)".contains("test_destination[0].destination") && "\(error)".contains("not in a range reserved")
        }
        let allowed = try Configuration.parse(unreserved + "\nallow_unreserved = true", file: "otpd.toml")
        #expect(
            allowed.testDestinationsWarning
                == "test destinations send nothing and verify with their configured code: sms:+4915112345678"
        )
        #expect(try Configuration.parse("", file: "otpd.toml").testDestinationsWarning == nil)
        #expect(throws: (any Error).self) {
            try Configuration.parse(
                "[[test_destination]]\ndestination = \"sms:+15551230000\"\ncode = \"12\"",
                file: "x"
            )
        }
    }
}
