import OTPDomain
import OTPServer
import OTPService
import OTPTesting
import Testing

@Suite struct ConfigurationTests {
    @Test func theProtocolExampleParses() throws {
        let c = try Configuration.parse(
            """
            listen = "127.0.0.1:7379"
            database_url = "postgresql://user@127.0.0.1:5432/otp"
            app_name = "AcmeApp"
            app_domain = "acme.example"

            [[tenant]]
            name = "acme"
            token = "service-secret"
            roles = ["service", "auditor", "analyst"]

            [[tenant]]
            name = "acme"
            token_sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
            roles = ["gateway"]

            [channel.sms]
            driver = "webhook"
            url = "http://127.0.0.1:9901/sms"

            [channel.email]
            driver = "smtp"
            host = "127.0.0.1"
            port = 2525
            from = "AcmeApp <no-reply@acme.example>"
            tls = "none"
            helo = "otpd.test"

            [[policy]]
            name = "default"
            steps = [
              { channel = "sms",   timeout = "15s", until = "delivered" },
              { channel = "email", timeout = "30s", until = "opened" },
              { channel = "voice", timeout = "45s", until = "verified" },
              { channel = "push" },
            ]

            [[policy]]
            name = "uk"
            match_country = ["+44"]
            variants = [
              { weight = 50, order = ["voice", "sms", "email"] },
              { weight = 50, order = ["sms", "voice", "email"] },
            ]
            steps = [
              { channel = "sms",   timeout = "20s", until = "delivered" },
              { channel = "voice", timeout = "45s", until = "verified" },
              { channel = "email", timeout = "60s", until = "opened" },
            ]

            [limits]
            sends_per_destination_10m = 5
            min_gap_per_channel = "30s"
            prefix_sends_per_minute = 600
            """,
            file: "otpd.toml"
        )
        #expect(c.appName == "AcmeApp")
        #expect(c.tenants.count == 2)
        #expect(c.tenants[0].roles == [.service, .auditor, .analyst])
        #expect(c.channel(.sms).first.driver == "webhook")
        #expect(c.channel(.voice).first.driver == "log")
        var smtp = SMTPSettings(
            host: "127.0.0.1",
            port: 2525,
            from: "AcmeApp <no-reply@acme.example>",
            helo: "otpd.test"
        )
        smtp.security = .none
        smtp.call.timeoutMs = 15_000
        #expect(c.channels[.email] == ChannelProviders(single: .smtp(smtp)))
        #expect(c.policies.map(\.name) == ["default", "uk"])
        #expect(c.policies[0].steps[0] == Step(channel: .sms, timeoutMs: 15_000, until: .delivered))
        #expect(c.policies[0].steps[3] == Step(channel: .push, timeoutMs: nil, until: .delivered))
        #expect(c.policies[1].matchCountry == ["+44"])
        #expect(c.policies[1].variants.map(\.order) == [[.voice, .sms, .email], [.sms, .voice, .email]])
        #expect(c.limits.minGapPerChannelMs == 30_000)
    }

    @Test func aChannelListsItsProvidersInOrderWithItsBreaker() throws {
        let c = try Configuration.parse(
            """
            [channel.sms]
            providers = ["twilio_us", "webhook_eu"]
            breaker_failures = 3
            breaker_cooldown = "1m"

            [provider.twilio_us]
            driver = "twilio"
            account_sid = "AC00000000000000000000000000000000"
            auth_token = "t"
            from = "+15017122661"
            retries = 2

            [provider.webhook_eu]
            driver = "webhook"
            url = "https://gw.example/sms"
            """
        )
        let sms = c.channel(.sms)
        #expect(sms.providers.map(\.name) == ["twilio_us", "webhook_eu"])
        #expect(sms.providers.map(\.settings.driver) == ["twilio", "webhook"])
        #expect(sms.providers[0].settings.call?.retries == 2)
        var breaker = BreakerSettings()
        breaker.failures = 3
        breaker.cooldownMs = 60_000
        #expect(sms.breaker == breaker)
        #expect(c.channel(.email).breaker == nil, "the single-provider form has no breaker")
        #expect(c.channel(.email).providers.map(\.name) == ["log"])
    }

