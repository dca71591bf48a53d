"""HTTP layer of the Customcrm reference server (stdlib ``ThreadingHTTPServer``).

The contract lives in ``openapi.yaml`` next to this file; ``ROUTES`` below is the
server's own list of what it serves, and a test checks the two agree. Request
pipeline for the API (``/_sandbox/*`` admin endpoints skip auth, rate limit and faults):

    route -> bearer auth (401) -> rate limit (429) -> injected faults -> handler
          -> (lost_response fault: the write is applied, then the answer is lost)

Writes run inside ``Store.transaction()`` so check-then-act (If-Match, uniqueness,
references) cannot race, and an ``Idempotency-Key`` is stored in the same file write
as the record it created.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import Message
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from sandbox.common.clock import Clock
from sandbox.common.faults import FaultConfig, FaultInjector
from sandbox.common.httpbase import IncompleteBody, SandboxHTTPServer, SandboxRequestHandler
from sandbox.common.ratelimit import RateLimiter
from sandbox.common.stats import RequestStats
from sandbox.customcrm.schema import LIST_PARAMS, READ_ONLY, RESOURCES, ResourceSpec, validate_body
from sandbox.customcrm.store import (
    CursorError,
    Record,
    Store,
    StoredResponse,
    decode_cursor,
    parse_ts,
    request_fingerprint,
)

log = logging.getLogger("sandbox.customcrm")

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8601
DEFAULT_TOKEN = "sandbox_token"
OPENAPI_PATH = Path(__file__).with_name("openapi.yaml")
MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
PROBLEM_BASE = "urn:customcrm:problem:"
JSON_TYPE = "application/json"
PROBLEM_TYPE = "application/problem+json"


# --------------------------------------------------------------------------- plumbing
@dataclass(frozen=True)
class Route:
    """One (method, path template) the server answers."""

    method: str
    template: str
    handler: str  # name of an ``App`` method
    admin: bool = False  # no auth, no rate limit, no faults, not counted in stats
    resource: str | None = None  # fixed resource for the generic CRUD handlers
    regex: re.Pattern[str] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        pattern = re.sub(r"\\\{(\w+)\\\}", r"(?P<\1>[^/]+)", re.escape(self.template))
        object.__setattr__(self, "regex", re.compile(f"^{pattern}$"))


def _build_routes() -> tuple[Route, ...]:
    routes: list[Route] = []
    for name in RESOURCES:
        routes += [
            Route("GET", f"/{name}", "list_records", resource=name),
            Route("POST", f"/{name}", "create_record", resource=name),
            Route("GET", f"/{name}/{{id}}", "get_record", resource=name),
            Route("PATCH", f"/{name}/{{id}}", "patch_record", resource=name),
            Route("DELETE", f"/{name}/{{id}}", "delete_record", resource=name),
            Route("POST", f"/{name}/{{id}}/restore", "restore_record", resource=name),
        ]
    routes += [
        # Admin paths mirror the Chargebee sandbox's so one test helper drives both.
        Route("GET", "/openapi.yaml", "openapi", admin=True),
        Route("GET", "/_sandbox/health", "admin_health", admin=True),
        Route("GET", "/_sandbox/stats", "admin_stats", admin=True),
        Route("POST", "/_sandbox/stats/reset", "admin_stats_reset", admin=True),
        Route("POST", "/_sandbox/reset", "admin_reset", admin=True),
        Route("GET", "/_sandbox/faults", "admin_faults", admin=True),
        Route("POST", "/_sandbox/faults", "admin_faults", admin=True),
        Route("GET", "/_sandbox/config", "admin_config", admin=True),
        Route("POST", "/_sandbox/config", "admin_config", admin=True),
        Route("GET", "/_sandbox/clock", "admin_clock", admin=True),
        Route("POST", "/_sandbox/clock", "admin_clock", admin=True),
        Route("POST", "/_sandbox/save", "admin_save", admin=True),
        Route("GET", "/_sandbox/records/{resource}", "admin_records_list", admin=True),
        Route("POST", "/_sandbox/records/{resource}", "admin_records_post", admin=True),
        Route("GET", "/_sandbox/records/{resource}/{id}", "admin_record_get", admin=True),
        Route("PATCH", "/_sandbox/records/{resource}/{id}", "admin_record_patch", admin=True),
        Route("DELETE", "/_sandbox/records/{resource}/{id}", "admin_record_remove", admin=True),
        Route("POST", "/_sandbox/records/{resource}/{id}/delete", "admin_record_delete", admin=True),
    ]
    return tuple(routes)


#: Everything the server serves; compared with ``openapi.yaml`` by the tests.
ROUTES: tuple[Route, ...] = _build_routes()


@dataclass
class Request:
    """What a handler needs from an HTTP request."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: Message
    body: bytes
    params: dict[str, str] = field(default_factory=dict)
    route: Route | None = None


