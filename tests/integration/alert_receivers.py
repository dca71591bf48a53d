"""Real local receivers for crmsync alerts: an HTTP webhook and an SMTP server on loopback.

Used by tests/integration/test_alerts.py and tests/e2e/test_alerts_e2e.py. Each collects
what it received; nothing leaves the machine.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Webhook:
    url: str
    #: (path, headers, JSON body) of each POST
    posts: list[tuple[str, dict[str, str], dict[str, Any]]] = field(default_factory=list)
    #: the status the receiver answers with
    status: int = 200


@contextmanager
def webhook() -> Iterator[Webhook]:
    """An HTTP server on a free loopback port that records every POST."""
    hook = Webhook(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            hook.posts.append((self.path, dict(self.headers), json.loads(body or b"{}")))
            self.send_response(hook.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    hook.url = f"http://127.0.0.1:{server.server_address[1]}/hooks/T0KEN-never-logged"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hook
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Mailbox:
    host: str
    port: int
    #: (envelope sender, recipients, parsed message) of each mail
    mails: list[tuple[str, list[str], Message]] = field(default_factory=list)


@contextmanager
def smtp_server() -> Iterator[Mailbox]:
    """An aiosmtpd SMTP server on a free loopback port that keeps every mail."""
    import socket

    from aiosmtpd.controller import Controller

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    box = Mailbox("127.0.0.1", port)

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            box.mails.append(
                (envelope.mail_from, list(envelope.rcpt_tos), message_from_bytes(envelope.original_content))
            )
            return "250 OK"

    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield box
    finally:
        controller.stop()
