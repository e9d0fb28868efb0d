import Crypto
import Foundation
import OTPService

/// The Android SMS Retriever app hash (`android_app_hash`), computed as Google's "Computing your app's hash
/// string" does with `keytool -exportcert ... | xxd -p | tr -d "[:space:]"`, then
/// `printf "%s %s" "$package" "$hex" | sha256sum`: the first 9 bytes of that digest in base64, cut to 11
/// characters.
public enum AndroidAppHash {
    /// Why a certificate file or package name cannot give a hash.
    public struct Failure: Error, Sendable, CustomStringConvertible {
        /// What is wrong, naming the file or the package.
        public var description: String
    }

    /// The app hash of a package signed with the certificate given in DER.
    public static func compute(package: String, certificateDER: [UInt8]) -> String {
        let digest = SHA256.hash(data: Array("\(package) \(Hex.encode(certificateDER))".utf8))
        return String(Data(digest.prefix(9)).base64EncodedString().prefix(11))
    }

    /// The app hash of a package signed with the certificate in a file (PEM or DER, as `keytool -exportcert`
    /// writes it, with or without `-rfc`).
    public static func compute(package: String, certificateFile file: String) throws(Failure) -> String {
        guard isPackageName(package) else {
            throw Failure(description: "'\(package)' is not an Android package name such as com.example.app")
        }
        guard let contents = FileManager.default.contents(atPath: file) else {
            throw Failure(description: "\(file): cannot read the file")
        }
        return compute(package: package, certificateDER: try certificateDER(Array(contents), file: file))
    }

    /// The DER of the (first) certificate of a PEM file, or the file itself when it is one DER certificate.
    public static func certificateDER(_ contents: [UInt8], file: String) throws(Failure) -> [UInt8] {
        let begin = "-----BEGIN CERTIFICATE-----"
        let end = "-----END CERTIFICATE-----"
        let text = String(decoding: contents, as: UTF8.self)
        if let start = text.range(of: begin) {
            guard let stop = text.range(of: end, range: start.upperBound..<text.endIndex),
                let der = Data(
                    base64Encoded: text[start.upperBound..<stop.lowerBound].filter { !$0.isWhitespace },
                    options: []
                ),
                isDERSequence(Array(der))
            else { throw Failure(description: "\(file): the PEM certificate is not valid base64 DER") }
            return Array(der)
        }
        guard isDERSequence(contents) else {
            throw Failure(
                description: "\(file): neither a PEM (-----BEGIN CERTIFICATE-----) nor a DER certificate "
                    + "(export one with keytool -exportcert -alias ALIAS -keystore KEYSTORE -file cert.der)"
            )
        }
        return contents
    }

    /// Whether bytes are exactly one DER SEQUENCE (a certificate's outer structure), its length matching.
    static func isDERSequence(_ b: [UInt8]) -> Bool {
        guard b.count >= 2, b[0] == 0x30 else { return false }
        var length = Int(b[1])
        var header = 2
        if b[1] & 0x80 != 0 {
            let n = Int(b[1] & 0x7F)
            guard (1...4).contains(n), b.count >= 2 + n else { return false }
            length = b[2..<(2 + n)].reduce(0) { $0 << 8 | Int($1) }
            header += n
        }
        return header + length == b.count
    }

    /// Whether a name is an Android package name: two or more dot-separated parts, each a letter, then letters,
    /// digits or `_`.
    static func isPackageName(_ name: String) -> Bool {
        let parts = name.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count >= 2
            && parts.allSatisfy { part in
                guard let first = part.unicodeScalars.first, first.isASCII, first.properties.isAlphabetic else {
                    return false
                }
                return part.unicodeScalars.allSatisfy {
                    $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || $0 == "_")
                }
            }
    }
}