@dataclass
class Response:
    """A handler's answer; ``body`` is JSON-encoded unless it is bytes."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = JSON_TYPE

    def encoded(self) -> bytes:
        if self.body is None:
            return b""
        if isinstance(self.body, bytes):
            return self.body
        return json.dumps(self.body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class Problem(Exception):
    """An RFC 9457 problem answer raised from anywhere in a handler."""

    def __init__(
        self,
        status: int,
        slug: str,
        detail: str,
        *,
        errors: list[tuple[str, str]] | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.slug = slug
        self.detail = detail
        self.errors = errors or []
        self.headers = headers or {}
        self.extra = extra or {}

    def response(self, instance: str) -> Response:
        body = {
            "type": PROBLEM_BASE + self.slug,
            "title": _phrase(self.status),
            "status": self.status,
            "detail": self.detail,
            "instance": instance,
            "errors": [{"field": f, "message": m} for f, m in self.errors],
            **self.extra,
        }
        return Response(self.status, body, dict(self.headers), PROBLEM_TYPE)


@dataclass(frozen=True)
class Outcome:
    """Response to send, or ``drop`` to close the connection without answering."""

    response: Response | None
    drop: bool = False
    stats_status: str = ""


# --------------------------------------------------------------------------- the app
class App:
    """Routing and handlers, independent of the socket layer."""

    def __init__(
        self,
        store: Store,
        *,
        token: str = DEFAULT_TOKEN,
        rate_limit_per_minute: int = 0,
        clock: Clock | None = None,
    ) -> None:
        self.store = store
        self.token = token
        self.clock = clock or Clock()
        # No block period: an in-house CRM answers 429 only while its window is full.
        self.limiter = RateLimiter(rate_limit_per_minute, block_seconds=0, clock=self.clock)
        self.faults = FaultInjector()
        self.stats = RequestStats()
        self.stopping = threading.Event()

    # ---------------------------------------------------------------- dispatch
    def match(self, method: str, path: str) -> tuple[Route | None, dict[str, str], list[str]]:
        """Find the route for a request; also the methods allowed on the path (for 405)."""
        allowed: list[str] = []
        for route in ROUTES:
            found = route.regex.match(path)
            if found:
                if route.method == method:
                    return route, {k: unquote(v) for k, v in found.groupdict().items()}, []
                allowed.append(route.method)
        return None, {}, allowed

    def handle(self, request: Request) -> Outcome:
        """Run the whole pipeline for one request."""
        route, params, allowed = self.match(request.method, request.path)
        if route is None:
            if allowed:
                problem = Problem(
                    405,
                    "method-not-allowed",
                    f"{request.method} is not allowed on {request.path}",
                    headers={"Allow": ", ".join(sorted(set(allowed)))},
                )
            else:
                problem = Problem(404, "not-found", f"no route for {request.path}")
            return Outcome(problem.response(request.path))
        request.route, request.params = route, params
        try:
            if route.admin:
                return Outcome(getattr(self, route.handler)(request))
            self._authenticate(request)
            decision = self.limiter.check()
            if not decision.allowed:
                self.stats.incr("rate_limited")
                raise Problem(
                    429,
                    "rate-limited",
                    "too many requests; retry later",
                    headers={"Retry-After": str(decision.retry_after)},
                )
            return self._with_faults(request, route)
        except Problem as problem:
            return Outcome(problem.response(request.path))

    def _authenticate(self, request: Request) -> None:
        header = request.headers.get("Authorization", "")
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() != "bearer" or credentials.strip() != self.token:
            raise Problem(
                401,
                "unauthorized",
                "missing or invalid bearer token",
                headers={"WWW-Authenticate": 'Bearer realm="customcrm"'},
            )

    def _with_faults(self, request: Request, route: Route) -> Outcome:
        """Apply the injected fault drawn for this request (shared with the Chargebee sandbox)."""
        decision = self.faults.decide(request.method, request.path)
        if decision.latency_s:
            self.stopping.wait(decision.latency_s)
        if decision.kind == "hang":
            # Longer than any sane client timeout, then no answer and nothing processed.
            self.stopping.wait(decision.hang_seconds)
            return Outcome(None, drop=True)
        if decision.kind == "drop":
            return Outcome(None, drop=True)
        if decision.kind == "rate_429":
            self.stats.incr("rate_limited")
            raise Problem(
                429, "rate-limited", "too many requests (injected fault)", headers={"Retry-After": "1"}
            )
        if decision.kind == "error":
            headers = {"Retry-After": "1"} if decision.status in (429, 503) else {}
            raise Problem(
                decision.status, "injected-fault", "injected fault; nothing was changed", headers=headers
            )
        response = self._idempotent(request, lambda: getattr(self, route.handler)(request))
        if decision.kind == "lost_response":
            # The write above is applied and committed; only the answer is lost.
            if decision.lost_mode == "drop":
                return Outcome(None, drop=True)
            raise Problem(500, "injected-fault", "injected fault after the request was processed")
        return Outcome(response)

    def _idempotent(self, request: Request, run: Callable[[], Response]) -> Response:
        """Replay the first response of a write repeated with the same ``Idempotency-Key``."""
        key = request.headers.get("Idempotency-Key")
        if request.method == "GET" or not key:
            return run()
        if len(key) > 255:
            raise Problem(
                400,
                "bad-request",
                "Idempotency-Key is longer than 255 characters",
                errors=[("Idempotency-Key", "must be at most 255 characters")],
            )
        fingerprint = request_fingerprint(request.method, request.path, request.body)
        with self.store.transaction():
            stored = self.store.idempotency.get(key)
            if stored is not None:
                if stored.fingerprint != fingerprint:
                    raise Problem(
                        422,
                        "idempotency-key-reused",
                        "this Idempotency-Key was used for a different request",
                        errors=[("Idempotency-Key", "reused with a different method, path or body")],
                    )
                return Response(
                    stored.status, stored.body, {**stored.headers, "Idempotency-Replayed": "true"}
                )
            response = run()
            if 200 <= response.status < 300:
                self.store.remember(
                    key, StoredResponse(fingerprint, response.status, response.body, dict(response.headers))
                )
            return response

    # ---------------------------------------------------------------- helpers
    @staticmethod
    def _json_body(request: Request) -> Any:
        ctype = (request.headers.get("Content-Type") or JSON_TYPE).split(";")[0].strip().lower()
        if ctype not in (JSON_TYPE, "application/merge-patch+json"):
            raise Problem(415, "unsupported-media-type", f"send {JSON_TYPE}, not {ctype}")
        try:
            return json.loads(request.body.decode("utf-8")) if request.body else None
        except (UnicodeDecodeError, ValueError) as exc:
            raise Problem(400, "malformed-json", f"body is not valid JSON: {exc}") from exc

    def _object_body(self, request: Request) -> dict[str, Any]:
        body = self._json_body(request)
        if not isinstance(body, dict):
            raise Problem(400, "malformed-json", "body must be a JSON object")
        return body

    @staticmethod
    def _spec(request: Request) -> ResourceSpec:
        name = (
            request.route.resource if request.route and request.route.resource else request.params["resource"]
        )
        spec = RESOURCES.get(name)
        if spec is None:
            raise Problem(404, "not-found", f"unknown resource {name!r}")
        return spec

    def _live(self, spec: ResourceSpec, record_id: str) -> Record:
        record = self.store.get(spec.name, record_id)
        if record is None:
            raise Problem(404, "not-found", f"no {spec.singular} with Id {record_id}")
        if record["Deleted"]:
            raise Problem(
                410,
                "gone",
                f"{spec.singular} {record_id} was deleted at {record['UpdatedAt']}",
                extra={"deleted_at": record["UpdatedAt"]},
            )
        return record

    @staticmethod
    def _check_if_match(request: Request, spec: ResourceSpec, record: Record) -> None:
        header = request.headers.get("If-Match")
        if header is None:
            return
        current = record["Version"]
        tags = [t.strip() for t in header.split(",") if t.strip()]
        for tag in tags:
            if tag == "*":
                return
            tag = tag.removeprefix("W/").strip('"')
            if tag == str(current):
                return
        raise Problem(
            412,
            "version-mismatch",
            f"{spec.singular} {record['Id']} is at version {current}, not {header}; re-read it and retry",
            headers={"ETag": f'"{current}"'},
            extra={"current_version": current},
        )

    def _validate(self, spec: ResourceSpec, body: dict[str, Any], *, creating: bool) -> None:
        errors = validate_body(spec, body, creating=creating, ref_exists=self.store.ref_problem)
        if errors:
            raise Problem(422, "validation", f"{len(errors)} invalid field(s)", errors=errors)

    def _check_unique(self, spec: ResourceSpec, values: dict[str, Any], exclude_id: str | None) -> None:
        errors: list[tuple[str, str]] = []
        for name in spec.unique:
            value = values.get(name)
            if isinstance(value, str) and value.strip():
                other = self.store.find_live(spec.name, name, value, exclude_id=exclude_id)
                if other is not None:
                    errors.append((name, f"already used by {other['Id']}"))
        if errors:
            raise Problem(409, "conflict", "a unique field is already in use", errors=errors)

    @staticmethod
    def _record_response(status: int, record: Record, *, location: bool = False) -> Response:
        headers = {"ETag": f'"{record["Version"]}"'}
        if location:
            headers["Location"] = f"/{_resource_of(record)}/{record['Id']}"
        return Response(status, record, headers)

    # ---------------------------------------------------------------- API handlers
    def list_records(self, request: Request) -> Response:
        spec = self._spec(request)
        query = request.query
        filters = {f.param: f for f in spec.filters}
        errors: list[tuple[str, str]] = []
        for name, values in query.items():
            if name not in LIST_PARAMS and name not in filters:
                errors.append((name, "unknown query parameter"))
            elif len(values) > 1:
                errors.append((name, "given more than once"))
        first = {name: values[0] for name, values in query.items()}
        since = None
        if "updated_since" in first:
            try:
                since = parse_ts(first["updated_since"])
            except ValueError:
                errors.append(("updated_since", "must be an ISO-8601 timestamp"))
        after = None
        if first.get("cursor"):
            try:
                after = decode_cursor(first["cursor"])
            except CursorError as exc:
                errors.append(("cursor", str(exc)))
        limit = DEFAULT_LIMIT
        if "limit" in first:
            try:
                limit = int(first["limit"])
                if not 1 <= limit <= MAX_LIMIT:
                    raise ValueError
            except ValueError:
                errors.append(("limit", f"must be an integer from 1 to {MAX_LIMIT}"))
        include_deleted = False
        if "include_deleted" in first:
            flag = first["include_deleted"].lower()
            if flag not in ("true", "false", "1", "0"):
                errors.append(("include_deleted", "must be true or false"))
            include_deleted = flag in ("true", "1")
        if errors:
            raise Problem(400, "bad-query", f"{len(errors)} invalid query parameter(s)", errors=errors)
        page = self.store.list_page(
            spec.name,
            updated_since=since,
            after=after,
            limit=limit,
            include_deleted=include_deleted,
            filters=[
                (filters[p].field, v, filters[p].case_insensitive) for p, v in first.items() if p in filters
            ],
        )
        return Response(200, {"items": page.items, "next_cursor": page.next_cursor})

    def get_record(self, request: Request) -> Response:
        spec = self._spec(request)
        record = self._live(spec, request.params["id"])
        etag = f'"{record["Version"]}"'
        if_none_match = request.headers.get("If-None-Match")
        if if_none_match and etag in [t.strip().removeprefix("W/") for t in if_none_match.split(",")]:
            return Response(304, None, {"ETag": etag})
        return self._record_response(200, record)

    def create_record(self, request: Request) -> Response:
        spec = self._spec(request)
        body = self._object_body(request)
        with self.store.transaction():
            self._validate(spec, body, creating=True)
            self._check_unique(spec, body, None)
            record = self.store.create(spec.name, body)
        return self._record_response(201, record, location=True)

    def patch_record(self, request: Request) -> Response:
        spec = self._spec(request)
        body = self._object_body(request)
        with self.store.transaction():
            record = self._live(spec, request.params["id"])
            self._check_if_match(request, spec, record)
            self._validate(spec, body, creating=False)
            self._check_unique(spec, body, record["Id"])
            if not body:
                return self._record_response(200, record)  # nothing to write: no new version
            updated = self.store.update(spec.name, record["Id"], body)
        return self._record_response(200, updated)

    def delete_record(self, request: Request) -> Response:
        spec = self._spec(request)
        with self.store.transaction():
            record = self.store.get(spec.name, request.params["id"])
            if record is None:
                raise Problem(404, "not-found", f"no {spec.singular} with Id {request.params['id']}")
            self._check_if_match(request, spec, record)
            if not record["Deleted"]:  # deleting a tombstone again changes nothing
                self.store.update(spec.name, record["Id"], {"Deleted": True})
        return Response(204)

    def restore_record(self, request: Request) -> Response:
        spec = self._spec(request)
        with self.store.transaction():
            record = self.store.get(spec.name, request.params["id"])
            if record is None:
                raise Problem(404, "not-found", f"no {spec.singular} with Id {request.params['id']}")
            self._check_if_match(request, spec, record)
            if not record["Deleted"]:
                return self._record_response(200, record)
            self._check_unique(spec, record, record["Id"])
            restored = self.store.update(spec.name, record["Id"], {"Deleted": False})
        return self._record_response(200, restored)

    # ---------------------------------------------------------------- admin handlers
    def openapi(self, request: Request) -> Response:
        return Response(200, OPENAPI_PATH.read_bytes(), content_type="application/yaml")

    def _admin_body(self, request: Request) -> dict[str, Any]:
        body = self._json_body(request)
        if body is None:
            return {}
        if not isinstance(body, dict):
            raise Problem(400, "malformed-json", "body must be a JSON object")
        return body

    def _counts(self) -> dict[str, int]:
        return {name: self.store.count(name) for name in RESOURCES}

    def admin_health(self, request: Request) -> Response:
        return Response(200, {"ok": True, "service": "customcrm-sandbox", "counts": self._counts()})

    def admin_stats(self, request: Request) -> Response:
        snapshot = self.stats.snapshot()
        snapshot["rate_limited"] = snapshot["by_status"].get("429", 0)
        snapshot["rate_limit"] = self.limiter.snapshot()
        snapshot["faults_injected"] = self.faults.snapshot()["injected"]
        return Response(200, snapshot)

    def admin_stats_reset(self, request: Request) -> Response:
        self.stats.reset()
        return Response(200, {"ok": True})

    def admin_reset(self, request: Request) -> Response:
        """Back to the seed (records, counters, idempotency keys) and an empty rate window.

        Body flags as in the Chargebee sandbox: ``stats`` (default true) also zeroes the
        counters, ``faults`` (default false) also turns faults off.
        """
        flags = self._admin_body(request)
        self.store.reset()
        self.limiter.reset()
        if flags.get("stats", True):
            self.stats.reset()
        if flags.get("faults", False):
            self.faults.configure(FaultConfig())
        return Response(200, {"ok": True, "counts": self._counts()})

    def admin_faults(self, request: Request) -> Response:
        """``GET`` the settings; ``POST`` replaces them (``{}`` turns every fault off)."""
        if request.method == "POST":
            try:
                self.faults.configure(FaultConfig.from_dict(self._admin_body(request)))
            except (TypeError, ValueError) as exc:
                raise Problem(400, "bad-faults", str(exc)) from exc
        return Response(200, self.faults.snapshot())

    def admin_config(self, request: Request) -> Response:
        """Change the rate limit or the accepted token at runtime (tests, demos)."""
        if request.method == "POST":
            body = self._admin_body(request)
            if "rate_limit_per_minute" in body:
                self.limiter.configure(int(body["rate_limit_per_minute"]))
            if "token" in body:
                self.token = str(body["token"])
        return Response(
            200,
            {"rate_limit_per_minute": self.limiter.per_minute, "flush_interval": self.store.flush_interval},
        )

    def admin_clock(self, request: Request) -> Response:
        """Move the clock (``advance`` seconds or an absolute ``offset``); UpdatedAt stays increasing."""
        if request.method == "POST":
            body = self._admin_body(request)
            if "advance" in body:
                self.clock.advance(float(body["advance"]))
            if "offset" in body:
                self.clock.set_offset(float(body["offset"]))
        return Response(200, {"now": self.clock.now(), "offset": self.clock.offset})

    def admin_save(self, request: Request) -> Response:
        self.store.flush()
        return Response(200, {"ok": True})

    def admin_records_list(self, request: Request) -> Response:
        """Every record, tombstones included, by Id; ``?id=`` (repeatable) narrows it."""
        spec = self._spec(request)
        records = self.store.all(spec.name)
        if "id" in request.query:
            wanted = set(request.query["id"])
            records = [r for r in records if r["Id"] in wanted]
        return Response(200, {"records": records, "count": len(records)})

    def _admin_existing(self, spec: ResourceSpec, record_id: str) -> Record:
        record = self.store.get(spec.name, record_id)
        if record is None:
            raise Problem(404, "not-found", f"no {spec.singular} with Id {record_id}")
        return record

    def admin_record_get(self, request: Request) -> Response:
        spec = self._spec(request)
        return Response(200, {"record": self._admin_existing(spec, request.params["id"])})

    @staticmethod
    def _admin_fields(spec: ResourceSpec, body: Any) -> dict[str, Any]:
        """Admin edits skip validation (to plant bad data) but not field names."""
        if not isinstance(body, dict):
            raise Problem(400, "malformed-json", "each record must be a JSON object")
        errors = [
            (name, "unknown field" if name not in READ_ONLY else "is managed by the server")
            for name in body
            if name not in ("Id", "Deleted") and (name in READ_ONLY or name not in spec.by_name)
        ]
        if "Id" in body and not isinstance(body["Id"], str | None):
            errors.append(("Id", "must be a string"))
        if errors:
            raise Problem(400, "bad-record", f"{len(errors)} bad field(s)", errors=errors)
        return {k: v for k, v in body.items() if k != "Id"}

    def admin_records_post(self, request: Request) -> Response:
        """Create records, or edit those whose ``Id`` exists, like a person in the CRM's UI.

        Accepts one object, a list, or ``{"records": [...]}`` (the Chargebee sandbox's
        shape); answers ``{"records": [...]}``. Version and UpdatedAt always move, so
        ``"touch": false`` is refused: it would break the feed's ordering guarantee.
        """
        spec = self._spec(request)
        body = self._json_body(request)
        if isinstance(body, dict) and "records" in body:
            if body.get("touch", True) is not True:
                raise Problem(400, "bad-record", "touch=false is not supported: every edit moves UpdatedAt")
            body = body["records"]
        items = body if isinstance(body, list) else [body]
        results: list[Record] = []
        with self.store.transaction():
            for raw in items:
                values = self._admin_fields(spec, raw)
                record_id = raw.get("Id")
                if record_id and self.store.get(spec.name, record_id) is not None:
                    results.append(self.store.update(spec.name, record_id, values))
                else:
                    results.append(self.store.create(spec.name, values, record_id=record_id))
        return Response(200, {"records": results})

    def admin_record_patch(self, request: Request) -> Response:
        spec = self._spec(request)
        values = self._admin_fields(spec, self._json_body(request))
        with self.store.transaction():
            self._admin_existing(spec, request.params["id"])
            record = self.store.update(spec.name, request.params["id"], values)
        return Response(200, {"record": record})

    def admin_record_delete(self, request: Request) -> Response:
        """Tombstone a record as the CRM's UI would (no If-Match, no faults)."""
        spec = self._spec(request)
        with self.store.transaction():
            record = self._admin_existing(spec, request.params["id"])
            if not record["Deleted"]:
                record = self.store.update(spec.name, record["Id"], {"Deleted": True})
        return Response(200, {"record": record})

    def admin_record_remove(self, request: Request) -> Response:
        """Remove a record outright, leaving no tombstone (a hard delete the feed cannot show)."""
        spec = self._spec(request)
        with self.store.transaction():
            self._admin_existing(spec, request.params["id"])
            self.store.remove(spec.name, request.params["id"])
        return Response(200, {"removed": True})


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def _resource_of(record: Record) -> str:
    prefix = str(record["Id"]).split("-", 1)[0]
    for spec in RESOURCES.values():
        if spec.prefix == prefix:
            return spec.name
    return ""