    @Test func pricesAndSpendCapsParse() throws {
        let c = try Configuration.parse(
            """
            [prices]
            sms = { default = 0.0079, "+44" = 0.04 }
            voice = { "+1" = "0.0140" }

            [limits]
            spend_per_day = 250
            prefix_spend_per_hour = 12.5
            """
        )
        #expect(c.prices.price(.sms, country: "+44") == Money(micros: 40_000))
        #expect(c.prices.price(.sms, country: "+33") == Money(micros: 7_900))
        #expect(c.prices.price(.voice, country: "+1") == Money(micros: 14_000))
        #expect(c.prices.price(.voice, country: "+44") == nil)
        #expect(c.limits.spendPerDay == Money(micros: 250_000_000))
        #expect(c.limits.prefixSpendPerHour == Money(micros: 12_500_000))
        #expect(try Configuration.parse("").limits.spendPerDay == nil, "no cap by default")
    }

    @Test func anEmptyFileGivesTheDevelopmentDefaults() throws {
        let c = try Configuration.parse("")
        #expect(c.listen.description == "127.0.0.1:7379")
        #expect(c.tenants.isEmpty)
        #expect(c.printsCodes)
        #expect(PolicyBook(policies: c.policies).policies == [Policy.builtInDefault])
        #expect(!c.groupCommit, "one transaction per command unless group_commit is set")
        #expect(try Configuration.parse("group_commit = true").groupCommit)
    }

