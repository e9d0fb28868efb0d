import Foundation

/// A throwaway CA, a server certificate it signed for 127.0.0.1 and localhost, and a client certificate, made
/// with the `openssl` CLI in a temporary directory.
public struct TLSFiles: Sendable {
    /// The directory holding the files.
    public let directory: String
    /// The CA's certificate (PEM): the trust root of the others.
    public var ca: String { directory + "/ca.pem" }
    /// The server certificate for 127.0.0.1 and localhost (PEM).
    public var cert: String { directory + "/cert.pem" }
    /// The server certificate's key (PEM).
    public var key: String { directory + "/key.pem" }
    /// A key that matches no certificate (PEM).
    public var otherKey: String { directory + "/other-key.pem" }
    /// A client certificate the CA signed (PEM).
    public var clientCert: String { directory + "/client.pem" }
    /// The client certificate's key (PEM).
    public var clientKey: String { directory + "/client-key.pem" }

    /// The `[tls_*]` keys of a configuration that uses these files.
    public var config: String { "tls_cert = \"\(cert)\"\ntls_key = \"\(key)\"\n" }

    /// Makes a fresh set in a temporary directory; `ipAddress: false` leaves 127.0.0.1 out of the server
    /// certificate's names (it then names localhost only).
    public static func make(ipAddress: Bool = true) async throws -> TLSFiles {
        let dir = NSTemporaryDirectory() + "otpd-tls-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        let files = TLSFiles(directory: dir)
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        try await openssl(
            ["req", "-x509"] + ec + ["-keyout", dir + "/ca-key.pem", "-out", files.ca, "-days", "2"]
                + ["-subj", "/CN=otpd test CA", "-addext", "basicConstraints=critical,CA:TRUE"]
                + ["-addext", "keyUsage=critical,keyCertSign,cRLSign"]
        )
        for (name, cert, key, usage) in [
            (
                "localhost", files.cert, files.key,
                "subjectAltName=\(ipAddress ? "IP:127.0.0.1," : "")DNS:localhost\nextendedKeyUsage=serverAuth"
            ),
            ("otpd test client", files.clientCert, files.clientKey, "extendedKeyUsage=clientAuth"),
        ] {
            let csr = dir + "/request.csr"
            let ext = dir + "/request.ext"
            try "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\(usage)\n"
                .write(toFile: ext, atomically: true, encoding: .utf8)
            try await openssl(["req", "-new"] + ec + ["-keyout", key, "-out", csr, "-subj", "/CN=\(name)"])
            try await openssl(
                ["x509", "-req", "-in", csr, "-CA", files.ca, "-CAkey", dir + "/ca-key.pem", "-set_serial", "2"]
                    + ["-days", "2", "-out", cert, "-extfile", ext]
            )
        }
        try await openssl([
            "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", files.otherKey,
        ])
        return files
    }

    private static func openssl(_ arguments: [String]) async throws {
        let r = try await run(["openssl"] + arguments)
        guard r.status == 0 else { throw TestSupportError("openssl \(arguments.first ?? "") failed: \(r.stderr)") }
    }

    /// Deletes the files.
    public func remove() {
        try? FileManager.default.removeItem(atPath: directory)
    }
}