# --------------------------------------------------------------------------- socket layer
class Handler(SandboxRequestHandler):
    """Turns HTTP requests into ``Request`` objects for the ``App`` and writes the outcome."""

    server: CustomcrmServer
    server_version = "CustomcrmSandbox/1.0"
    timeout = 120  # idle keep-alive connections are closed after this

    def _serve(self) -> None:
        started = time.monotonic()
        app = self.server.app
        parts = urlsplit(self.path)
        try:
            body = self.read_body()
        except IncompleteBody:
            return  # the client went away: nothing to answer, nothing applied
        except ValueError:
            self.close_connection = True
            outcome = Outcome(Problem(413, "too-large", "request body too large").response(parts.path))
        else:
            query = parse_qs(parts.query, keep_blank_values=True)
            request = Request(self.command, parts.path, query, self.headers, body)
            try:
                outcome = app.handle(request)
            except Exception:  # a bug in a handler must answer 500, not kill the connection silently
                log.exception("unhandled error in %s %s", self.command, parts.path)
                outcome = Outcome(Problem(500, "internal", "internal error").response(parts.path))
        route, _, _ = app.match(self.command, parts.path)
        status = "dropped" if outcome.drop else str(outcome.response.status if outcome.response else 0)
        if route is not None and not route.admin:
            app.stats.record(self.command, route.template, status)
        elif route is None and not parts.path.startswith("/_sandbox/"):
            app.stats.record(self.command, "<unmatched>", status)
        if outcome.drop or outcome.response is None:
            self.drop_connection()
        else:
            self._write(outcome.response)
        # Path only: query strings hold emails, and bodies are never logged.
        log.info("%s %s %s %.1fms", self.command, parts.path, status, (time.monotonic() - started) * 1000)

    def _write(self, response: Response) -> None:
        payload = response.encoded()
        try:
            self.send_response(response.status)
            for name, value in response.headers.items():
                self.send_header(name, value)
            if payload or response.status not in (204, 304):
                self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if payload:
                self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True  # the client gave up (e.g. timed out during latency)

    do_GET = do_POST = do_PATCH = do_DELETE = do_PUT = _serve

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        """Silenced: ``_serve`` logs one line per request without query strings."""