    @Test(arguments: [
        ("listen = 7379", "otpd.toml: listen: must be a string"),
        ("bogus = 1", "otpd.toml: bogus: unknown key"),
        (
            "[[tenant]]\nname = \"a\"\nroles = [\"boss\"]\ntoken = \"t\"",
            "otpd.toml: tenant[0].roles: unknown role 'boss'"
        ),
        ("[[tenant]]\nname = \"a\"\nroles = [\"service\"]", "otpd.toml: tenant[0]: needs token or token_sha256"),
        ("[channel.fax]\ndriver = \"log\"", "otpd.toml: channel.fax: unknown channel 'fax' (sms, email, voice, push)"),
        (
            "[channel.sms]\ndriver = \"smtp\"\nhost = \"h\"\nfrom = \"f\"",
            "otpd.toml: channel.sms.driver: smtp sends e-mail only"
        ),
        ("[channel.sms]\ndriver = \"webhook\"", "otpd.toml: channel.sms.url: is required for webhook"),
        (
            "[[policy]]\nname = \"default\"\nsteps = [{ channel = \"sms\", timeout = \"soon\" }]",
            "otpd.toml: policy[0].steps[0].timeout: must be a duration such as \"500ms\", \"15s\" or \"2m\""
        ),
        (
            "[[policy]]\nname = \"x\"\nsteps = [{ channel = \"sms\" }]",
            "otpd.toml: policy: no policy is named \"default\""
        ),
        (
            "[[policy]]\nname = \"default\"\nmatch_country = [\"44\"]\nsteps = [{ channel = \"sms\" }]",
            "otpd.toml: policy[0].match_country: '44' is not a country calling code such as \"+44\""
        ),
        (
            "[limits]\nmin_gap_per_channel = \"x\"",
            "otpd.toml: limits.min_gap_per_channel: must be a duration such as \"500ms\", \"15s\" or \"2m\""
        ),
        ("listen = \"nowhere\"", "otpd.toml: listen: must be HOST:PORT"),
        ("[channel.sms]\ndriver = \"log\"\nurl = \"http://x/\"", "otpd.toml: channel.sms.url: unknown key"),
        (
            "[channel.sms]\ndriver = \"webhook\"\nurl = \"http://x/\"\nhost = \"h\"",
            "otpd.toml: channel.sms.host: unknown key"
        ),
        ("database_pool_size = 0", "otpd.toml: database_pool_size: must be between 1 and 64"),
        ("group_commit = \"yes\"", "otpd.toml: group_commit: must be true or false"),
        (
            "[limits]\nmin_gap_per_channel = 9223372036854775807",
            "otpd.toml: limits.min_gap_per_channel: must be a duration such as \"500ms\", \"15s\" or \"2m\""
        ),
        (
            "[[policy]]\nname = \"default\"\nsteps = [{ channel = \"sms\", timeout = \"25h\" }]",
            "otpd.toml: policy[0].steps[0].timeout: must be at most 24h"
        ),
        (
            "[channel.sms]\nproviders = [\"a\"]",
            "otpd.toml: channel.sms.providers: names 'a', which has no [provider.a] table"
        ),
        (
            "[channel.sms]\nproviders = [\"a\", \"a\"]\n[provider.a]\ndriver = \"log\"",
            "otpd.toml: channel.sms.providers: names 'a' twice"
        ),
        ("[provider.a]\ndriver = \"log\"", "otpd.toml: provider.a: is not in any channel's providers = [...]"),
        (
            "[channel.sms]\nproviders = [\"a\"]\n[channel.voice]\nproviders = [\"a\"]\n[provider.a]\ndriver = \"log\"",
            "otpd.toml: channel.voice.providers: names 'a', which another channel lists; give each channel its own [provider.NAME]"
        ),
        (
            "[channel.email]\nproviders = [\"t\"]\n[provider.t]\ndriver = \"twilio\"",
            "otpd.toml: provider.t.driver: twilio sends sms and voice only"
        ),
        (
            "[channel.sms]\nproviders = [\"a\"]\nurl = \"http://x/\"\n[provider.a]\ndriver = \"log\"",
            "otpd.toml: channel.sms.url: unknown key"
        ),
        (
            "[channel.sms]\ndriver = \"log\"\nbreaker_failures = 3",
            "otpd.toml: channel.sms.breaker_failures: a circuit breaker needs providers = [...]"
        ),
        (
            "[channel.sms]\nproviders = [\"a\"]\nbreaker_cooldown = \"10ms\"\n[provider.a]\ndriver = \"log\"",
            "otpd.toml: channel.sms.breaker_cooldown: must be at least 1s"
        ),
        (
            "[prices]\nsms = { default = -1 }",
            "otpd.toml: prices.sms.default: must be an amount such as 0.0079 (at least 0, at most six decimals)"
        ),
        (
            "[prices]\nsms = { \"44\" = 0.04 }",
            "otpd.toml: prices.sms.44: '44' is not default or a country calling code such as \"+44\""
        ),
        ("[prices]\nfax = { default = 1 }", "otpd.toml: prices.fax: unknown channel 'fax' (sms, email, voice, push)"),
        (
            "[limits]\nspend_per_day = 10",
            "otpd.toml: limits.spend_per_day: a spend cap needs [prices] (what a message costs per channel and country)"
        ),
        (
            "[channel.sms]\nproviders = [\"test\"]\n[provider.test]\ndriver = \"log\"",
            "otpd.toml: provider.test: 'test' names the test destinations' provider"
        ),
    ])
    func badConfigurationNamesTheFileTheKeyAndTheProblem(text: String, message: String) {
        #expect {
            try Configuration.parse(text, file: "otpd.toml")
        } throws: { error in
            (error as? ConfigurationError)?.description == message
        }
    }

    @Test func aTOMLSyntaxErrorNamesTheLine() {
        #expect {
            try Configuration.parse("listen = \"a\"\n[[tenant\n", file: "otpd.toml")
        } throws: { error in
            (error as? ConfigurationError)?.description.contains("line 2") == true
        }
    }

    @Test func durations() {
        #expect(DurationText.milliseconds("500ms") == 500)
        #expect(DurationText.milliseconds("15s") == 15_000)
        #expect(DurationText.milliseconds("2m") == 120_000)
        #expect(DurationText.milliseconds("7") == 7_000)
        #expect(DurationText.milliseconds("-1s") == nil)
        #expect(DurationText.milliseconds("s") == nil)
        #expect(DurationText.milliseconds("9223372036854775807h") == nil)  // overflows: refused, not a trap
        #expect(DurationText.milliseconds("9223372036854775807") == nil)
    }

    @Test func receiptsThatCannotComeBackAreWarnedAbout() throws {
        let twilio = """
            [channel.sms]
            driver = "twilio"
            account_sid = "AC0123456789abcdef0123456789abcdef"
            auth_token = "t"
            from = "+15017122661"
            """
        let none = try Configuration.parse(twilio).receiptWarnings
        #expect(none.count == 1 && none[0].hasPrefix("no http_listen: sms cannot report delivery"))
        let bound = try Configuration.parse("http_listen = \"0.0.0.0:7380\"\n" + twilio).receiptWarnings
        #expect(bound.count == 1 && bound[0].hasPrefix("no public_url: sms callbacks"))
        let good = "http_listen = \"0.0.0.0:7380\"\npublic_url = \"https://otp.acme.example\"\n" + twilio
        #expect(try Configuration.parse(good).receiptWarnings.isEmpty)
        #expect(try Configuration.parse("").receiptWarnings.isEmpty)  // the log driver posts no receipts
        let textOnly = """
            http_listen = "10.0.0.5:7380"

            [channel.email]
            driver = "smtp"
            host = "127.0.0.1"
            from = "a@acme.example"
            tls = "none"

            [templates.email.de]
            text = "Ihr Code: {code}"
            """
        let warnings = try Configuration.parse(textOnly).receiptWarnings
        #expect(warnings.count == 1 && warnings[0].hasPrefix("templates.email.de has no html"), "\(warnings)")
    }

    @Test(arguments: [
        (
            "[channel.sms]\ndriver = \"twilio\"\naccount_sid = \"AC0123456789abcdef0123456789abcdef\"\nauth_token = \"t\"\nfrom = \"5017122661\"",
            "otpd.toml: channel.sms.from: must be an E.164 number"
        ),
        (
            "[channel.voice]\ndriver = \"twilio\"\naccount_sid = \"AC0123456789abcdef0123456789abcdef\"\nauth_token = \"t\"\nfrom = \"AcmeApp\"",
            "otpd.toml: channel.voice.from: must be an E.164 number such as \"+15017122661\" (a call"
        ),
        (
            "[channel.sms]\ndriver = \"twilio\"\naccount_sid = \"AC123\"\nauth_token = \"t\"\nfrom = \"AcmeApp\"",
            "otpd.toml: channel.sms.account_sid: must be AC followed by 32 hex digits"
        ),
        (
            "[channel.sms]\ndriver = \"twilio\"\naccount_sid = \"AC0123456789abcdef0123456789abcdef\"\nauth_token_file = \"/nonexistent\"\nfrom = \"AcmeApp\"",
            "otpd.toml: channel.sms.auth_token_file: cannot read '/nonexistent'"
        ),
        (
            "[channel.push]\ndriver = \"apns\"\nteam_id = \"T\"\nkey_id = \"KEY1234567\"\nkey_file = \"k\"\ntopic = \"t\"",
            "otpd.toml: channel.push.team_id: must be the 10-character id"
        ),
        (
            "[channel.push]\ndriver = \"fcm\"\nproject_id = \"p\"\nservice_account_file = \"/nonexistent.json\"",
            "otpd.toml: channel.push.service_account_file: cannot read '/nonexistent.json'"
        ),
        (
            "[channel.email]\ndriver = \"smtp\"\nhost = \"h\"\nfrom = \"f@x.example\"\ntls = \"none\"\nusername = \"u\"\npassword = \"p\"",
            "otpd.toml: channel.email.tls: \"none\" never sends AUTH"
        ),
        (
            "[channel.email]\ndriver = \"smtp\"\nhost = \"h\"\nfrom = \"f@x.example\"\ntls = \"sometimes\"",
            "otpd.toml: channel.email.tls: must be starttls, implicit or none"
        ),
        ("[channel.push]\ndriver = \"twilio\"", "otpd.toml: channel.push.driver: twilio sends sms and voice only"),
    ])
    func aProviderKeyThatIsMissingOrMalformedStopsTheStartNamingIt(text: String, message: String) {
        do {
            _ = try Configuration.parse(text, file: "otpd.toml")
            Issue.record("parsed: \(text)")
        } catch {
            #expect("\(error)".hasPrefix(message), "\(error)")
        }
    }
}
