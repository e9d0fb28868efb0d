#!/usr/bin/env python3
"""A real SMTP server for SMTPTests: aiosmtpd on 127.0.0.1 and a free port.

Prints the port on stdout once it accepts. Writes into --dir:
  commands.jsonl   one object per command line the server read ({"command": "MAIL"}) and per AUTH attempt
                   ({"auth": "PLAIN", "success": true}); never the credentials
  message-N.json   each message accepted: the envelope, the raw content, and its parts as Python's email
                   package reads them

Variants: the default offers STARTTLS (required) and AUTH (required, PLAIN and LOGIN, only after STARTTLS);
--no-starttls offers neither; --implicit speaks TLS from the first byte; --exclude-mechanism PLAIN leaves LOGIN.
Exits when its parent process does.
"""

import argparse
import json
import logging
import os
import signal
import ssl
import sys
import threading
import time
from email import policy
from email.parser import BytesParser

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class CommandLog(logging.Handler):
    """Records the verb of every line aiosmtpd logs as read from the client ('%r >> %r')."""

    def __init__(self, path):
        super().__init__()
        self.path = path

    def emit(self, record):
        if record.msg != "%r >> %r" or not isinstance(record.args, tuple) or len(record.args) != 2:
            return
        line = record.args[1]
        if not isinstance(line, bytes):
            return
        verb = line.split(b" ", 1)[0].decode("ascii", "replace").upper()
        append_json(self.path, {"command": verb})


lock = threading.Lock()


def append_json(path, obj):
    with lock, open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(obj) + "\n")


class Recorder:
    """aiosmtpd handler: writes each message to message-N.json before answering 250."""

    def __init__(self, directory):
        self.directory = directory
        self.count = 0

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        content = envelope.content if isinstance(envelope.content, bytes) else envelope.content.encode()
        message = BytesParser(policy=policy.default).parsebytes(content)
        parts = []
        for part in message.walk():
            if part.is_multipart():
                continue
            parts.append(
                {
                    "content_type": part.get_content_type(),
                    "charset": part.get_content_charset(),
                    "transfer_encoding": part.get("Content-Transfer-Encoding"),
                    "content": part.get_content(),
                }
            )
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "raw": content.decode("utf-8", "replace"),
            "headers": {name: str(value) for name, value in message.items()},
            "header_names": list(message.keys()),
            "content_type": message.get_content_type(),
            "boundary": message.get_boundary(),
            "parts": parts,
            "defects": [type(d).__name__ for part in message.walk() for d in part.defects],
        }
        path = os.path.join(self.directory, f"message-{self.count}.json")
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            json.dump(record, f)
        os.rename(path + ".tmp", path)
        return f"250 2.0.0 Ok: queued as TESTQ{self.count}"


class FreePortController(Controller):
    """Controller bound to port 0: the trigger connection must use the port the system picked."""

    def _trigger_server(self):
        self.port = self.server.sockets[0].getsockname()[1]
        super()._trigger_server()


def main():
    # The test process runs us from a thread that blocks most signals, and the mask is inherited: let SIGTERM
    # (Process.terminate) end us again.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGTERM, signal.SIGINT])
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", required=True)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--user", default="otpd")
    parser.add_argument("--password", default="s3cret-pass")
    parser.add_argument("--no-starttls", action="store_true")
    parser.add_argument("--implicit", action="store_true")
    parser.add_argument("--exclude-mechanism", action="append", default=[])
    args = parser.parse_args()

    commands = os.path.join(args.dir, "commands.jsonl")
    mail_log = logging.getLogger("mail.log")
    mail_log.setLevel(logging.INFO)
    mail_log.propagate = False
    mail_log.addHandler(CommandLog(commands))

    user, password = args.user.encode(), args.password.encode()

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and auth_data.login == user and auth_data.password == password
        append_json(commands, {"auth": mechanism, "success": ok})
        # handled=False: aiosmtpd answers a failure itself (535 5.7.8).
        return AuthResult(success=ok, handled=False)

    context = None
    if args.cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.cert, args.key)

    kwargs = dict(
        hostname="127.0.0.1",
        port=0,
        server_hostname="mx.test",
        authenticator=authenticator,
        auth_exclude_mechanism=args.exclude_mechanism,
        ready_timeout=20,
    )
    if args.implicit:
        kwargs.update(ssl_context=context, auth_required=True, auth_require_tls=False)
    elif args.no_starttls:
        kwargs.update(auth_required=False)
    else:
        kwargs.update(tls_context=context, require_starttls=True, auth_required=True)
    controller = FreePortController(Recorder(args.dir), **kwargs)
    controller.start()
    print(controller.port, flush=True)

    parent = os.getppid()
    while os.getppid() == parent:
        time.sleep(0.5)
    controller.stop()
    sys.exit(0)


if __name__ == "__main__":
    main()
