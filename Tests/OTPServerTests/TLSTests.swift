import Foundation
import Logging
import OTPServer
import OTPService
import OTPTesting
import PostgresTesting
import Synchronization
import Testing

/// Keeps every log record, at every level, for a test to inspect.
final class LogRecords: Sendable {
    struct Record {
        var level: Logger.Level
        var text: String
    }
    private let records = Mutex<[Record]>([])

    var all: [Record] { records.withLock { $0 } }

    /// A logger at trace level whose records land here.
    var logger: Logger {
        var l = Logger(label: "otpd-tls-test") { _ in Handler(records: self) }
        l.logLevel = .trace
        return l
    }

    struct Handler: LogHandler {
        let records: LogRecords
        var metadata: Logger.Metadata = [:]
        var logLevel: Logger.Level = .trace

        subscript(metadataKey key: String) -> Logger.Metadata.Value? {
            get { metadata[key] }
            set { metadata[key] = newValue }
        }

        func log(event: LogEvent) {
            let all = metadata.merging(event.metadata ?? [:]) { $1 }
            records.records.withLock { $0.append(Record(level: event.level, text: "\(event.message) \(all)")) }
        }
    }
}

/// TLS on the RESP port: with `tls_cert` and `tls_key` the port speaks TLS only, checked with redis-cli, Python's
/// ssl module and plain sockets.
@Suite(.serialized, .heavy) struct TLSTests {
    @Test func redisCLIWithTheCAGetsPongAndASessionRunsOverTLS() async throws {
        let files = try await TLSFiles.make()
        defer { files.remove() }
        let server = try await TestServer.start(label: "tls", config: files.config + tenantsConfig)
        defer { Task { await server.stop() } }
        let tls = ["--tls", "--cacert", files.ca, "--user", "acme", "--pass", "service-secret", "--no-auth-warning"]
        #expect(try await redisCLI(server.port, ["PING"], extra: ["--tls", "--cacert", files.ca]) == ["PONG"])
        let issued = pairs(try await redisCLI(server.port, ["ISSUE", "t1", "sms:+15551234567"], extra: tls))
        #expect(issued["session"] == "t1")
        #expect(issued["status"] == "pending")
        let code = try await server.code(session: "t1")
        let verified = pairs(try await redisCLI(server.port, ["VERIFY", "t1", code], extra: tls))
        #expect(verified["result"] == "verified")
        let status = pairs(try await redisCLI(server.port, ["STATUS", "t1"], extra: tls))
        #expect(status["status"] == "verified")
        #expect(status["version"] == "3")
        let py = try await python(
            server.port,
            """
            import os, redis
            r = redis.Redis(port=int(os.environ['PORT']), ssl=True, ssl_ca_certs=os.environ['CA'],
                            username='acme', password='service-secret', decode_responses=True)
            print(r.ping(), r.execute_command('STATUS', 't1')['status'])
            """,
            env: ["CA": files.ca]
        )
        #expect(py == "True verified\n")
        // The name in the certificate works too, and a wrong token is refused over TLS as in clear.
        let byName = try await run(
            ["redis-cli", "-h", "localhost", "-p", String(server.port), "--tls", "--cacert", files.ca, "PING"]
        )
        #expect(byName.stdout == "PONG\n", "\(byName.stderr)")
        let wrong = try await run(
            ["redis-cli", "-p", String(server.port), "--tls", "--cacert", files.ca, "--user", "acme", "--pass", "no"]
                + ["--no-auth-warning", "STATUS", "t1"]
        )
        #expect(wrong.stderr.contains("AUTH failed: NOAUTH invalid credentials"), "\(wrong.stderr)")
        #expect(wrong.stdout.contains("NOAUTH authentication required"), "\(wrong.stdout)")
    }

