/// How an SMS text travels: its encoding, its length in that encoding, its segments and its bytes.
///
/// GSM-7 (the GSM 03.38 default alphabet) counts septets: the extension-table characters `^{}\[~]|€` and form
/// feed take two (an escape and the character). Any character outside both tables makes the whole text UCS-2,
/// counted in UTF-16 units. One segment holds 160 septets or 70 UTF-16 units; a longer text is split into
/// parts of 153 septets or 67 units (the rest of each part is the concatenation header), never splitting an
/// escape pair or a surrogate pair.
public struct SMSMeasure: Sendable, Hashable {
    /// The two SMS encodings.
    public enum Encoding: String, Sendable, Hashable {
        /// The GSM 03.38 7-bit default alphabet.
        case gsm7 = "GSM-7"
        /// UTF-16 (strictly, UCS-2 extended to surrogate pairs, as phones do).
        case ucs2 = "UCS-2"
    }

    /// The encoding the text needs.
    public var encoding: Encoding
    /// Its length: septets for GSM-7, UTF-16 units for UCS-2.
    public var units: Int
    /// The SMS segments it takes (at least 1).
    public var segments: Int
    /// Its payload in bytes: GSM-7 packed (7 bits a septet, rounded up), UCS-2 2 bytes a unit.
    public var bytes: Int
    /// The first character that keeps it out of GSM-7, when it is UCS-2.
    public var firstNonGSM: Unicode.Scalar?

    /// A single segment's capacity in the text's encoding.
    public var singleSegmentCapacity: Int { encoding == .gsm7 ? 160 : 70 }

    /// Measures a text as an SMS would carry it.
    public init(_ text: String) {
        let scalars = text.unicodeScalars
        if let bad = scalars.first(where: { !Self.basic.contains($0) && !Self.extended.contains($0) }) {
            encoding = .ucs2
            firstNonGSM = bad
            // One entry per character as phones split it: a surrogate pair stays in one part.
            let widths = scalars.map { $0.value > 0xFFFF ? 2 : 1 }
            units = widths.reduce(0, +)
            segments = Self.segments(widths, single: 70, part: 67)
            bytes = units * 2
        } else {
            encoding = .gsm7
            firstNonGSM = nil
            let widths = scalars.map { Self.extended.contains($0) ? 2 : 1 }
            units = widths.reduce(0, +)
            segments = Self.segments(widths, single: 160, part: 153)
            bytes = (units * 7 + 7) / 8
        }
    }

    /// The segments a run of characters of the given widths takes, packing parts without splitting one.
    private static func segments(_ widths: [Int], single: Int, part: Int) -> Int {
        let total = widths.reduce(0, +)
        guard total > single else { return 1 }
        var count = 1
        var used = 0
        for w in widths {
            if used + w > part {
                count += 1
                used = 0
            }
            used += w
        }
        return count
    }

    /// Whether a character is in the GSM-7 default alphabet or its extension table.
    public static func isGSM7(_ scalar: Unicode.Scalar) -> Bool {
        basic.contains(scalar) || extended.contains(scalar)
    }

    /// The GSM 03.38 default alphabet (one septet each).
    static let basic: Set<Unicode.Scalar> = Set(
        ("@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§"
            + "¿abcdefghijklmnopqrstuvwxyzäöñüà").unicodeScalars
    )

    /// The GSM 03.38 extension table (an escape septet, then the character: two septets each).
    static let extended: Set<Unicode.Scalar> = Set("\u{0C}^{}\\[~]|€".unicodeScalars)
}
