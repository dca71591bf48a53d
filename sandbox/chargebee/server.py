"""HTTP front of the Chargebee sandbox: auth, rate limit, faults, idempotency, admin API.

Request pipeline for ``/api/v2/...`` (admin paths under ``/_sandbox/`` skip all of it):

1. route lookup (404 ``resource_not_found`` / 405 for a known path with the wrong method);
   only operations the official SDK declares are routed, so anything else (``GET
   /business_entities`` included) is a 404, as on a real site;
2. rate limiter: past N requests in the window -> 429 ``api_request_limit_exceeded`` with
   ``Retry-After``, and the site stays blocked for ``block_seconds``;
3. injected faults (latency, hang, drop, error status, 429) - see :mod:`sandbox.common.faults`;
4. HTTP Basic auth with the API key as user name (any password) -> else 401;
5. idempotency replay (``chargebee-idempotency-key`` on POST), then the handler, all under
   the state lock; successful writes are persisted atomically before answering;
6. ``lost_response`` fault: the write is applied and persisted, then the answer is
   replaced by a 500 or a closed connection.

The Host header is ignored, so any site name (``acme-test.chargebee.com`` via a proxy,
or the SDK's ``{site}.{domain}`` trick) reaches the same site.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from sandbox.chargebee import errors
from sandbox.chargebee.errors import ApiError
from sandbox.chargebee.forms import parse_form, parse_query
from sandbox.chargebee.models import SPECS, public
from sandbox.chargebee.resources import Ctx, generate_order, match, record_payment
from sandbox.chargebee.store import (
    CURRENT_ORDER_MANAGEMENT,
    DEFAULT_CUSTOMER_PURGE_SECONDS,
    ChargebeeState,
    check_order_management,
    check_purge_seconds,
)
from sandbox.common.clock import Clock
from sandbox.common.faults import FaultConfig, FaultDecision, FaultInjector
from sandbox.common.httpbase import IncompleteBody, SandboxHTTPServer, SandboxRequestHandler
from sandbox.common.jsonstore import read_json
from sandbox.common.ratelimit import RateLimiter
from sandbox.common.stats import RequestStats

log = logging.getLogger("sandbox.chargebee")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8602
DEFAULT_API_KEY = "sandbox_api_key"
DEFAULT_STATE = "var/sandbox/chargebee.json"
DEFAULT_SEED = "sandbox/seed/chargebee.json"
IDEMPOTENCY_HEADER = "chargebee-idempotency-key"
REPLAYED_HEADER = "chargebee-idempotency-replayed"
MAX_IDEMPOTENCY_KEY = 100
#: How long an idempotency key is remembered. Chargebee's idempotency page (API v1,
#: https://apidocs.chargebee.com/docs/api/v1/idempotency) states 30 minutes; the
#: chargebee-node README says 24 h and the v2 reference found is silent: the shorter,
#: stricter window is the default (docs/chargebee-sandbox.md).
DEFAULT_IDEMPOTENCY_TTL = 1800.0
#: ``created_by`` of orders made through the API: the API key's name, as in Chargebee's
#: docs example (key names are chosen by the site's admins; ``POST /_sandbox/config``).
DEFAULT_API_KEY_NAME = "full_access_key_v1"


def load_seed(seed: str | Path | Mapping[str, Any] | None) -> dict[str, Any]:
    """Seed data from a path or a dict; a missing file yields an empty site (with a warning)."""
    if seed is None:
        return {}
    if isinstance(seed, Mapping):
        return dict(seed)
    data = read_json(seed)
    if data is None:
        log.warning("seed file %s not found; starting empty", seed)
        return {}
    if not isinstance(data, dict):
        raise ValueError(f"seed file {seed} must hold a JSON object keyed by resource")
    return data


class ChargebeeSandboxServer(SandboxHTTPServer):
    """One sandbox Chargebee site served over HTTP."""

    def __init__(
        self,
        address: tuple[str, int],
        *,
        state: ChargebeeState,
        api_key: str = DEFAULT_API_KEY,
        rate_limit_per_minute: int = 0,
        block_seconds: float = 60.0,
        faults: FaultConfig | Mapping[str, Any] | None = None,
        list_lag_seconds: float = 0.0,
        access_log: bool = False,
        api_key_name: str = DEFAULT_API_KEY_NAME,
    ) -> None:
        super().__init__(address, ChargebeeHandler, access_log=access_log)
        self.state = state
        self.clock = state.clock
        self.api_key = api_key
        self.limiter = RateLimiter(rate_limit_per_minute, block_seconds, clock=self.clock.now)
        fault_cfg = faults if isinstance(faults, FaultConfig) else FaultConfig.from_dict(dict(faults or {}))
        self.faults = FaultInjector(fault_cfg)
        self.stats = RequestStats()
        self.list_lag_seconds = float(list_lag_seconds)
        #: the name of the API key requests use: ``created_by`` of orders made through the API
        self.api_key_name = check_api_key_name(api_key_name)

    @property
    def api_url(self) -> str:
        return self.base_url + "/api/v2"

    def effective_list_lag(self) -> float:
        extra = self.faults.config.extra
        return float(extra.get("list_lag_seconds", self.list_lag_seconds) or 0.0)

    def config_snapshot(self) -> dict[str, Any]:
        return {
            "rate_limit_per_minute": self.limiter.per_minute,
            "block_seconds": self.limiter.block_seconds,
            "list_lag_seconds": self.list_lag_seconds,
            "idempotency_ttl": self.state.idempotency_ttl,
            "state_path": str(self.state.path) if self.state.path else None,
            "api_key_is_default": self.api_key == DEFAULT_API_KEY,
            "api_key_name": self.api_key_name,
            "order_management": self.state.order_management,
            "customer_purge_seconds": self.state.customer_purge_seconds,
        }

    def stop(self) -> None:
        super().stop()
        with contextlib.suppress(OSError):
            self.state.close()


class ChargebeeHandler(SandboxRequestHandler):
    """Dispatches API and admin requests; see the module docstring for the pipeline."""

    server: ChargebeeSandboxServer

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    # ------------------------------------------------------------------ API
    def _handle(self, method: str) -> None:
        srv = self.server
        split = urlsplit(self.path)
        path = split.path
        try:
            body = self.read_body()
        except IncompleteBody:
            return  # nothing to answer, nothing applied
        except ValueError:
            self.send_json(413, {"message": "request body too large"})
            return
        if path == "/_sandbox" or path.startswith("/_sandbox/"):
            self._admin(method, path, split.query, body)
            return

        rel = path[len("/api/v2") :] if path.startswith("/api/v2/") else None
        route, params, known = match(method, rel) if rel is not None else (None, {}, False)
        if route is None:
            template = _unknown_template(path)
            err = (
                ApiError(405, "http_method_not_supported", f"Sorry, {method} is not supported for this URL.")
                if known
                else errors.not_found("Sorry, we couldn't find that resource")
            )
            self._send_error(err, method, template)
            return
        template = route.template

        decision = self._pre_checks(method, path, template)
        if decision is None:
            return
        status, resp, headers, replayed = self._dispatch(method, path, split.query, body, route, params)

        if decision.kind == "lost_response" and route.writes and 200 <= status < 300 and not replayed:
            srv.stats.incr("fault_lost_response")
            # Stats are recorded before answering so a client that reads /stats right after
            # its response always sees that response counted.
            if decision.lost_mode == "drop":
                srv.stats.record(method, template, "lost_dropped")
                self.drop_connection()
            else:
                err = errors.server_error(500)
                srv.stats.record(method, template, 500)
                self.send_json(500, err.body())
            return
        srv.stats.record(method, template, status)
        self.send_json(status, resp, headers)

    def _pre_checks(self, method: str, path: str, template: str) -> FaultDecision | None:
        """Rate limit, faults and auth; returns None when the request was already answered."""
        srv = self.server
        rate = srv.limiter.check()
        if not rate.allowed:
            srv.stats.incr("rate_limited")
            if rate.breach:
                srv.stats.incr("rate_limit_breaches")
            self._send_error(errors.rate_limited(rate.retry_after), method, template)
            return None

        decision = srv.faults.decide(method, path)
        if decision.latency_s and not self.sleep(decision.latency_s):
            self.drop_connection()
            return None
        if decision.kind == "hang":
            srv.stats.incr("fault_hang")
            self.sleep(decision.hang_seconds)
            srv.stats.record(method, template, "hang")
            self.drop_connection()
            return None
        if decision.kind == "drop":
            srv.stats.incr("fault_drop")
            srv.stats.record(method, template, "dropped")
            self.drop_connection()
            return None
        if decision.kind == "rate_429":
            srv.stats.incr("fault_rate_429")
            self._send_error(errors.rate_limited(1), method, template)
            return None
        if decision.kind == "error":
            srv.stats.incr("fault_error")
            self._send_error(errors.server_error(decision.status), method, template)
            return None

        if not self._authorized():
            self._send_error(errors.auth_failed(), method, template)
            return None
        return decision

    def _authorized(self) -> bool:
        header = self.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "basic" or not token:
            return False
        try:
            decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return False
        user, _, _password = decoded.partition(":")
        return user == self.server.api_key

    def _dispatch(
        self, method: str, path: str, query_string: str, body: bytes, route: Any, params: dict[str, str]
    ) -> tuple[int, Any, dict[str, str], bool]:
        srv = self.server
        state = srv.state
        headers: dict[str, str] = {}
        replayed = False
        try:
            query, _ = parse_query(query_string)
            form, pairs = parse_form(body) if method == "POST" else ({}, [])
            key = self.headers.get(IDEMPOTENCY_HEADER) if method == "POST" else None
            lag = srv.effective_list_lag()
            hide = None
            if lag > 0:
                cutoff = srv.clock.now() - lag
                hide = lambda r: (r.get("updated_at") or 0) > cutoff  # noqa: E731
            with state.lock:
                if state.purge_due():  # scheduled deletes whose time has come (the site's clock)
                    state.commit()
                scoped = fingerprint = ""
                if key:
                    if len(key) > MAX_IDEMPOTENCY_KEY:
                        raise errors.wrong_value(IDEMPOTENCY_HEADER, "cannot be more than 100 characters")
                    scoped = f"{path}\n{key}"
                    fingerprint = state.fingerprint(method, path, pairs)
                    entry = state.idempotent_lookup(scoped)
                    if entry is not None:
                        if entry["fingerprint"] != fingerprint:
                            raise ApiError(
                                400,
                                "invalid_request",
                                "The idempotency key was already used with different request parameters.",
                                param=IDEMPOTENCY_HEADER,
                            )
                        srv.stats.incr("idempotent_replays")
                        return int(entry["status"]), entry["body"], {REPLAYED_HEADER: "true"}, True
                ctx = Ctx(
                    state=state,
                    method=method,
                    params={k: unquote(v) for k, v in params.items()},
                    query=query,
                    form=form,
                    hide=hide,
                    api_key_name=srv.api_key_name,
                )
                status, resp = route.handler(ctx)
                if route.writes:
                    if key:
                        state.idempotent_store(scoped, fingerprint, status, resp)
                    state.commit()
            return status, resp, headers, replayed
        except ApiError as err:
            return err.status, err.body(), err.headers, False
        except Exception:
            log.exception("sandbox handler failed for %s %s", method, path)
            err = errors.server_error(500)
            return 500, err.body(), {}, False

    def _send_error(self, err: ApiError, method: str, template: str) -> None:
        self.server.stats.record(method, template, err.status)
        self.send_json(err.status, err.body(), err.headers)

    # ------------------------------------------------------------------ admin
    def _admin(self, method: str, path: str, query_string: str, body: bytes) -> None:
        """Test/ops API (no auth, no faults, not counted in stats)."""
        try:
            payload: Any = json.loads(body) if body.strip() else {}
        except ValueError:
            self.send_json(400, {"error": "body must be JSON"})
            return
        try:
            status, resp = self._admin_route(method, path.rstrip("/"), parse_qs(query_string), payload)
        except ApiError as err:
            status, resp = err.status, err.body()
        except (ValueError, TypeError, KeyError) as exc:
            status, resp = 400, {"error": str(exc)}
        self.send_json(status, resp)

    def _admin_route(
        self, method: str, path: str, query: dict[str, list[str]], payload: Any
    ) -> tuple[int, Any]:
        srv = self.server
        state = srv.state
        parts = path.split("/")[2:]  # after "", "_sandbox"
        head = parts[0] if parts else ""
        with state.lock:
            if state.purge_due():  # admin reads see the site as the API does
                state.commit()

        if head == "health" and method == "GET":
            return 200, {"ok": True, "service": "chargebee-sandbox"}
        if head == "stats":
            if method == "GET" and len(parts) == 1:
                snap = srv.stats.snapshot()
                snap["rate_limited"] = snap["by_status"].get("429", 0)
                snap["rate_limit"] = srv.limiter.snapshot()
                snap["faults_injected"] = srv.faults.snapshot()["injected"]
                return 200, snap
            if method == "POST" and parts[1:] == ["reset"]:
                srv.stats.reset()
                return 200, {"ok": True}
        if head == "reset" and method == "POST":
            state.reset()
            srv.limiter.reset()
            if payload.get("stats", True):
                srv.stats.reset()
            if payload.get("faults", False):
                srv.faults.configure(FaultConfig())
            return 200, {"ok": True, "counts": {r: len(state.table(r)) for r in SPECS}}
        if head == "faults":
            if method == "POST":
                srv.faults.configure(payload)
            return 200, srv.faults.snapshot()
        if head == "config":
            if method == "POST":
                if "rate_limit_per_minute" in payload or "block_seconds" in payload:
                    srv.limiter.configure(payload.get("rate_limit_per_minute"), payload.get("block_seconds"))
                if "list_lag_seconds" in payload:
                    srv.list_lag_seconds = float(payload["list_lag_seconds"])
                if "api_key" in payload:
                    srv.api_key = str(payload["api_key"])
                if "api_key_name" in payload:
                    srv.api_key_name = check_api_key_name(payload["api_key_name"])
                if "idempotency_ttl" in payload:
                    with state.lock:
                        state.idempotency_ttl = check_idempotency_ttl(payload["idempotency_ttl"])
                if "order_management" in payload:
                    with state.lock:
                        state.order_management = check_order_management(payload["order_management"])
                if "customer_purge_seconds" in payload:
                    with state.lock:
                        state.customer_purge_seconds = check_purge_seconds(payload["customer_purge_seconds"])
            return 200, srv.config_snapshot()
        if head == "clock":
            if method == "POST":
                if "advance" in payload:
                    srv.clock.advance(float(payload["advance"]))
                if "offset" in payload:
                    srv.clock.set_offset(float(payload["offset"]))
            return 200, {"now": srv.clock.now(), "offset": srv.clock.offset}
        if head == "save" and method == "POST":
            state.save()
            return 200, {"ok": True}
        if head == "records" and len(parts) >= 2:
            return self._admin_records(method, parts[1], parts[2:], query, payload)
        if head == "invoices" and len(parts) == 3 and parts[2] == "generate_order" and method == "POST":
            # What Chargebee does with current order management: an order generated from
            # the invoice (another shipment of it, or its first). ``{"assign_number":
            # false}``: an order without document_number yet.
            with state.lock:
                invoice = state.get("invoices", unquote(parts[1]))
                if invoice is None:
                    return 404, {"error": "invoice not found"}
                order = generate_order(
                    state, invoice, "admin_console", assign_number=bool(payload.get("assign_number", True))
                )
                state.touch("invoices", invoice, source="admin_console", emit=False)
                state.commit()
                return 200, {"order": public(order)}
        if head == "invoices" and len(parts) == 3 and parts[2] == "pay" and method == "POST":
            with state.lock:
                invoice = state.get("invoices", unquote(parts[1]))
                if invoice is None:
                    return 404, {"error": "invoice not found"}
                txn_in = {"payment_method": payload.get("payment_method", "other"), **payload}
                invoice, txn = record_payment(state, invoice, txn_in, source="admin_console")
                state.commit()
                return 200, {"invoice": public(invoice), "transaction": txn}
        return 404, {"error": f"unknown admin endpoint {method} {path}"}

    def _admin_records(
        self, method: str, resource: str, rest: list[str], query: dict[str, list[str]], payload: Any
    ) -> tuple[int, Any]:
        state = self.server.state
        if resource not in SPECS:
            return 404, {"error": f"unknown resource {resource!r}; known: {sorted(SPECS)}"}
        with state.lock:
            if method == "GET" and not rest:
                records = state.dump(resource)
                if "id" in query:
                    wanted = set(query["id"])
                    records = [r for r in records if r["id"] in wanted]
                return 200, {"records": records, "count": len(records)}
            if method == "GET" and len(rest) == 1:
                rec = state.table(resource).get(unquote(rest[0]))
                return (200, {"record": public(rec)}) if rec else (404, {"error": "not found"})
            if resource == "events" and method != "GET":
                return 400, {"error": "events are read only"}
            if method == "POST" and not rest:
                if isinstance(payload, list):
                    items, touch, emit = payload, True, True
                elif "records" in payload:
                    items = payload["records"]
                    touch = bool(payload.get("touch", True))
                    emit = bool(payload.get("emit", True))
                else:
                    items, touch, emit = [payload], True, True
                out = [public(state.admin_upsert(resource, dict(r), touch=touch, emit=emit)) for r in items]
                state.commit()
                return 200, {"records": out}
            if method == "POST" and len(rest) == 2 and rest[1] == "delete":
                rec = state.get(resource, unquote(rest[0]))
                if rec is None:
                    return 404, {"error": "not found"}
                if resource in ("items", "item_families"):
                    rec["status"] = "deleted"
                state.mark_deleted(resource, rec, source="admin_console")
                state.commit()
                return 200, {"record": public(rec)}
            if method == "DELETE" and len(rest) == 1:
                removed = state.remove(resource, unquote(rest[0]))
                state.commit()
                return (200, {"removed": True}) if removed else (404, {"error": "not found"})
        return 404, {"error": "unknown records operation"}


def _unknown_template(path: str) -> str:
    """The stats key of a path no route serves: the path itself under ``/api/v2`` (so a
    test sees ``GET /api/v2/business_entities`` was asked and refused), cut to 200 chars."""
    return path[:200] if path.startswith("/api/v2/") else "(unmatched)"


def check_api_key_name(value: Any) -> str:
    """An API key name: any non-blank text up to 100 characters without control characters
    (Chargebee's docs do not say which names its admin console allows, so tests may use
    any; the product must treat every one as "no person")."""
    if (
        not isinstance(value, str)
        or not value.strip()
        or len(value) > 100
        or re.search(r"[\x00-\x1f\x7f]", value)
    ):
        raise ValueError("api_key_name must be non-blank text of at most 100 characters")
    return value


def check_idempotency_ttl(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise ValueError("idempotency_ttl must be a number of seconds >= 0")
    return float(value)


def create_server(
    state_path: str | Path | None,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    seed: str | Path | Mapping[str, Any] | None = None,
    seed_path: str | Path | None = None,
    api_key: str = DEFAULT_API_KEY,
    rate_limit_per_minute: int = 0,
    block_seconds: float = 60.0,
    faults: FaultConfig | Mapping[str, Any] | None = None,
    list_lag_seconds: float = 0.0,
    clock: Clock | None = None,
    idempotency_ttl: float = DEFAULT_IDEMPOTENCY_TTL,
    persist_interval: float | None = None,
    access_log: bool = False,
    order_management: str = CURRENT_ORDER_MANAGEMENT,
    api_key_name: str = DEFAULT_API_KEY_NAME,
    customer_purge_seconds: float = DEFAULT_CUSTOMER_PURGE_SECONDS,
) -> ChargebeeSandboxServer:
    """Build (not start) a sandbox server; ``state_path=None`` keeps state in memory only.

    ``seed`` (a path or a dict) or its alias ``seed_path`` is loaded only when the state
    file does not exist yet, and again on ``POST /_sandbox/reset``. ``persist_interval``:
    ``0`` saves after every write, ``N`` at most every N seconds, ``None`` picks by size.
    ``order_management``: ``current`` (the default, as every site since 2021-10-01: paid
    invoices get their orders, ``POST /orders`` is refused) or ``legacy``; it applies to
    the seed loaded, and ``POST /_sandbox/config`` changes it (a ``reset`` then reloads
    the seed under the new setting). ``idempotency_ttl``: seconds a key is remembered
    (30 min, Chargebee's documented window). ``api_key_name``: ``created_by`` of orders
    made through the API. Both can be changed through ``POST /_sandbox/config`` too.
    ``customer_purge_seconds``: how long after ``POST /customers/{id}/delete`` the
    customer is purged (default 300; a ``POST /_sandbox/config`` setting too; see
    ``resources.customers_delete``).
    """
    state = ChargebeeState(
        state_path,
        seed=load_seed(seed if seed is not None else seed_path),
        clock=clock or Clock(),
        idempotency_ttl=idempotency_ttl,
        persist_interval=persist_interval,
        order_management=order_management,
        customer_purge_seconds=customer_purge_seconds,
    )
    return ChargebeeSandboxServer(
        (host, port),
        state=state,
        api_key=api_key,
        rate_limit_per_minute=rate_limit_per_minute,
        block_seconds=block_seconds,
        faults=faults,
        list_lag_seconds=list_lag_seconds,
        access_log=access_log,
        api_key_name=api_key_name,
    )


class RunningSandbox(tuple[ChargebeeSandboxServer, str]):
    """``(server, base_url)`` that is also a context manager stopping the server on exit.

    Both styles work::

        server, url = serve_in_thread(path)          # stop with server.stop()
        with serve_in_thread(path) as (server, url):  # stopped on exit
            ...
    """

    def __new__(cls, server: ChargebeeSandboxServer, base_url: str) -> RunningSandbox:
        return super().__new__(cls, (server, base_url))

    @property
    def server(self) -> ChargebeeSandboxServer:
        return self[0]

    @property
    def base_url(self) -> str:
        return self[1]

    def __enter__(self) -> RunningSandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self[0].stop()


def serve_in_thread(state_path: str | Path | None, port: int = 0, **opts: Any) -> RunningSandbox:
    """Start a sandbox in a daemon thread; returns ``(server, base_url)`` (also a context manager).

    ``base_url`` is ``http://127.0.0.1:<port>`` (the API lives under ``base_url + "/api/v2"``,
    also available as ``server.api_url``). Stop it with ``server.stop()`` or by leaving the
    ``with`` block. ``opts`` are :func:`create_server` keyword arguments.
    """
    server = create_server(state_path, port=port, **opts)
    server.start_in_thread()
    return RunningSandbox(server, server.base_url)


@contextlib.contextmanager
def running_sandbox(
    state_path: str | Path | None, port: int = 0, **opts: Any
) -> Iterator[tuple[ChargebeeSandboxServer, str]]:
    """Context-manager form of :func:`serve_in_thread`; stops the server on exit."""
    with serve_in_thread(state_path, port=port, **opts) as running:
        yield running


__all__ = [
    "ChargebeeSandboxServer",
    "RunningSandbox",
    "create_server",
    "load_seed",
    "running_sandbox",
    "serve_in_thread",
]
