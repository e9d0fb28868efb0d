import OTPDomain
import Testing

@Suite struct MoneyTests {
    @Test(arguments: [
        ("0.0079", 7_900), ("-0.00750", 7_500), ("2", 2_000_000), ("0.5", 500_000), (".25", 250_000),
        ("0.0075000000", 7_500), ("12.000001", 12_000_001),
    ])
    func decimalsParseExactly(text: String, micros: Int64) {
        #expect(Money(decimal: text)?.micros == micros)
    }

    @Test(arguments: ["", "-", "abc", "1.2.3", "0.0000001", "1e-3", "0,5", "١٢"])
    func anythingElseIsNotAnAmount(text: String) {
        #expect(Money(decimal: text) == nil)
    }

    @Test func amountsPrintShortAndWithFourDecimals() {
        #expect(Money(micros: 7_900).description == "0.0079")
        #expect(Money(micros: 2_000_000).description == "2")
        #expect(Money(micros: 140_000).fourDecimals == "0.1400")
        #expect(Money(micros: 7_950).fourDecimals == "0.0080", "half up")
        #expect(Money(micros: 7_949).fourDecimals == "0.0079")
        #expect(Money.fourDecimals(100_000, dividedBy: 3) == "0.0333")
        #expect(Money.fourDecimals(100_000, dividedBy: 0) == "0.0000")
    }

    @Test func aPriceIsTheCountrysElseTheChannelsDefault() {
        let prices = Prices([
            .sms: Prices.Table(default: Money(micros: 7_900), byCountry: ["+44": Money(micros: 40_000)])
        ])
        #expect(prices.price(.sms, country: "+44") == Money(micros: 40_000))
        #expect(prices.price(.sms, country: "+1") == Money(micros: 7_900))
        #expect(prices.price(.sms, country: nil) == Money(micros: 7_900))
        #expect(prices.price(.email, country: "+44") == nil, "an unlisted channel is unpriced")
    }
}
