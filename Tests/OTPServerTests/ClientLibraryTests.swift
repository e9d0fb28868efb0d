import Foundation
import OTPTesting
import PostgresTesting
import Testing

/// Redis client libraries other than redis-py, each in its own language, connecting with its own handshake and
/// driving ISSUE → VERIFY → STATUS against the real server, the code read from the log driver.
///
/// Each script runs twice: `PHASE=issue` (the handshake commands, then ISSUE), then `PHASE=verify` with the
/// code from the log (a wrong code, the right one, then STATUS). .ci/run installs the libraries.
@Suite(.serialized, .heavy) struct ClientLibraryTests {
    /// redis-rb 4.8 (Debian's ruby-redis), RESP2, with AUTH: it sends `AUTH tenant token`, then `CLIENT SETNAME`.
    @Test func redisRbConnectsWithAuthAndDrivesTheLifecycle() async throws {
        let server = try await TestServer.start(label: "rb", config: tenantsConfig)
        defer { Task { await server.stop() } }
        let script = #"""
            require "redis"
            r = Redis.new(host: "127.0.0.1", port: ENV["PORT"].to_i, username: "acme", password: "service-secret",
                          id: "rb-app")
            map = ->(a) { Hash[*a] }
            if ENV["PHASE"] == "issue"
              h = map.(r.call("HELLO", "2"))
              puts "hello #{h['server']} #{h['proto']} #{h['mode']} #{h['role']} #{h['modules'].inspect} " \
                   "#{h['tenant']} #{h['id'] == r.call('CLIENT', 'ID')}"
              puts "name #{r.call('CLIENT', 'GETNAME')}"
              puts "select #{r.select(0)} echo #{r.echo('hi')} info #{r.info('replication')['role']}"
              i = map.(r.call("ISSUE", "rb1", "sms:+15551230001"))
              puts "issue #{i['session']} #{i['status']} #{i['channel']}"
            else
              v = map.(r.call("VERIFY", "rb1", ENV["WRONG"]))
              puts "verify #{v['result']} #{v['attempts_left']}"
              v = map.(r.call("VERIFY", "rb1", ENV["CODE"]))
              puts "verify #{v['result']} #{v['status']}"
              s = map.(r.call("STATUS", "rb1"))
              puts "status #{s['status']} #{s['version']} #{!s['verified_at'].nil?}"
            end
            """#
        try await expectLifecycle(
            server,
            session: "rb1",
            ["ruby", "-e", script],
            issued: [
                "hello otpd 2 standalone master [] acme true", "name rb-app", "select OK echo hi info master",
                "issue rb1 pending sms",
            ]
        )
    }

    /// Redis.pm 2.000 (Debian's libredis-perl), RESP2, single-tenant: it sends `CLIENT SETNAME` on connect.
    @Test func perlRedisConnectsWithoutTenantsAndDrivesTheLifecycle() async throws {
        let server = try await TestServer.start(label: "pl")
        defer { Task { await server.stop() } }
        let script = #"""
            use strict;
            use Redis;
            my $r = Redis->new(server => "127.0.0.1:$ENV{PORT}", name => "pl-app");
            if ($ENV{PHASE} eq "issue") {
                my %h = $r->hello(2);
                printf "hello %s %s %s %s %d %s %s\n", @h{qw(server proto mode role)}, scalar @{$h{modules}},
                    $h{tenant}, $h{id} == $r->client_id ? "true" : "false";
                print "name ", $r->client_getname, "\n";
                print "select ", $r->select(0), " echo ", $r->echo("hi"), " info ", $r->info("replication")->{role}, "\n";
                my %i = $r->issue("pl1", 'email:pl@example.com');
                print "issue $i{session} $i{status} $i{channel}\n";
            } else {
                my %v = $r->verify("pl1", $ENV{WRONG});
                print "verify $v{result} $v{attempts_left}\n";
                %v = $r->verify("pl1", $ENV{CODE});
                print "verify $v{result} $v{status}\n";
                my %s = $r->status("pl1");
                print "status $s{status} $s{version} ", (defined $s{verified_at} ? "true" : "false"), "\n";
            }
            """#
        try await expectLifecycle(
            server,
            session: "pl1",
            ["perl", "-e", script],
            issued: [
                "hello otpd 2 standalone master 0 default true", "name pl-app", "select OK echo hi info master",
                "issue pl1 pending email",
            ]
        )
    }

    /// node-redis 4.5 (Debian's node-redis), RESP2, with AUTH from the URL: it pipelines `AUTH` and
    /// `CLIENT SETNAME`.
    @Test func nodeRedisConnectsWithAuthAndDrivesTheLifecycle() async throws {
        let server = try await TestServer.start(label: "js", config: tenantsConfig)
        defer { Task { await server.stop() } }
        let script = #"""
            const { createClient } = require("redis");
            const obj = (a) => { const o = {}; for (let i = 0; i + 1 < a.length; i += 2) o[a[i]] = a[i + 1]; return o; };
            (async () => {
              const c = createClient({ url: `redis://acme:service-secret@127.0.0.1:${process.env.PORT}`, name: "js-app" });
              c.on("error", (e) => { console.error(e); process.exit(2); });
              await c.connect();
              if (process.env.PHASE === "issue") {
                const h = obj(await c.sendCommand(["HELLO", "2"]));
                console.log("hello", h.server, h.proto, h.mode, h.role, JSON.stringify(h.modules), h.tenant,
                            h.id === await c.clientId());
                console.log("name", await c.clientGetName());
                console.log("select", await c.sendCommand(["SELECT", "0"]), "echo", await c.echo("hi"));
                const i = obj(await c.sendCommand(["ISSUE", "js1", "sms:+15551230002"]));
                console.log("issue", i.session, i.status, i.channel);
              } else {
                let v = obj(await c.sendCommand(["VERIFY", "js1", process.env.WRONG]));
                console.log("verify", v.result, v.attempts_left);
                v = obj(await c.sendCommand(["VERIFY", "js1", process.env.CODE]));
                console.log("verify", v.result, v.status);
                const s = obj(await c.sendCommand(["STATUS", "js1"]));
                console.log("status", s.status, s.version, s.verified_at !== null);
              }
              await c.quit();
            })().catch((e) => { console.error(e); process.exit(1); });
            """#
        try await expectLifecycle(
            server,
            session: "js1",
            ["node", "-e", script],
            // Debian's modules directory, which a node not from Debian does not search by itself.
            environment: ["NODE_PATH": "/usr/share/nodejs"],
            issued: [
                "hello otpd 2 standalone master [] acme true", "name js-app", "select OK echo hi",
                "issue js1 pending sms",
            ]
        )
    }

    /// coredis 6 (PyPI; RESP3 only, not a redis-py fork), with AUTH: it sends `HELLO 3 AUTH tenant token`, needs
    /// HELLO's `id`, then sends `CLIENT SETNAME`.
    @Test func coredisConnectsInRESP3WithAuthAndDrivesTheLifecycle() async throws {
        let server = try await TestServer.start(label: "co", config: tenantsConfig)
        defer { Task { await server.stop() } }
        let script = #"""
            import asyncio, os, coredis
            from coredis.response._callbacks import NoopCallback
            async def main():
                r = coredis.Redis(port=int(os.environ['PORT']), username='acme', password='service-secret',
                                  client_name='co-app', decode_responses=True)
                async with r:
                    cmd = lambda name, *args: r.create_request(name, *args, callback=NoopCallback())
                    if os.environ['PHASE'] == 'issue':
                        h = await cmd(b'HELLO', 3)
                        print('hello', h['server'], h['proto'], h['mode'], h['role'], h['modules'], h['tenant'],
                              h['id'] == await r.client_id())
                        print('name', await r.client_getname())
                        print('select', await cmd(b'SELECT', 0), 'echo', await r.echo('hi'))
                        i = await cmd(b'ISSUE', 'co1', 'push:device-token-1234')
                        print('issue', i['session'], i['status'], i['channel'])
                    else:
                        v = await cmd(b'VERIFY', 'co1', os.environ['WRONG'])
                        print('verify', v['result'], v['attempts_left'])
                        v = await cmd(b'VERIFY', 'co1', os.environ['CODE'])
                        print('verify', v['result'], v['status'])
                        s = await cmd(b'STATUS', 'co1')
                        print('status', s['status'], s['version'], s['verified_at'] is not None)
            asyncio.run(main())
            """#
        try await expectLifecycle(
            server,
            session: "co1",
            ["python3", "-c", script],
            issued: [
                "hello otpd 3 standalone master [] acme True", "name co-app", "select OK echo hi",
                "issue co1 pending push",
            ],
            verified: ["verify mismatch 4", "verify verified verified", "status verified 4 True"]
        )
    }

    /// Valkey GLIDE 2 (PyPI; its connection logic is Rust, glide-core), RESP3, single-tenant: it sends `HELLO 3`,
    /// `CLIENT SETNAME`, `CLIENT SETINFO LIB-NAME`/`LIB-VER` and `INFO REPLICATION` (it wants `role:master`).
    @Test func valkeyGlideConnectsInRESP3AndDrivesTheLifecycle() async throws {
        let server = try await TestServer.start(label: "gl")
        defer { Task { await server.stop() } }
        let script = #"""
            import os
            from glide_sync import GlideClient, GlideClientConfiguration, NodeAddress
            c = GlideClient.create(GlideClientConfiguration([NodeAddress('127.0.0.1', int(os.environ['PORT']))],
                                                            client_name='gl-app', request_timeout=5000))
            text = lambda v: v.decode() if isinstance(v, bytes) else v
            cmd = lambda *args: {text(k): text(v) for k, v in c.custom_command(list(args)).items()}
            if os.environ['PHASE'] == 'issue':
                h = cmd('HELLO', '3')
                print('hello', h['server'], h['proto'], h['mode'], h['role'], h['modules'], h['tenant'],
                      h['id'] == c.custom_command(['CLIENT', 'ID']))
                info = text(c.custom_command(['CLIENT', 'INFO']))
                print('name', text(c.client_getname()), 'lib-name=GlidePySync' in info)
                print('select', text(c.select(0)), 'echo', text(c.echo('hi')))
                i = cmd('ISSUE', 'gl1', 'voice:+15551230003')
                print('issue', i['session'], i['status'], i['channel'])
            else:
                v = cmd('VERIFY', 'gl1', os.environ['WRONG'])
                print('verify', v['result'], v['attempts_left'])
                v = cmd('VERIFY', 'gl1', os.environ['CODE'])
                print('verify', v['result'], v['status'])
                s = cmd('STATUS', 'gl1')
                print('status', s['status'], s['version'], s['verified_at'] is not None)
            c.close()
            """#
        try await expectLifecycle(
            server,
            session: "gl1",
            ["python3", "-c", script],
            issued: [
                "hello otpd 3 standalone master [] default True", "name gl-app True", "select OK echo hi",
                "issue gl1 pending voice",
            ],
            verified: ["verify mismatch 4", "verify verified verified", "status verified 4 True"]
        )
    }

    /// The handshake commands' exact answers, in RESP2 and RESP3, before and after AUTH.
    @Test func handshakeCommandsAnswerAsRedisDoes() async throws {
        let server = try await TestServer.start(label: "handshake", config: tenantsConfig)
        defer { Task { await server.stop() } }
        let out = try await python(
            server.port,
            #"""
            import os, socket
            s = socket.create_connection(('127.0.0.1', int(os.environ['PORT'])), timeout=5)
            def send(*args):
                s.sendall(b'*%d\r\n' % len(args) + b''.join(b'$%d\r\n%s\r\n' % (len(a), a.encode()) for a in args))
            def reply(f):
                line = f.readline()
                kind, rest = line[:1], line[1:-2].decode()
                if kind in b'*%':
                    n = int(rest) * (2 if kind == b'%' else 1)
                    return kind.decode() + '[' + ' '.join(reply(f) for _ in range(n)) + ']'
                if kind == b'$':
                    return '$-1' if rest == '-1' else f.read(int(rest) + 2)[:-2].decode()
                return line[:-2].decode()
            f = s.makefile('rb')
            for args in [('CLIENT', 'SETNAME', 'x'), ('SELECT', '0'), ('HELLO', '3', 'AUTH', 'acme', 'service-secret',
                         'SETNAME', 'conn-1'), ('CLIENT', 'GETNAME'), ('CLIENT', 'SETNAME', 'has space'),
                         ('CLIENT', 'SETNAME', ''), ('CLIENT', 'GETNAME'), ('CLIENT', 'SETINFO', 'LIB-NAME', 'lib'),
                         ('CLIENT', 'SETINFO', 'LIB-VER', '1.2'), ('CLIENT', 'SETINFO', 'color', 'red'),
                         ('CLIENT', 'INFO'), ('CLIENT', 'KILL', 'ID', '1'), ('CLIENT', 'SETNAME'), ('SELECT', '1'),
                         ('SELECT', 'x'), ('ECHO', 'a b'), ('COMMAND',), ('COMMAND', 'DOCS'), ('COMMAND', 'DOCS', 'GET'),
                         ('COMMAND', 'INFO', 'verify', 'nosuch'), ('COMMAND', 'LIST'), ('HELLO', '2')]:
                send(*args)
                print(reply(f))
            # COMMAND COUNT against the number of entries COMMAND INFO lists, then CLIENT ID.
            send('COMMAND', 'COUNT')
            count = reply(f)
            send('COMMAND', 'INFO')
            entries = int(f.readline()[1:])
            for _ in range(entries):
                reply(f)
            print(count == ':%d' % entries, entries > 10)
            send('CLIENT', 'ID')
            print(reply(f)[1:])
            """#
        )
        var lines = out.split(separator: "\n").map(String.init)
        let id = lines.removeLast()
        #expect(Int(id) != nil, "CLIENT ID: \(id)")
        let hello =
            "server otpd version 0.1.0 proto :PROTO id :\(id) mode standalone role master modules *[] tenant acme"
        #expect(
            lines == [
                "-NOAUTH authentication required", "-NOAUTH authentication required",
                "%[" + hello.replacingOccurrences(of: "PROTO", with: "3") + "]",
                "conn-1", "-ERR Client names cannot contain spaces, newlines or special characters.", "+OK", "_",
                "+OK", "+OK", "-ERR Unrecognized option 'color'",
                "id=\(id) name= db=0 user=acme resp=3 lib-name=lib lib-ver=1.2",
                "-ERR unknown subcommand 'KILL'. Try CLIENT HELP.",
                "-ERR wrong number of arguments for 'CLIENT SETNAME'", "-ERR DB index is out of range",
                "-ERR value is not an integer or out of range", "a b", "*[]", "*[]", "*[]",
                "*[*[verify :3 *[] :0 :0 :0 *[] *[] *[] *[]] _]", "-ERR unknown subcommand 'LIST'. Try COMMAND HELP.",
                "*[" + hello.replacingOccurrences(of: "PROTO", with: "2") + "]", "True True",
            ]
        )
    }

    /// Runs `arguments` (a client script) for the issue phase, reads the code from the log, runs it again for the
    /// verify phase, and checks what it printed.
    private func expectLifecycle(
        _ server: TestServer,
        session: String,
        _ arguments: [String],
        environment: [String: String] = [:],
        issued: [String],
        verified: [String] = ["verify mismatch 4", "verify verified verified", "status verified 4 true"]
    ) async throws {
        var env = environment
        env["PORT"] = String(server.port)
        env["PHASE"] = "issue"
        let issuing = try await lines(arguments, env)
        #expect(issuing == issued)
        let code = try await server.code(session: session)
        // The right code with its first digit changed: a wrong code of the right length.
        let first = code.first?.wholeNumberValue ?? 0
        env["PHASE"] = "verify"
        env["CODE"] = code
        env["WRONG"] = String((first + 1) % 10) + code.dropFirst()
        let verifying = try await lines(arguments, env)
        #expect(verifying == verified)
    }

    private func lines(_ arguments: [String], _ environment: [String: String]) async throws -> [String] {
        let r = try await run(arguments, environment: environment)
        guard r.status == 0 else {
            throw HarnessError("\(arguments[0]) failed (\(r.status)): \(r.stderr)\n\(r.stdout)")
        }
        return r.stdout.split(separator: "\n").map(String.init)
    }
}
