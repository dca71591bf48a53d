"""A ``ThreadingHTTPServer`` base for sandboxes, plus an in-thread runner for tests.

What the stdlib server does not give for free, and every sandbox needs:

* JSON answers with a correct ``Content-Length`` (HTTP/1.1 keep-alive clients such as
  httpx/requests reuse connections, so every answer must be framed);
* closing a connection *without* answering (fault injection: dropped requests and lost
  responses) in a way clients see as a reset/EOF;
* sleeps that end early when the server stops, so a simulated 65 s hang never holds up
  test teardown;
* starting on an ephemeral port in a background thread and stopping cleanly.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import struct
import sys
import threading
from collections.abc import Iterator, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

log = logging.getLogger("sandbox.http")

MAX_BODY_BYTES = 10 * 1024 * 1024


class IncompleteBody(ConnectionError):
    """The connection closed before the request body (Content-Length) fully arrived."""


class SandboxHTTPServer(ThreadingHTTPServer):
    """Threaded server with a ``stopping`` event and optional access logging."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(
        self,
        address: tuple[str, int],
        handler: type[BaseHTTPRequestHandler],
        *,
        access_log: bool = False,
    ) -> None:
        super().__init__(address, handler)
        self.stopping = threading.Event()
        self.access_log = access_log
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        host = str(host)
        if host in ("0.0.0.0", ""):
            host = "127.0.0.1"
        return f"http://{host}:{port}"

    def start_in_thread(self) -> threading.Thread:
        """Serve in a daemon thread; returns it."""
        thread = threading.Thread(
            target=self.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"sandbox-{self.base_url}",
            daemon=True,
        )
        thread.start()
        self._thread = thread
        return thread

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that hang up (timeouts, fault tests) are normal here: log quietly."""
        exc = sys.exc_info()[1]
        if isinstance(exc, ConnectionError | TimeoutError):
            log.debug("client %s went away: %s", client_address, exc)
            return
        log.exception("error while serving %s", client_address)

    def stop(self) -> None:
        """Stop serving, wake sleeping handlers and close the socket. Idempotent."""
        self.stopping.set()
        if self._thread is not None:
            self.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self.server_close()


class SandboxRequestHandler(BaseHTTPRequestHandler):
    """Base handler: HTTP/1.1, JSON helpers, quiet logs, connection dropping."""

    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes; without TCP_NODELAY, Nagle plus the
    # client's delayed ACK adds ~40 ms to every keep-alive request.
    disable_nagle_algorithm = True
    server: SandboxHTTPServer  # narrowed type
    server_version = "sandbox"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        # Access lines never include headers or bodies (they may hold secrets).
        if getattr(self.server, "access_log", False):
            log.info("%s - %s", self.address_string(), format % args)

    def read_body(self) -> bytes:
        """Read the request body (Content-Length framed; chunked bodies are rejected)."""
        length = self.headers.get("Content-Length")
        if not length:
            return b""
        n = int(length)
        if n < 0 or n > MAX_BODY_BYTES:
            raise ValueError("request body too large")
        body = self.rfile.read(n)
        if len(body) < n:
            # The client went away mid-request (a killed worker): a real server never
            # applies a request whose body did not arrive, so neither do we.
            self.close_connection = True
            raise IncompleteBody(f"request body cut short: {len(body)} of {n} bytes")
        return body

    def send_json(self, status: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
        payload = json.dumps(body, separators=(",", ":")).encode("utf-8")
        self.send_bytes(status, payload, "application/json;charset=utf-8", headers)

    def send_bytes(
        self, status: int, payload: bytes, content_type: str, headers: Mapping[str, str] | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def drop_connection(self) -> None:
        """Close the socket without writing a response (client sees EOF / reset)."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.wfile.flush()
        with contextlib.suppress(OSError):
            # SO_LINGER 0 turns the close into a RST, like a crashed proxy.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def sleep(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; returns False if the server started stopping meanwhile."""
        if seconds <= 0:
            return True
        return not self.server.stopping.wait(seconds)


S = TypeVar("S", bound=SandboxHTTPServer)


@contextlib.contextmanager
def running(server: S) -> Iterator[S]:
    """Context manager: serve ``server`` in a thread, stop it on exit."""
    server.start_in_thread()
    try:
        yield server
    finally:
        server.stop()
