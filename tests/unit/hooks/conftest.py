"""Fixtures for hook unit tests: a scriptable local HTTP stub and connection helpers.

The stub is a real ``ThreadingHTTPServer`` on an ephemeral port, so the hooks'
sessions, timeouts, headers and encodings are exercised for real; each test scripts
the answers with a function ``(StubRequest) -> (status, headers, body)``.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from crmsync.hooks.budget import RateBudget, reset_budgets
from crmsync.hooks.retry import RetryPolicy


@dataclass
class StubRequest:
    method: str
    path: str
    query: list[tuple[str, str]]
    headers: dict[str, str]
    body: bytes

    @property
    def params(self) -> dict[str, str]:
        return dict(self.query)

    @property
    def form(self) -> list[tuple[str, str]]:
        return parse_qsl(self.body.decode(), keep_blank_values=True)

    def json(self) -> Any:
        return json.loads(self.body.decode())


Reply = tuple[int, dict[str, str], Any]


@dataclass
class Stub:
    base_url: str
    requests: list[StubRequest] = field(default_factory=list)
    handler: Callable[[StubRequest], Reply] = lambda req: (200, {}, {})

    def respond(self, handler: Callable[[StubRequest], Reply]) -> None:
        self.handler = handler


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    stub: Stub

    def _serve(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        req = StubRequest(
            self.command,
            parts.path,
            parse_qsl(parts.query, keep_blank_values=True),
            {k: v for k, v in self.headers.items()},
            body,
        )
        self.stub.requests.append(req)
        status, headers, payload = self.stub.handler(req)
        if isinstance(payload, bytes):
            data = payload
        elif payload is None:
            data = b""
        else:
            data = json.dumps(payload).encode()
        self.send_response(status)
        headers = {"Content-Type": "application/json", **headers}
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _serve

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def stub() -> Iterator[Stub]:
    stub = Stub(base_url="")
    handler = type("Handler", (_Handler,), {"stub": stub})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    host, port = server.server_address[:2]
    stub.base_url = f"http://{host}:{port}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield stub
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


_ids = itertools.count()


@pytest.fixture
def make_conn(monkeypatch: pytest.MonkeyPatch) -> Callable[..., str]:
    """Define an Airflow connection through the environment; returns its (unique) id."""

    def make(conn_type: str, **fields: Any) -> str:
        conn_id = f"hooktest_{conn_type}_{next(_ids)}"
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps({"conn_type": conn_type, **fields}))
        return conn_id

    return make


@dataclass
class Sleeps:
    calls: list[float] = field(default_factory=list)

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def fast_policy(sleeps: Sleeps) -> RetryPolicy:
    """Contract defaults, but sleeping is recorded instead of done."""
    return RetryPolicy(sleep=sleeps, rng=lambda: 0.5)


@pytest.fixture
def no_budget() -> RateBudget:
    """No client-side limit; a 429's pause is skipped (the retry policy's sleep is recorded)."""
    return RateBudget(0, sleep=lambda seconds: None)


@pytest.fixture(autouse=True)
def _fresh_budgets() -> Iterator[None]:
    reset_budgets()
    yield
    reset_budgets()


@dataclass
class Output:
    caplog: pytest.LogCaptureFixture
    capsys: pytest.CaptureFixture[str]
    seen: list[str] = field(default_factory=list)

    def text(self) -> str:
        """Everything logged so far: stdlib records (caplog) and structlog output.

        Hooks log through ``self.log``, a structlog logger that outside a task
        renders to stdout instead of going through stdlib logging.
        """
        out, err = self.capsys.readouterr()
        self.seen += [out, err]
        return "\n".join([self.caplog.text, *self.seen])

    def lines(self) -> list[str]:
        return [line for line in self.text().splitlines() if line.strip()]


@pytest.fixture
def output(caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> Output:
    """All log output at DEBUG, whichever logging path it takes."""
    caplog.set_level(logging.DEBUG)
    return Output(caplog, capsys)
