import OTPDomain
import Testing

@Suite struct TestDestinationRules {
    let tests = TestDestinations([
        .init(destination: Destination(channel: .sms, address: "+15005550006"), code: "4242"),
        .init(destination: Destination(channel: .email, address: "qa@example.com"), code: "9999"),
    ])

    @Test func aSessionOfTestDestinationsIsIssuedWithTheConfiguredCodeAndMarkedTest() throws {
        var r = request()
        r.destinations = [Destination(channel: .sms, address: "+15005550006")]
        var ctx = context(0)
        ctx.testDestinations = tests
        let d = try SessionDecider.decide(.issue(r), state: SessionState(), context: ctx)
        guard case .issued(let i) = d.events.first else {
            Issue.record("no issued event")
            return
        }
        #expect(i.test && i.digits == 4 && i.codeSeed.isEmpty)
        #expect(i.codeDigest == FixedCodes().digest(code: "4242", stream: ctx.stream))
    }

    @Test func realDestinationsAreUntouchedAndAMixIsRefused() throws {
        #expect(try tests.code(for: [Destination(channel: .sms, address: "+15551230000")]) == nil)
        #expect(try tests.code(for: [Destination(channel: .email, address: "QA@Example.com")]) == "9999")
        #expect(throws: Rejection.badArgument("ISSUE mixes test destinations and real ones")) {
            try tests.code(for: [
                Destination(channel: .sms, address: "+15005550006"),
                Destination(channel: .email, address: "someone@example.org"),
            ])
        }
    }

    @Test func reservedRanges() {
        let reserved = [
            "sms:+15551230000", "voice:+15005550006", "sms:+447700900123", "email:a@example.com",
            "email:b@qa.test", "email:c@x.invalid",
        ]
        let real = ["sms:+4915112345678", "sms:+15125550100", "email:a@example.org", "push:abcdef0123456789"]
        for d in reserved { #expect(TestDestinations.isReserved(try! Destination.parse(d)), "\(d)") }
        for d in real { #expect(!TestDestinations.isReserved(try! Destination.parse(d)), "\(d)") }
    }
}
