import Foundation
import OTPService
import Testing

@Suite struct SecretFileTests {
    func freshDirectory() -> String {
        let dir = NSTemporaryDirectory() + "otpd-secret-\(UUID().uuidString.prefix(8))"
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir
    }

    @Test func aGeneratedSecretIsReadableByItsOwnerAloneFromItsCreation() throws {
        let dir = freshDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let (_, generated) = try Secrets.load(hex: nil, file: nil, dataDirectory: dir)
        #expect(generated)
        let mode = try FileManager.default.attributesOfItem(atPath: dir + "/secret")[.posixPermissions] as? Int
        #expect(mode == 0o600)
        #expect(try Secrets.load(hex: nil, file: nil, dataDirectory: dir).generated == false)
    }

    @Test func aSecretFileOthersMayReadIsRefusedNamingTheFile() throws {
        let dir = freshDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        _ = try Secrets.load(hex: nil, file: nil, dataDirectory: dir)
        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: dir + "/secret")
        #expect {
            try Secrets.load(hex: nil, file: nil, dataDirectory: dir)
        } throws: { error in
            "\(error)".contains("\(dir)/secret: the secret file may be read by others (mode 644)")
        }
    }

    @Test func aSecretFileThatIsASymbolicLinkIsRefused() throws {
        let dir = freshDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        _ = try Secrets.load(hex: nil, file: nil, dataDirectory: dir)
        try FileManager.default.createSymbolicLink(atPath: dir + "/link", withDestinationPath: dir + "/secret")
        #expect {
            try Secrets.load(hex: nil, file: dir + "/link", dataDirectory: dir)
        } throws: { error in
            "\(error)".contains("\(dir)/link: cannot open the secret file (a symbolic link is refused too)")
        }
    }

    @Test func instancesStartingTogetherShareOneSecret() async throws {
        let dir = freshDirectory()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let codes = try await withThrowingTaskGroup(of: (String, Bool).self) { group in
            for _ in 0..<8 {
                group.addTask {
                    let (secrets, generated) = try Secrets.load(hex: nil, file: nil, dataDirectory: dir)
                    return (secrets.fingerprint(["probe"]), generated)
                }
            }
            return try await group.reduce(into: [(String, Bool)]()) { $0.append($1) }
        }
        #expect(Set(codes.map(\.0)).count == 1)  // every instance derives the same keys
        #expect(codes.filter(\.1).count == 1)  // exactly one of them created the file
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0 != "secret" }
        #expect(leftovers.isEmpty)
    }
}
