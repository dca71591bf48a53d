"""Chargebee API v2 (Product Catalog 2.0) hook.

Talks plain HTTP instead of wrapping the official SDK so that every request goes
through the site's shared rate budget, the typed errors and our retry policy, and
so a local sandbox needs nothing but a base URL (the SDK wants TLS and a
``{site}.{domain}`` host).

Chargebee's conventions, as the official SDK implements them:

* base URL ``https://{site}.chargebee.com/api/v2``; HTTP Basic with the API key as user
  name and an empty password;
* GET for reads, POST for every write, bodies ``application/x-www-form-urlencoded``
  in bracket notation (see :func:`encode_form`);
* list responses ``{"list": [{"customer": {...}}, ...], "next_offset": "..."}``;
* header ``chargebee-idempotency-key`` makes a POST safe to replay. Like the SDK when
  its retries are on, we send a fresh key with every write that has none, so our
  retries can never apply a write twice.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Iterator, Mapping
from datetime import date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any, ClassVar, Unpack
from urllib.parse import urlsplit, urlunsplit

import requests
from pydantic import Field, field_validator
from requests.auth import HTTPBasicAuth

from crmsync.hooks import _http
from crmsync.hooks.budget import DEFAULT_RATE_PER_MINUTE
from crmsync.hooks.errors import (
    ApiError,
    AuthError,
    Conflict,
    NotFound,
    RateLimited,
)
from crmsync.mapping.capabilities import RESOURCES, ChargebeeResource, capability
from crmsync.mapping.creators import api_key_name_problem
from crmsync.provider import CHARGEBEE_CONN_FIELDS, CHARGEBEE_UI_BEHAVIOUR

IDEMPOTENCY_HEADER = "chargebee-idempotency-key"
REPLAYED_HEADER = "chargebee-idempotency-replayed"
MAX_PAGE_SIZE = 100
#: Keys whose dict/list value Chargebee expects as one JSON string (SDK ``jsonKeys``).
JSON_KEYS = frozenset({"meta_data", "metadata"})

_SITE_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,62})$")
_KEY_RE = re.compile(r"^[^\[\]=&]+$")
_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")


# --------------------------------------------------------------------- encoding


def _scalar(value: Any, key: str) -> str:
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | Decimal):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{key}: {value!r} cannot be sent to Chargebee")
        return repr(value)
    if isinstance(value, str):
        return value
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError(f"{key}: naive datetime; Chargebee timestamps need a timezone")
        return str(int(value.timestamp()))
    if isinstance(value, date):
        raise TypeError(f"{key}: pass dates as an aware datetime (Chargebee uses Unix timestamps)")
    raise TypeError(f"{key}: cannot form-encode a {type(value).__name__}")


def _walk(out: list[tuple[str, str]], name: str, path: str, value: Any, suffix: str) -> None:
    if value is None:
        return
    if name in JSON_KEYS and isinstance(value, Mapping | list | tuple):
        out.append((path + suffix, json.dumps(value, separators=(",", ":"), default=str)))
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            key = str(key)
            if not _KEY_RE.match(key):
                raise ValueError(f"{path}: invalid parameter name {key!r}")
            _walk(out, key, f"{path}[{key}]", item, suffix)
        return
    if isinstance(value, list | tuple):
        if suffix:
            raise TypeError(f"{path}: lists inside list items cannot be expressed in Chargebee's notation")
        for index, item in enumerate(value):
            _walk(out, name, path, item, f"[{index}]")
        return
    out.append((path + suffix, _scalar(value, path + suffix)))


def encode_form(params: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Encode ``params`` as Chargebee form fields in bracket notation.

    * nested mapping → ``billing_address[city]=Oslo``;
    * list of scalars → ``coupon_ids[0]=a&coupon_ids[1]=b``;
    * list of mappings → index *last*, as Chargebee expects:
      ``order_line_items[status][0]=shipped&order_line_items[id][0]=li_1``
      (a mapping nested in a list item keeps the index last too);
    * ``meta_data`` / ``metadata`` mappings and lists → one JSON string;
    * ``True``/``False`` → ``"true"``/``"false"``; aware datetimes → Unix seconds;
    * ``None`` values are omitted (Chargebee would read ``""`` as "clear this field").

    Returns ``(name, value)`` pairs in input order for ``requests`` to url-encode.
    """
    out: list[tuple[str, str]] = []
    for key, value in params.items():
        key = str(key)
        if not _KEY_RE.match(key):
            raise ValueError(f"invalid parameter name {key!r}")
        _walk(out, key, key, value, "")
    return out


