/// E.164 country calling codes: the ITU plan's 1-, 2- and 3-digit prefixes.
public enum CountryCode {
    private static let oneDigit: Set<String> = ["1", "7"]
    private static let twoDigit: Set<String> = [
        "20", "27", "30", "31", "32", "33", "34", "36", "39", "40", "41", "43", "44", "45", "46", "47", "48", "49",
        "51", "52", "53", "54", "55", "56", "57", "58", "60", "61", "62", "63", "64", "65", "66", "81", "82", "84",
        "86", "90", "91", "92", "93", "94", "95", "98",
    ]

    /// The country calling code of an E.164 number, written `+44`.
    public static func of(_ e164: String) -> String {
        let digits = e164.dropFirst()
        if let one = digits.first.map(String.init), oneDigit.contains(one) { return "+" + one }
        let two = String(digits.prefix(2))
        if twoDigit.contains(two) { return "+" + two }
        return "+" + String(digits.prefix(3))
    }
}