    /// A client that does not speak TLS gets no reply; only its connection ends, nothing is logged above debug,
    /// and an open TLS connection and new ones keep their service.
    @Test func aPlainTextClientIsRefusedAndTLSClientsKeepWorking() async throws {
        let files = try await TLSFiles.make()
        defer { files.remove() }
        let records = LogRecords()
        let server = try await TestServer.start(
            label: "tlsplain",
            config: files.config + tenantsConfig,
            logger: records.logger
        )
        defer { Task { await server.stop() } }
        let out = try await python(
            server.port,
            """
            import os, socket, ssl, subprocess
            port = int(os.environ['PORT'])
            ctx = ssl.create_default_context(cafile=os.environ['CA'])
            kept = ctx.wrap_socket(socket.create_connection(('127.0.0.1', port), timeout=5),
                                   server_hostname='127.0.0.1')
            kept.sendall(b'AUTH acme service-secret\\r\\n')
            print(kept.recv(100))
            def plain(payload):
                s = socket.create_connection(('127.0.0.1', port), timeout=5)
                data = b''
                try:
                    s.sendall(payload)
                    while True:
                        chunk = s.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                except (ConnectionResetError, BrokenPipeError):
                    pass
                except socket.timeout:
                    return 'still open'
                s.close()
                return 'closed, PONG' if b'PONG' in data else 'closed'
            print(plain(b'PING\\r\\n'))
            print(plain(b'*1\\r\\n$4\\r\\nPING\\r\\n'))
            print(plain(b'AUTH acme service-secret\\r\\n'))
            print(plain(bytes(range(256)) * 64))
            print(plain(b'\\x16\\x03\\x01\\x00\\x05hello'))
            cli = subprocess.run(['redis-cli', '-p', str(port), 'PING'], capture_output=True, text=True, timeout=10)
            print('redis-cli', cli.returncode != 0 or 'PONG' not in cli.stdout)
            kept.sendall(b'PING\\r\\n')
            print(kept.recv(100))
            """,
            env: ["CA": files.ca]
        )
        #expect(
            out.split(separator: "\n").map(String.init) == [
                "b'+OK\\r\\n'", "closed", "closed", "closed", "closed", "closed", "redis-cli True", "b'+PONG\\r\\n'",
            ],
            "\(out)"
        )
        #expect(try await redisCLI(server.port, ["PING"], extra: ["--tls", "--cacert", files.ca]) == ["PONG"])
        let loud = records.all.filter { $0.level > .debug }
        #expect(loud.isEmpty, "\(loud.map(\.text))")
        let secret = records.all.filter { $0.text.contains("service-secret") }
        #expect(secret.isEmpty, "\(secret.map(\.text))")
        #expect(records.all.contains { $0.level == .debug && $0.text.contains("connection ended") })
    }

    @Test func redisCLIWithoutTheCAFailsVerification() async throws {
        let files = try await TLSFiles.make()
        defer { files.remove() }
        let server = try await TestServer.start(label: "tlsnoca", config: files.config)
        defer { Task { await server.stop() } }
        let r = try await run(["redis-cli", "-p", String(server.port), "--tls", "PING"])
        #expect(r.status != 0)
        #expect(!r.stdout.contains("PONG"))
        #expect(r.stderr.contains("certificate verify failed"), "\(r.stderr)")
        #expect(try await redisCLI(server.port, ["PING"], extra: ["--tls", "--cacert", files.ca]) == ["PONG"])
    }

    /// TLS 1.3 by default, TLS 1.2 when the client caps it there, and TLS 1.1 refused by the server (the Python
    /// client is allowed to offer it, so the refusal is the server's).
    @Test func tls13IsNegotiatedAndNothingBelowTLS12IsAccepted() async throws {
        let files = try await TLSFiles.make()
        defer { files.remove() }
        let server = try await TestServer.start(label: "tlsversion", config: files.config)
        defer { Task { await server.stop() } }
        let out = try await python(
            server.port,
            """
            import os, socket, ssl, warnings
            warnings.simplefilter('ignore')
            port = int(os.environ['PORT'])
            def attempt(low=None, high=None):
                ctx = ssl.create_default_context(cafile=os.environ['CA'])
                if low:
                    ctx.minimum_version = low
                    ctx.set_ciphers('DEFAULT:@SECLEVEL=0')
                if high:
                    ctx.maximum_version = high
                try:
                    with socket.create_connection(('127.0.0.1', port), timeout=5) as raw:
                        with ctx.wrap_socket(raw, server_hostname='127.0.0.1') as s:
                            s.sendall(b'PING\\r\\n')
                            return s.version() + ' ' + s.recv(100).decode().strip()
                except ssl.SSLError as e:
                    return 'refused ' + str(e.reason)
            print(attempt())
            print(attempt(high=ssl.TLSVersion.TLSv1_2))
            print(attempt(low=ssl.TLSVersion.TLSv1, high=ssl.TLSVersion.TLSv1_1))
            """,
            env: ["CA": files.ca]
        )
        #expect(
            out.split(separator: "\n").map(String.init) == [
                "TLSv1.3 +PONG", "TLSv1.2 +PONG", "refused TLSV1_ALERT_PROTOCOL_VERSION",
            ],
            "\(out)"
        )
    }

    /// A connection that opens the TLS port and never completes its handshake is closed after the request
    /// timeout.
    @Test func aStalledHandshakeIsCutOff() async throws {
        let files = try await TLSFiles.make()
        defer { files.remove() }
        let server = try await TestServer.start(
            label: "tlsstall",
            config: files.config,
            requestTimeout: .milliseconds(500)
        )
        defer { Task { await server.stop() } }
        let out = try await python(
            server.port,
            """
            import os, socket, time
            port = int(os.environ['PORT'])
            for payload in [b'', b'\\x16\\x03\\x01\\x02\\x00\\x01']:
                s = socket.create_connection(('127.0.0.1', port), timeout=10)
                start = time.monotonic()
                s.sendall(payload)
                try:
                    while s.recv(100):
                        pass
                    print('closed', time.monotonic() - start < 5)
                except ConnectionResetError:
                    print('closed', time.monotonic() - start < 5)
                except socket.timeout:
                    print('still open')
            """
        )
        #expect(out == "closed True\nclosed True\n", "\(out)")
        #expect(try await redisCLI(server.port, ["PING"], extra: ["--tls", "--cacert", files.ca]) == ["PONG"])
    }

    /// A graceful shutdown closes an idle TLS connection promptly (close_notify, then the socket) and ends.
    @Test func shutdownClosesAnIdleTLSConnection() async throws {
        let files = try await TLSFiles.make()
        defer { files.remove() }
        let server = try await TestServer.start(label: "tlsshutdown", config: files.config)
        let ready = files.directory + "/ready"
        async let client = python(
            server.port,
            """
            import os, socket, ssl
            ctx = ssl.create_default_context(cafile=os.environ['CA'])
            s = ctx.wrap_socket(socket.create_connection(('127.0.0.1', int(os.environ['PORT'])), timeout=20),
                                server_hostname='127.0.0.1')
            s.sendall(b'PING\\r\\n')
            print(s.recv(100))
            open(os.environ['READY'], 'w').close()
            try:
                print('closed' if s.recv(100) == b'' else 'data')
            except (ssl.SSLError, ConnectionResetError) as e:
                print('closed', type(e).__name__)
            """,
            env: ["CA": files.ca, "READY": ready]
        )
        _ = try await eventually("the client's PING answered") {
            FileManager.default.fileExists(atPath: ready) ? true : nil
        }
        let began = ContinuousClock.now
        await server.stop()
        let took = ContinuousClock.now - began
        #expect(try await client == "b'+PONG\\r\\n'\nclosed\n")
        #expect(took < .seconds(3), "shutdown took \(took)")
    }

    /// With `tls_client_ca`, a client without a certificate signed by that CA is refused at the handshake.
    @Test func tlsClientCARequiresAClientCertificate() async throws {
        let files = try await TLSFiles.make()
        defer { files.remove() }
        let server = try await TestServer.start(
            label: "tlsmutual",
            config: files.config + "tls_client_ca = \"\(files.ca)\"\n"
        )
        defer { Task { await server.stop() } }
        let without = try await run(["redis-cli", "-p", String(server.port), "--tls", "--cacert", files.ca, "PING"])
        #expect(without.status != 0 || !without.stdout.contains("PONG"), "\(without.stdout)")
        let serverCertAsClient = try await run(
            ["redis-cli", "-p", String(server.port), "--tls", "--cacert", files.ca]
                + ["--cert", files.cert, "--key", files.key, "PING"]
        )
        #expect(!serverCertAsClient.stdout.contains("PONG"), "a serverAuth-only certificate is not a client's")
        let with = try await redisCLI(
            server.port,
            ["PING"],
            extra: ["--tls", "--cacert", files.ca, "--cert", files.clientCert, "--key", files.clientKey]
        )
        #expect(with == ["PONG"])
    }

    @Test func aMissingCertificateFileStopsTheStartNamingTheFileAndKey() async throws {
        let config = "tls_cert = \"/nonexistent/cert.pem\"\ntls_key = \"/nonexistent/key.pem\"\n"
        await #expect {
            _ = try await TestServer.start(label: "tlsmissing", config: config)
        } throws: { error in
            "\(error)" == "test.toml: tls_cert: /nonexistent/cert.pem does not exist"
        }
    }

    /// Each bad file is named with its key; the parse alone already refuses half a pair.
    @Test func badCertificatesAndKeysAreConfigurationErrors() async throws {
        let files = try await TLSFiles.make()
        defer { files.remove() }
        let d = files.directory
        try "not a certificate\n".write(toFile: d + "/junk.pem", atomically: true, encoding: .utf8)
        let unreadable = d + "/unreadable.pem"
        try FileManager.default.copyItem(atPath: files.key, toPath: unreadable)
        try FileManager.default.setAttributes([.posixPermissions: 0], ofItemAtPath: unreadable)
        let encrypted = d + "/encrypted.pem"
        let r = try await run(
            ["openssl", "pkey", "-in", files.key, "-aes256", "-passout", "pass:secret", "-out", encrypted]
        )
        #expect(r.status == 0, "\(r.stderr)")
        let cases: [(cert: String, key: String, expected: String)] = [
            (d + "/none.pem", files.key, "tls_cert: \(d)/none.pem does not exist"),
            (d, files.key, "tls_cert: \(d) is a directory, not a PEM file"),
            (d + "/junk.pem", files.key, "tls_cert: \(d)/junk.pem holds no PEM certificate"),
            (files.key, files.key, "tls_cert: \(files.key) holds no PEM certificate"),
            (files.cert, d + "/none.pem", "tls_key: \(d)/none.pem does not exist"),
            (files.cert, d + "/junk.pem", "tls_key: \(d)/junk.pem holds no PEM private key"),
            (files.cert, files.cert, "tls_key: \(files.cert) holds no PEM private key"),
            (files.cert, encrypted, "tls_key: \(encrypted) is encrypted; otpd needs the key without a passphrase"),
            (
                files.cert, files.otherKey,
                "tls_key: \(files.otherKey) is not the private key of the certificate in \(files.cert)"
            ),
        ]
        for c in cases {
            let config = try Configuration.parse(
                "tls_cert = \"\(c.cert)\"\ntls_key = \"\(c.key)\"\n",
                file: "otpd.toml"
            )
            #expect(throws: ConfigurationError.self) { _ = try config.makeTLSContext() }
            do { _ = try config.makeTLSContext() } catch { #expect("\(error)" == "otpd.toml: " + c.expected) }
        }
        // Root reads any file, so the permission case is checked only where permissions hold.
        if getuid() != 0 {
            let config = try Configuration.parse(files.config.replacingOccurrences(of: files.key, with: unreadable))
            do { _ = try config.makeTLSContext() } catch {
                #expect("\(error)" == "config: tls_key: \(unreadable) cannot be read (check its permissions)")
            }
        }
        let ca = try Configuration.parse(files.config + "tls_client_ca = \"\(d)/none.pem\"\n", file: "otpd.toml")
        do { _ = try ca.makeTLSContext() } catch {
            #expect("\(error)" == "otpd.toml: tls_client_ca: \(d)/none.pem does not exist")
        }
        #expect(try Configuration.parse(files.config).makeTLSContext() != nil)
        #expect(try Configuration.parse("").makeTLSContext() == nil)
        #expect(throws: ConfigurationError.self) { try Configuration.parse("tls_key = \"\(files.key)\"") }
        #expect(throws: ConfigurationError.self) { try Configuration.parse("tls_client_ca = \"\(files.ca)\"") }
    }

    /// The real binary: the same listening line over TLS, and exit 2 naming the key for a missing certificate.
    @Test func otpdServesTLSAndExitsTwoOnAMissingCertificate() async throws {
        guard let binary = ExecutableTests.built("otpd") else { return }
        let files = try await TLSFiles.make()
        defer { files.remove() }
        let missing = files.directory + "/missing.toml"
        try "tls_cert = \"\(files.directory)/none.pem\"\ntls_key = \"\(files.key)\"\n"
            .write(toFile: missing, atomically: true, encoding: .utf8)
        let failed = try await run(
            [binary, "--config", missing, "--listen", "127.0.0.1:0", "--database-url", "postgresql://127.0.0.1:1/x"]
        )
        #expect(failed.status == 2)
        #expect(
            failed.stderr.contains("otpd: configuration error: \(missing): tls_cert: \(files.directory)/none.pem"),
            "\(failed.stderr)"
        )

        let url = try await TestDatabase.make(label: "tlsbinary")
        let dataDir = "/var/tmp/otpd-tls-\(UUID().uuidString.prefix(8))"
        defer { ExecutableTests.cleanUp(dataDir) }
        let (p, port, lines) = try await ExecutableTests().launch(url, config: files.config, dataDir: dataDir)
        defer { if p.isRunning { p.terminate() } }
        #expect(lines.all.contains { $0 == "otpd listening on 127.0.0.1:\(port)" })
        #expect(try await redisCLI(port, ["PING"], extra: ["--tls", "--cacert", files.ca]) == ["PONG"])
        let status: Int32 = try await withCheckedThrowingContinuation { c in
            p.terminationHandler = { c.resume(returning: $0.terminationStatus) }
            kill(p.processIdentifier, SIGTERM)
        }
        #expect(status == 0)
    }
}
