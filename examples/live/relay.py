"""A server-sent-events relay for otpd's live feed: an example of the app's own, not part of otpd.

    pip install redis
    OTPD_PORT=7379 python3 relay.py          # then open http://127.0.0.1:8080/?session=s1

GET /events?session=ID subscribes to the session on otpd and forwards each message as one SSE event.
The browser never talks to otpd: the relay is where the app checks that the user may watch that session.
"""
import http.server
import os
import re
import socketserver

import redis

OTPD = redis.Redis(host=os.environ.get('OTPD_HOST', '127.0.0.1'), port=int(os.environ.get('OTPD_PORT', '7379')),
                   username=os.environ.get('OTPD_TENANT'), password=os.environ.get('OTPD_TOKEN'))
PAGE = open(os.path.join(os.path.dirname(__file__), 'index.html'), 'rb').read()
SESSION = re.compile(r'^[A-Za-z0-9._:-]{1,128}$')


class Relay(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        path, _, query = self.path.partition('?')
        params = dict(p.split('=', 1) for p in query.split('&') if '=' in p)
        if path == '/':
            self.reply(200, 'text/html; charset=utf-8', PAGE)
        elif path == '/events' and SESSION.match(params.get('session', '')):
            # Here the app would check that this browser's user owns the session.
            self.send_response(200)
            self.send_header('Content-Type', 'text/event-stream')
            self.send_header('Cache-Control', 'no-store')
            self.end_headers()
            feed = OTPD.pubsub()
            feed.subscribe(params['session'])
            try:
                for m in feed.listen():
                    if m['type'] == 'message':
                        self.wfile.write(b'data: ' + m['data'] + b'\n\n')
                        self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                pass  # the page was closed
            finally:
                feed.close()
        else:
            self.reply(404, 'text/plain', b'not found\n')

    def reply(self, status, kind, body):
        self.send_response(status)
        self.send_header('Content-Type', kind)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


if __name__ == '__main__':
    port = int(os.environ.get('RELAY_PORT', '8080'))
    print('relay on http://127.0.0.1:%d/?session=ID' % port)
    Server(('127.0.0.1', port), Relay).serve_forever()