class CustomcrmServer(SandboxHTTPServer):
    """``SandboxHTTPServer`` carrying the ``App``."""

    def __init__(self, address: tuple[str, int], app: App) -> None:
        self.app = app
        super().__init__(address, Handler)
        self.stopping = app.stopping  # one event wakes latency/hang sleeps on shutdown


def make_server(
    state_path: Path | str | None,
    *,
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    seed_path: Path | str | None = None,
    token: str = DEFAULT_TOKEN,
    rate_limit_per_minute: int = 0,
    flush_interval: float = 0.0,
    clock: Clock | None = None,
) -> CustomcrmServer:
    """Build (bind, not start) a server; ``seed_path`` is read only when the state file is absent.

    ``clock`` (a ``sandbox.common.clock.Clock``) drives UpdatedAt and the rate-limit window;
    ``POST /_sandbox/clock`` moves it.
    """
    clock = clock or Clock()
    store = Store(
        Path(state_path) if state_path is not None else None,
        Path(seed_path) if seed_path is not None else None,
        flush_interval=flush_interval,
        clock=clock.now,
    )
    app = App(store, token=token, rate_limit_per_minute=rate_limit_per_minute, clock=clock)
    return CustomcrmServer((host, port), app)


@contextlib.contextmanager
def serve_in_thread(
    state_path: Path | str | None,
    port: int = 0,
    seed_path: Path | str | None = None,
    **opts: Any,
) -> Iterator[tuple[CustomcrmServer, str]]:
    """Run a server in a background thread for tests; yields ``(server, base_url)``.

    ``port=0`` picks a free ephemeral port. On exit the server stops and its state is
    flushed, so a second ``serve_in_thread`` on the same ``state_path`` sees every
    acknowledged write (the restart test relies on this).
    """
    server = make_server(state_path, port=port, seed_path=seed_path, **opts)
    server.start_in_thread()
    try:
        yield server, server.base_url
    finally:
        server.stop()
        server.app.store.close()
