import Foundation
import OTPTesting
import PostgresTesting
import Testing

/// SMS that waits 1 s for its receipt, then e-mail.
private let smsThenEmail = """
    [[policy]]
    name = "default"
    steps = [ { channel = "sms", timeout = "1s", until = "delivered" }, { channel = "email" } ]
    """

/// SUBSCRIBE: the live status feed in Redis's pub/sub shape, through real clients.
@Suite(.serialized, .heavy) struct LiveFeedTests {
    /// redis-py's `pubsub()` on one instance follows a session that another instance issues, from before it
    /// exists until it has fallen back from SMS to e-mail; no message holds the code or a destination.
    @Test func redisPyFollowsASessionFallingBackAcrossTwoInstances() async throws {
        let a = try await TestServer.start(label: "live", config: smsThenEmail)
        let b = try await TestServer.start(label: "live", config: smsThenEmail, databaseURL: a.databaseURL)
        defer {
            Task {
                await a.stop()
                await b.stop()
            }
        }
        let script = """
            import json, os, redis
            pa, pb = [int(p) for p in os.environ['PORTS'].split(',')]
            sub = redis.Redis(port=pb, protocol=2).pubsub()
            sub.subscribe('live1')
            m = sub.get_message(timeout=5)
            print('confirm', m['type'], m['channel'].decode(), m['data'])
            print('before', sub.get_message(timeout=0.5))
            redis.Redis(port=pa, protocol=2).execute_command(
                'ISSUE', 'live1', 'sms:+15551230001', 'email:live1@example.com')
            while True:
                m = sub.get_message(timeout=15)
                if m is None:
                    print('timeout')
                    break
                p = json.loads(m['data'])
                print('raw', m['data'].decode())
                print('message', m['channel'].decode(), p['type'], p['status'], p['channel'], p['step'],
                      p['next_channel'], None if p['next_at'] is None else p['next_at'] - p['at'], p['version'])
                if p['type'] == 'sent' and p['channel'] == 'email':
                    break
            """
        let out = try await python(a.port, script, env: ["PORTS": "\(a.port),\(b.port)"])
        let lines = out.split(separator: "\n").map(String.init)
        #expect(lines.prefix(2) == ["confirm subscribe live1 1", "before None"])
        let messages = lines.filter { $0.hasPrefix("message ") }
        #expect(
            messages == [
                "message live1 issued pending sms 1 None None 1",
                "message live1 sent sent sms 1 email 1000 2",
                "message live1 timed_out sent sms 1 None None 3",
                "message live1 escalated pending email 2 None None 4",
                "message live1 sent sent email 2 None None 5",
            ],
            "\(out)"
        )
        // Either instance's dispatcher may have sent a step, so the code is in one log or the other.
        let code = try #require(
            (a.log.codes(session: "live1") + b.log.codes(session: "live1")).last,
            "a code for live1 in either log"
        )
        for raw in lines.filter({ $0.hasPrefix("raw ") }) {
            #expect(!raw.contains(code) && !raw.contains("5551230001") && !raw.contains("example.com"), "\(raw)")
        }
    }

    /// `redis-cli SUBSCRIBE` on a session already sent: the first message is its current state.
    @Test func aLateSubscriberGetsTheCurrentStateFirst() async throws {
        let server = try await TestServer.start(
            label: "live-late",
            config: smsThenEmail.replacingOccurrences(of: "\"1s\"", with: "\"60s\"")
        )
        defer { Task { await server.stop() } }
        _ = try await redisCLI(server.port, ["ISSUE", "late1", "sms:+15551230002"])
        try await server.waitUntilSent("late1")
        // redis-cli follows until killed (SIGKILL: a test process may leave its children ignoring SIGTERM).
        let r = try await run([
            "timeout", "-s", "KILL", "2", "redis-cli", "-p", String(server.port), "SUBSCRIBE", "late1",
        ])
        let lines = r.stdout.split(separator: "\n").map(String.init)
        #expect(lines.prefix(5) == ["subscribe", "late1", "1", "message", "late1"], "\(r.stdout)")
        let payload = try #require(lines.count > 5 ? lines[5] : nil, "\(r.stdout)")
        let json = try #require(try JSONSerialization.jsonObject(with: Data(payload.utf8)) as? [String: Any])
        #expect(json["type"] as? String == "sent")
        #expect(json["status"] as? String == "sent")
        #expect(json["version"] as? Int == 2)
        #expect(
            Set(json.keys) == [
                "session", "status", "version", "type", "channel", "step", "next_channel", "next_at", "at",
            ]
        )
        #expect(lines.count == 6, "one message only: nothing else happened")
    }

    /// The wire as Redis writes it: RESP2's subscribed mode (only SUBSCRIBE, UNSUBSCRIBE, PING, QUIT; PING
    /// answers `pong`), UNSUBSCRIBE's counts, and RESP3's push frames beside ordinary replies.
    @Test func subscribedModeAndPushFramesAreRedis() async throws {
        let server = try await TestServer.start(label: "live-wire", config: smsThenEmail)
        defer { Task { await server.stop() } }
        let script = #"""
            import os, re, socket
            def connect():
                s = socket.create_connection(('127.0.0.1', int(os.environ['PORT'])))
                s.settimeout(10)
                return s
            def read_until(s, marker):
                data = b''
                while marker not in data:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                return data
            def read_until_all(s, patterns):
                data = b''
                while not all(re.search(p, data) for p in patterns):
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                return data
            s = connect()
            s.sendall(b'SUBSCRIBE w1 w2\r\n')
            print(repr(read_until(s, b':2\r\n')))
            s.sendall(b'ISSUE w3 sms:+15551230003\r\n')
            print(repr(read_until(s, b'context\r\n')))
            s.sendall(b'PING\r\nPING hi\r\n')
            print(repr(read_until(s, b'hi\r\n')))
            s.sendall(b'UNSUBSCRIBE\r\n')
            print(repr(read_until(s, b'w2\r\n:0\r\n')))
            s.sendall(b'PING\r\n')
            print(repr(read_until(s, b'\r\n')))
            s.sendall(b'UNSUBSCRIBE\r\n')
            print(repr(read_until(s, b':0\r\n')))
            r3 = connect()
            r3.sendall(b'HELLO 3\r\n')
            read_until(r3, b'default\r\n')
            r3.sendall(b'SUBSCRIBE w4\r\nPING\r\n')
            print(repr(read_until(r3, b'PONG\r\n')))
            r3.sendall(b'ISSUE w4 sms:+15551230004\r\n')
            # Both, in whichever order they come: the reply's map (it ends with expires_at) and the message.
            print(repr(read_until_all(r3, [rb'expires_at\r\n:\d+\r\n', rb'"type":"issued"[^\r]*\r\n'])))
            """#
        let lines = try await python(server.port, script).split(separator: "\n").map(String.init)
        #expect(
            lines.count == 8
                && lines[0]
                    == #"b'*3\r\n$9\r\nsubscribe\r\n$2\r\nw1\r\n:1\r\n*3\r\n$9\r\nsubscribe\r\n$2\r\nw2\r\n:2\r\n'"#,
            "\(lines)"
        )
        guard lines.count == 8 else { return }
        #expect(
            lines[1]
                == #"b"-ERR Can't execute 'issue': only SUBSCRIBE / UNSUBSCRIBE / PING / QUIT are allowed in this context\r\n""#
        )
        #expect(lines[2] == #"b'*2\r\n$4\r\npong\r\n$0\r\n\r\n*2\r\n$4\r\npong\r\n$2\r\nhi\r\n'"#)
        #expect(
            lines[3]
                == #"b'*3\r\n$11\r\nunsubscribe\r\n$2\r\nw1\r\n:1\r\n*3\r\n$11\r\nunsubscribe\r\n$2\r\nw2\r\n:0\r\n'"#
        )
        // Out of subscribed mode once nothing is left: PING is PONG again.
        #expect(lines[4] == #"b'+PONG\r\n'"#)
        #expect(lines[5] == #"b'*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n'"#)
        // RESP3: the confirmation is a push frame, and ordinary commands answer as usual beside it.
        #expect(lines[6] == #"b'>3\r\n$9\r\nsubscribe\r\n$2\r\nw4\r\n:1\r\n+PONG\r\n'"#)
        // The ISSUE's map and the feed's message, in either order: the feed may read the commit before the reply
        // is queued.
        #expect(lines[7].contains(#"%"#) && lines[7].contains(#">3\r\n$7\r\nmessage\r\n$2\r\nw4\r\n$"#), "\(lines[7])")
    }

    /// A subscriber that sends and never reads is cut off once its queue passes the bound, with an error as the
    /// last thing on the connection.
    @Test func aSubscriberThatNeverReadsIsCutOff() async throws {
        let server = try await TestServer.start(label: "live-slow", subscriberQueueBytes: 4096)
        defer { Task { await server.stop() } }
        let script = #"""
            import os, socket, time
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.connect(('127.0.0.1', int(os.environ['PORT'])))
            # 10,000 subscriptions: their confirmations alone are ~450 KB that the client does not read.
            for c in range(158):
                s.sendall(('SUBSCRIBE ' + ' '.join('n%d' % (c * 63 + i) for i in range(63)) + '\r\n').encode())
            time.sleep(1)
            s.settimeout(20)
            data = b''
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            print('closed', len(data))
            print(repr(data[-120:]))
            """#
        let out = try await python(server.port, script)
        #expect(out.contains("closed"), "\(out)")
        #expect(
            out.contains(
                #"-ERR subscriber too slow: more than 4096 bytes of messages were waiting; closing the connection\r\n'"#
            ),
            "\(out)"
        )
    }
}