# --------------------------------------------------------------------- resources
# Which resources exist (path, object key, list filters): crmsync.mapping.capabilities.RESOURCES,
# re-exported here for the hook's callers.


class ChargebeeSettings(_http.HttpSettings):
    """Connection extra of a ``chargebee`` connection.

    ``object_keys`` registers further resources (``{"item_prices": "item_price"}``)
    without a code change.

    ``api_key_names``: names of this site's API keys that a record's ``created_by`` may
    show and that look like a person's email address (``["billing@acme.example"]``).
    Chargebee writes the name of the API key into ``created_by`` of what the API made;
    the product takes any ``created_by`` without an ``@`` (``system``, ``import``,
    ``full_access_key_v1``, ``Airflow Sync (prod)``) as no person already, so only key
    names with an ``@`` need listing (listing others does no harm). A listed name names
    no person: its orders link to no user (user_order) and get no owner (order_order).
    Compared trimmed and case-insensitively. A JSON list; the connection form's single
    text field also takes one name as plain text or a JSON list as text. See
    :mod:`crmsync.mapping.creators`.
    """

    object_keys: dict[str, str] = Field(default_factory=dict)
    api_key_names: tuple[str, ...] = Field(
        default=(),
        description="API key names that look like email addresses (created_by of API-made records).",
    )

    @field_validator("api_key_names", mode="before")
    @classmethod
    def _api_key_names(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    value = json.loads(text)
                except ValueError:
                    raise ValueError(
                        'is text starting with "[" but no JSON list; write a list such as '
                        '["billing@acme.example", "bot@acme.example"]'
                    ) from None
            else:
                value = [value]
        if not isinstance(value, list | tuple):
            raise ValueError('must be a list of API key names, e.g. ["billing@acme.example"]')
        problems = [
            f"entry {n + 1}: {why}"
            for n, name in enumerate(value)
            if (why := api_key_name_problem(name)) is not None
        ]
        if problems:
            raise ValueError("; ".join(problems))
        return tuple(name.strip() for name in value)

    @field_validator("object_keys")
    @classmethod
    def _valid_names(cls, value: dict[str, str]) -> dict[str, str]:
        for resource, key in value.items():
            if not _NAME_RE.match(resource) or not _NAME_RE.match(key):
                raise ValueError("resource and object key names must be lower_snake_case")
        return value


def chargebee_base_url(host: str | None, base_url: str | None) -> str:
    """Derive the API base URL from the connection.

    ``base_url`` (extra) wins; else ``host`` if it is a URL; else ``host`` is the site
    name and the URL is ``https://{site}.chargebee.com/api/v2``. A URL without a path
    gets ``/api/v2`` appended, so ``http://127.0.0.1:8602`` works for the sandbox.
    """
    raw = (base_url or "").strip() or (host or "").strip()
    if not raw:
        raise _http.ConnectionConfigError(
            "chargebee connection has no site: set host to the site name (e.g. 'acme-test') "
            "or to a base URL (e.g. http://127.0.0.1:8602/api/v2)"
        )
    if "://" in raw:
        parts = urlsplit(raw)
        if not parts.netloc:
            raise _http.ConnectionConfigError("chargebee base URL has no host")
        path = parts.path.rstrip("/") or "/api/v2"
        return urlunsplit((parts.scheme, parts.netloc, path, "", ""))
    site = raw.lower().removesuffix(".chargebee.com")
    if not _SITE_RE.match(site):
        raise _http.ConnectionConfigError(
            "chargebee site name must be letters, digits and dashes (e.g. 'acme-test')"
        )
    return f"https://{site}.chargebee.com/api/v2"


# ------------------------------------------------------------------------- hook


def _no_if_match(if_match: int | str | None) -> None:
    if if_match is not None:
        raise ValueError("Chargebee has no conditional write (no If-Match): if_match must be None")


#: The response time a task's default thread count is sized for (see ``ChargebeeHook._max_workers``).
SIZING_LATENCY_SECONDS = 0.5
#: Most threads a task starts on its own (3500 requests/minute at 0.5 s need 30).
MAX_AUTO_WORKERS = 32


def _list_params(
    res: ChargebeeResource,
    updated_after: int | None,
    include_deleted: bool,
    filters: Mapping[str, Any],
    limit: int,
) -> dict[str, str]:
    """The query of a list call (see :meth:`ChargebeeHook.iter_pages`), without ``offset``:
    oldest first where the list sorts, the change filter, deleted records by
    ``include_deleted`` or, where a list has no such param, every status."""
    params: dict[str, str] = {"limit": str(limit)}
    if res.sortable:
        params["sort_by[asc]"] = res.updated_field
    if updated_after is not None:
        params[f"{res.updated_field}[after]"] = str(int(updated_after))
    if res.include_deleted:
        params["include_deleted"] = "true" if include_deleted else "false"
    elif include_deleted and res.deleted_statuses and not any(k.startswith("status[") for k in filters):
        params["status[in]"] = json.dumps(list(res.deleted_statuses))
    for key, value in filters.items():
        params[key] = json.dumps(list(value)) if isinstance(value, list | tuple) else _scalar(value, key)
    return params


#: Chargebee's ``api_error_code`` values that name an error class whatever the status.
CHARGEBEE_ERROR_CODES: dict[str, type[ApiError]] = {
    "api_request_limit_exceeded": RateLimited,
    "api_authentication_failed": AuthError,
    "api_authorization_failed": AuthError,
    "resource_not_found": NotFound,
    "duplicate_entry": Conflict,
}


class ChargebeeHook(_http.ApiHook, system="chargebee", hook_name="Chargebee"):
    """Read and write Chargebee records with paging, retries, rate budget and typed errors.

    :param chargebee_conn_id: Airflow connection id (``conn_type`` ``chargebee``); the
        other parameters (the per-site rate budget, the retry policy): see
        :class:`~crmsync.hooks._http.ApiHook`.

    Connection: host = site name (``acme-test``) or a full base URL; password = API key;
    extra: ``base_url``, ``rate_limit_per_minute`` (default 150, the test-site limit),
    ``rate_limit_burst``, ``max_workers``, ``timeout``, ``connect_timeout``, ``verify``,
    ``max_attempts``, ``max_retry_wait``, ``max_total_retry_wait``, ``object_keys``,
    ``api_key_names`` (API key names that look like email addresses: see
    :class:`ChargebeeSettings`).
    """

    conn_fields = CHARGEBEE_CONN_FIELDS
    ui_behaviour = CHARGEBEE_UI_BEHAVIOUR
    settings_model: ClassVar[type[_http.HttpSettings]] = ChargebeeSettings
    default_rate_per_minute: ClassVar[int | None] = DEFAULT_RATE_PER_MINUTE
    #: Chargebee blocks a site for about a minute after a breach.
    default_rate_limit_pause: ClassVar[float | None] = 60.0

    def __init__(
        self, chargebee_conn_id: str = "chargebee_default", **clients: Unpack[_http.HookClients]
    ) -> None:
        super().__init__(chargebee_conn_id, **clients)
        self.chargebee_conn_id = chargebee_conn_id

    # ------------------------------------------------------------------ config

    def _max_workers(self, settings: _http.HttpSettings) -> int:
        """Threads per task: the connection's ``max_workers`` if set, else sized to the budget.

        A request takes a few hundred milliseconds, so one thread makes about 240 a minute
        at 250 ms: 4 threads cannot use a 1000 or 3500 per minute budget. Unless the
        connection says otherwise, a task gets enough threads to fill its rate budget at
        :data:`SIZING_LATENCY_SECONDS` per request (at least the default 4, at most
        :data:`MAX_AUTO_WORKERS`); the shared budget, not the thread count, bounds the rate.
        """
        if "max_workers" in settings.model_fields_set:
            return settings.max_workers
        rate = settings.rate_limit_per_minute
        if rate is None:
            rate = self.default_rate_per_minute
        if not rate:
            return settings.max_workers
        needed = math.ceil(rate / 60 * SIZING_LATENCY_SECONDS)
        return max(settings.max_workers, min(MAX_AUTO_WORKERS, needed))

    def _resolve_base_url(self, conn: Any, settings: _http.HttpSettings) -> str:
        return chargebee_base_url(conn.host, settings.base_url)

    def _auth(self, conn: Any, settings: _http.HttpSettings) -> Any:
        return HTTPBasicAuth(self._password(conn, "API key"), "")

    def resource(self, name: str) -> ChargebeeResource:
        """The :class:`ChargebeeResource` for a plural resource name."""
        found = RESOURCES.get(name)
        if found is not None:
            return found
        extra = getattr(self.settings, "object_keys", {})
        if name in extra:
            return ChargebeeResource(name, extra[name])
        raise ValueError(
            f"unknown Chargebee resource {name!r}; known: {', '.join(sorted(RESOURCES))} "
            "(add others with the connection extra 'object_keys')"
        )

    # ----------------------------------------------------------------- errors

    def _read_error(self, response: requests.Response, body: dict[str, Any]) -> _http.ErrorReport:
        code = body.get("api_error_code") if isinstance(body.get("api_error_code"), str) else None
        message = body.get("message") if isinstance(body.get("message"), str) else response.reason
        param = body.get("param") if isinstance(body.get("param"), str) else None
        # Chargebee's error code decides over the status (a 400 "resource_not_found" is a NotFound).
        cls = None if response.status_code == 429 else CHARGEBEE_ERROR_CODES.get(code or "")
        return _http.ErrorReport(code, message, param, cls)

    # ------------------------------------------------------------------ reads

    def _readable(self, resource: str) -> ChargebeeResource:
        """The resource, if Chargebee documents reading it; else a ValueError that says so."""
        res = self.resource(resource)
        if not res.readable:
            raise ValueError(
                f"Chargebee documents no list or retrieve of {res.name}: read them from their "
                "events (crmsync.hooks.chargebee_events)"
            )
        return res

    def _unwrap(self, body: Any, res: ChargebeeResource, method: str, template: str) -> dict[str, Any]:
        obj = body.get(res.object_key) if isinstance(body, dict) else None
        if not isinstance(obj, dict):
            raise self._invalid(f"response has no {res.object_key!r} object", method, template)
        return obj

    def iter_pages(
        self,
        resource: str,
        *,
        updated_after: int | None = None,
        include_deleted: bool = True,
        filters: Mapping[str, Any] | None = None,
        limit: int = MAX_PAGE_SIZE,
    ) -> Iterator[list[dict[str, Any]]]:
        """Yield pages of unwrapped objects, oldest ``updated_at`` first.

        :param updated_after: Unix seconds; only records updated strictly after it
            (``updated_at[after]``). ``None`` reads everything, including records that
            have no ``updated_at``.
        :param include_deleted: also list deleted records (they carry ``"deleted": true``),
            which is how deletes are detected: ``include_deleted=true`` where the list
            declares it, else ``status[in]`` with every status, deleted included (items);
            a ``status`` filter in ``filters`` replaces the latter.
        :param filters: extra list filters as Chargebee names them (``{"email[is]": "a@b.c"}``);
            list values become a JSON array (``id[in]``).
        :param limit: page size, 1..100.

        Memory stays flat: one page at a time, following ``next_offset`` until absent.
        """
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise ValueError(f"limit must be between 1 and {MAX_PAGE_SIZE}")
        res = self._readable(resource)
        template = res.name
        base = _list_params(res, updated_after, include_deleted, filters or {}, limit)
        offset: str | None = None
        seen: set[str] = set()
        while True:
            params = dict(base)
            if offset is not None:
                params["offset"] = offset
            response = self._request("GET", template, res.name, params=params)
            body = self._json(response, "GET", template)
            if not isinstance(body, dict) or not isinstance(body.get("list"), list):
                raise self._invalid(
                    "list response has no 'list'", "GET", template, status=response.status_code
                )
            page = [self._unwrap(entry, res, "GET", template) for entry in body["list"]]
            if page:
                yield page
            # a falsy next_offset (absent, "", 0) ends the list
            offset = self._next_page(
                body.get("next_offset") or None, seen, "next_offset", template, response.status_code
            )
            if offset is None:
                return

    def listable(self, resource: str) -> bool:
        """Whether Chargebee documents a list and retrieve of ``resource``
        (:class:`~crmsync.hooks.client.SyncClient`)."""
        return self.resource(resource).readable

    def iter_changed(
        self, resource: str, since: float | None, *, include_deleted: bool = True
    ) -> Iterator[list[dict[str, Any]]]:
        """:meth:`iter_pages` with ``since`` in Unix seconds, cut to whole seconds
        (``updated_at[after]``); the :class:`~crmsync.hooks.client.SyncClient` list."""
        return self.iter_pages(
            resource, updated_after=None if since is None else int(since), include_deleted=include_deleted
        )

    def get(self, resource: str, record_id: str) -> dict[str, Any] | None:
        """:meth:`retrieve` under the :class:`~crmsync.hooks.client.SyncClient` name."""
        return self.retrieve(resource, record_id)

    def find_own(self, resource: str, ref: str) -> list[dict[str, Any]]:
        """The record the sync created under the deterministic id ``ref``, if it exists:
        a Chargebee record's own reference is its id, so this is one retrieve."""
        found = self.retrieve(resource, ref)
        return [] if found is None else [found]

    def retrieve(self, resource: str, record_id: str) -> dict[str, Any] | None:
        """Return one object, or ``None`` if it does not exist or is deleted (404)."""
        res = self._readable(resource)
        template = f"{res.name}/{{id}}"
        try:
            response = self._request("GET", template, f"{res.name}/{_http.quote_segment(record_id)}")
        except NotFound:
            return None
        return self._unwrap(self._json(response, "GET", template), res, "GET", template)

    # ----------------------------------------------------------------- writes

    def _post(
        self,
        res: ChargebeeResource,
        template: str,
        path: str,
        params: Mapping[str, Any] | None,
        idempotency_key: str | None,
    ) -> dict[str, Any]:
        data = encode_form(params or {})
        key = idempotency_key or f"crmsync-{uuid.uuid4()}"
        response = self._request(
            "POST",
            template,
            path,
            data=data,
            headers={IDEMPOTENCY_HEADER: key},
            replay_safe=True,  # the idempotency key makes a replay return the first response
        )
        if response.headers.get(REPLAYED_HEADER, "").lower() == "true":
            self.log.info("chargebee POST %s: idempotent replay of an earlier request", template)
        body = self._json(response, "POST", template)
        if isinstance(body, dict) and isinstance(body.get(res.object_key), dict):
            return dict(body[res.object_key])
        if isinstance(body, dict):
            return body
        raise self._invalid("response is not an object", "POST", template, status=response.status_code)

    def create(
        self, resource: str, params: Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """Create a record (``POST /{resource}``) and return it.

        Pass a deterministic ``id`` in ``params`` where the resource allows it and a
        deterministic ``idempotency_key``: a rerun after a crash then gets either the
        replayed response or :class:`~crmsync.hooks.errors.Conflict` (``duplicate_entry``),
        never a second record.
        """
        res = self.resource(resource)
        return self._post(res, res.name, res.name, params, idempotency_key)

    def update(
        self,
        resource: str,
        record_id: str,
        params: Mapping[str, Any],
        *,
        idempotency_key: str | None = None,
        if_match: int | str | None = None,
    ) -> dict[str, Any]:
        """Update a record (``POST /{resource}/{id}``); send only the changed fields.

        Chargebee has no conditional write: there is no If-Match, the last writer wins,
        so an ``if_match`` is refused (ValueError) rather than silently dropped.
        ``billing_address`` must go through :meth:`action` ``"update_billing_info"``.
        """
        _no_if_match(if_match)
        res = self.resource(resource)
        return self._post(
            res, f"{res.name}/{{id}}", f"{res.name}/{_http.quote_segment(record_id)}", params, idempotency_key
        )

    def action(
        self,
        resource: str,
        record_id: str,
        action: str,
        params: Mapping[str, Any] | None = None,
        *,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Call a record action (``POST /{resource}/{id}/{action}``), e.g. ``delete``.

        Returns the resource's object if the response has one, else the whole body.
        """
        if not _NAME_RE.match(action):
            raise ValueError(f"invalid action name {action!r}")
        res = self.resource(resource)
        return self._post(
            res,
            f"{res.name}/{{id}}/{action}",
            f"{res.name}/{_http.quote_segment(record_id)}/{action}",
            params,
            idempotency_key,
        )

    def delete(self, resource: str, record_id: str, *, if_match: int | str | None = None) -> None:
        """Delete a record through its resource's delete action (``POST /{resource}/{id}/delete``,
        an order's ``cancel``: :attr:`~crmsync.mapping.capabilities.ResourceCapability.delete_action`).
        A record that does not exist raises ``NotFound``; ``if_match`` is refused as in :meth:`update`."""
        _no_if_match(if_match)
        self.action(resource, record_id, capability(resource).delete_action)

    def test_connection(self) -> tuple[bool, str]:
        """Check the site and API key with one cheap list call (the UI's Test button)."""
        try:
            next(iter(self.iter_pages("customers", limit=1)), None)
        except (ApiError, _http.ConnectionConfigError, ValueError) as exc:
            return False, str(exc)
        return True, f"Connected to {self.base_url}"


__all__ = [
    "IDEMPOTENCY_HEADER",
    "RESOURCES",
    "ChargebeeHook",
    "ChargebeeResource",
    "ChargebeeSettings",
    "chargebee_base_url",
    "encode_form",
]
