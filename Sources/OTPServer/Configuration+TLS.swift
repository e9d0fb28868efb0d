import Foundation
import NIOCore
import NIOSSL
import OTPService

extension Configuration {
    /// The RESP port's TLS context from `tls_cert`, `tls_key` and `tls_client_ca`, or nil when TLS is off.
    ///
    /// It reads the files, so it blocks: the application calls it in its prelude, off the cooperative pool. A
    /// missing or unreadable file, a file without a PEM certificate or key, or a key that is not the
    /// certificate's is a `ConfigurationError` naming the key and the file, so the server does not start.
    public func makeTLSContext() throws(ConfigurationError) -> NIOSSLContext? {
        guard let certPath = tlsCert, let keyPath = tlsKey else { return nil }
        let chain = try certificates("tls_cert", certPath)
        let keyBytes = try contents("tls_key", keyPath)
        let keyText = String(decoding: keyBytes, as: UTF8.self)
        if keyText.contains("BEGIN ENCRYPTED PRIVATE KEY") || keyText.contains("Proc-Type: 4,ENCRYPTED") {
            throw tlsError("tls_key", "\(keyPath) is encrypted; otpd needs the key without a passphrase")
        }
        let key: NIOSSLPrivateKey
        do { key = try NIOSSLPrivateKey(bytes: keyBytes, format: .pem) } catch {
            throw tlsError("tls_key", "\(keyPath) holds no PEM private key")
        }
        var tls = TLSConfiguration.makeServerConfiguration(
            certificateChain: chain.map { .certificate($0) },
            privateKey: .privateKey(key)
        )
        // TLS 1.0 and 1.1 are deprecated (RFC 8996); every client that speaks TLS to a Redis port has 1.2.
        tls.minimumTLSVersion = .tlsv12
        // On shutdown, a client that does not answer close_notify is cut off after 1 s instead of 5.
        tls.shutdownTimeout = .seconds(1)
        if let caPath = tlsClientCA {
            tls.trustRoots = .certificates(try certificates("tls_client_ca", caPath))
            tls.certificateVerification = .noHostnameVerification
            tls.sendCANameList = true
        }
        do {
            return try NIOSSLContext(configuration: tls)
        } catch NIOSSLError.failedToLoadPrivateKey {
            throw tlsError("tls_key", "\(keyPath) is not the private key of the certificate in \(certPath)")
        } catch {
            throw tlsError("tls_cert", "\(certPath) and \(keyPath) cannot be used for TLS (\(error))")
        }
    }

    private func tlsError(_ key: String, _ message: String) -> ConfigurationError {
        ConfigurationError(file: file, key: key, message: message)
    }

    /// The bytes of a file a TLS key names, or an error saying why it cannot be read.
    private func contents(_ key: String, _ path: String) throws(ConfigurationError) -> [UInt8] {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw tlsError(key, "\(path) does not exist")
        }
        guard !isDirectory.boolValue else { throw tlsError(key, "\(path) is a directory, not a PEM file") }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw tlsError(key, "\(path) cannot be read (check its permissions)")
        }
        return Array(data)
    }

    /// Every PEM certificate in a file, at least one.
    private func certificates(_ key: String, _ path: String) throws(ConfigurationError) -> [NIOSSLCertificate] {
        let bytes = try contents(key, path)
        guard let chain = try? NIOSSLCertificate.fromPEMBytes(bytes), !chain.isEmpty else {
            throw tlsError(key, "\(path) holds no PEM certificate")
        }
        return chain
    }
}
