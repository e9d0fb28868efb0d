import OTPDomain
import Testing

@Suite struct IssueRequestParsing {
    let fingerprint: ([String]) -> String = { $0.joined(separator: "|") }

    @Test func optionsParseIntoOneCompleteRequestWithItsFingerprint() throws {
        let r = try IssueRequest.parse(
            ["s1", "sms:+15551234567", "email:a@example.com", "ttl", "300", "PREFER", "email,sms", "CARRIER", "acme"],
            fingerprint: fingerprint
        )
        #expect(r.session == "s1")
        #expect(r.destinations.map(\.channel) == [.sms, .email])
        #expect(r.ttlSeconds == 300)
        #expect(r.prefer == [.email, .sms])
        #expect(r.carrier == "acme")
        #expect(r.fingerprint == r.fingerprintParts.joined(separator: "|"))
        #expect(r.fingerprint.contains("email:a@example.com,sms:+15551234567"))
    }

    @Test func theWireAndDecideShareOneMessagePerRange() throws {
        for (args, option) in [
            (["TTL", "29"], IntegerOption.ttl), (["TTL", "x"], .ttl), (["DIGITS", "11"], .digits),
            (["MAXATTEMPTS", "0"], .maxAttempts),
        ] {
            #expect(throws: Rejection.badArgument(option.message)) {
                try IssueRequest.parse(["s1", "email:a@example.com"] + args, fingerprint: fingerprint)
            }
        }
        #expect(IntegerOption.ttl.message == "TTL must be 30 to 3600 seconds")
        #expect(throws: Rejection.badArgument(IntegerOption.digits.message)) {
            try Given().when(.issue(IssueRequest(session: "s1", destinations: allDestinations, digits: 3)), at: 0)
        }
    }

    @Test func badArgumentsAreNamed() {
        let cases: [([String], String)] = [
            (["s 1", "email:a@example.com"], "session id must be 1 to 128 characters of A-Z a-z 0-9 . _ : -"),
            (["s1"], "ISSUE needs at least one destination"),
            (["s1", "sms:+15551234567", "sms:+15557654321"], "at most one destination per channel (sms given twice)"),
            (["s1", "email:a@example.com", "TTL"], "option 'TTL' needs a value"),
            (["s1", "email:a@example.com", "TTL", "60", "ttl", "60"], "option TTL given twice"),
            (["s1", "email:a@example.com", "COLOUR", "red"], "unknown option 'COLOUR'"),
        ]
        for (args, message) in cases {
            #expect(throws: Rejection.badArgument(message)) { try IssueRequest.parse(args, fingerprint: fingerprint) }
        }
    }
}

@Suite struct StreamIDs {
    @Test func theStoredFormRoundTrips() {
        let id = StreamID(tenant: "acme", session: "a/b:c")
        #expect(id.text == "acme/a/b:c")
        #expect(StreamID(text: id.text) == id)
        #expect(StreamID(text: "no-slash") == nil)
    }
}

@Suite struct CountryCeilingInDecide {
    @Test func aNewSessionOverTheCeilingLosesItsTelephonySteps() throws {
        let d = try Given().when(.issue(request()), at: 0, facts: .init(countryOverCeiling: true))
        guard case .issued(let i) = d.events.first else {
            Issue.record("not issued")
            return
        }
        #expect(i.plan.steps.map(\.channel) == [.email, .push])
        #expect(i.skipped == [.sms, .voice])
        #expect(i.skipReason == "prefix_ceiling")
    }

    @Test func aCountryOverItsSpendLosesItsTelephonyStepsRecordedAsBudget() throws {
        let d = try Given().when(.issue(request()), at: 0, facts: .init(countryOverBudget: true))
        guard case .issued(let i) = d.events.first else {
            Issue.record("not issued")
            return
        }
        #expect(i.plan.steps.map(\.channel) == [.email, .push])
        #expect(i.skipped == [.sms, .voice])
        #expect(i.skipReason == "budget")
        let phoneOnly = IssueRequest(
            session: "s1",
            destinations: [Destination(channel: .sms, address: "+15551234567")],
            fingerprint: "fp"
        )
        #expect(throws: Rejection.rateLimited(retryAfterSeconds: 300)) {
            try Given().when(.issue(phoneOnly), at: 0, facts: .init(countryOverBudget: true))
        }
    }

    @Test func withinEveryCeilingNothingIsSkipped() throws {
        let d = try Given().when(.issue(request()), at: 0)
        guard case .issued(let i) = d.events.first else {
            Issue.record("not issued")
            return
        }
        #expect(i.skipped.isEmpty)
        #expect(i.skipReason == nil)
    }

    @Test func aNewSessionWithOnlyTelephonyIsRefused() {
        let phoneOnly = IssueRequest(
            session: "s1",
            destinations: [Destination(channel: .sms, address: "+15551234567")],
            fingerprint: "fp"
        )
        #expect(throws: Rejection.rateLimited(retryAfterSeconds: 60)) {
            try Given().when(.issue(phoneOnly), at: 0, facts: .init(countryOverCeiling: true))
        }
    }

    @Test func aRepeatedIssueIsAnsweredAsItWas() throws {
        let g = try issuedSession()
        let d = try g.when(.issue(request()), at: 50, facts: .init(countryOverCeiling: true))
        #expect(d.events.isEmpty)
    }
}

@Suite struct ReceiptDetailTests {
    @Test(arguments: [
        ("carrier DLR 000", "carrier DLR 000"),
        ("undeliverable to +1 555-555-0123 (blocked)", "undeliverable to … (blocked)"),
        ("no mailbox ann@example.com here", "no mailbox … here"),
        ("Twilio error 30003", "Twilio error 30003"),
        ("id 15551234567", "id …"),
    ])
    func aReceiptsDetailKeepsNoPhoneNumberOrAddress(detail: String, recorded: String) throws {
        let command = try Arguments.receipt(channel: "sms", outcome: "failed", detail: detail)
        #expect(command == .recordReceipt(channel: .sms, outcome: .failed, detail: recorded))
    }
}
