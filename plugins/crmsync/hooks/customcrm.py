"""Customcrm (the in-house CRM) hook.

Customcrm has no public spec: the sync defines the contract
(``sandbox/customcrm/openapi.yaml``) and the reference server implements it. A real
in-house CRM will differ in details, so everything that tends to differ is a
connection-extra setting validated by :class:`CustomcrmApiSettings`:

* resource paths (``{"resource_paths": {"contacts": "people"}}``);
* list envelope keys (``items`` / ``next_cursor``) and paging/filter parameter names;
* the five system fields the sync relies on (``Id``, ``Version``, ``UpdatedAt``,
  ``Deleted``, ``ExternalRef``). Records are handed to the engine under the contract's
  names whatever the CRM calls them, and written back under the CRM's names, so the
  engine and mapping files never see the difference;
* the idempotency header of creates (or none, if the CRM has no such thing).

Optimistic concurrency: ``update``/``delete`` send ``If-Match: "<version>"``; a 412
raises :class:`~crmsync.hooks.errors.PreconditionFailed` so the engine re-reads and
merges instead of overwriting someone's edit.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any, ClassVar, Literal, Unpack

import requests
from pydantic import BaseModel, ConfigDict, Field, field_validator

from crmsync.hooks import _http
from crmsync.hooks.errors import (
    ApiError,
    NotFound,
    PreconditionFailed,
)
from crmsync.provider import CUSTOMCRM_CONN_FIELDS, CUSTOMCRM_UI_BEHAVIOUR

_PATH_RE = re.compile(r"^[A-Za-z0-9_\-./~]+$")
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-.\[\]]*$")
_HEADER_RE = re.compile(r"^[A-Za-z0-9\-]+$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CustomcrmFieldNames(_Strict):
    """What the CRM calls the system fields (contract names are the defaults)."""

    id: str = "Id"
    version: str = "Version"
    updated_at: str = "UpdatedAt"
    deleted: str = "Deleted"
    external_ref: str = "ExternalRef"

    @field_validator("*")
    @classmethod
    def _non_empty(cls, value: str) -> str:
        if not value or not _NAME_RE.match(value):
            raise ValueError("must be a non-empty field name")
        return value


class CustomcrmListEnvelope(_Strict):
    """Keys of a list response: ``{"items": [...], "next_cursor": "..."}``."""

    items: str = "items"
    next_cursor: str = "next_cursor"


class CustomcrmPagingParams(_Strict):
    """Query parameter names of list calls. ``include_deleted: null`` = not supported."""

    cursor: str = "cursor"
    limit: str = "limit"
    updated_since: str = "updated_since"
    include_deleted: str | None = "include_deleted"
    #: How ``updated_since`` is written: ISO-8601 UTC (``...Z``), Unix seconds, or Unix millis.
    updated_since_format: Literal["iso", "unix", "unix_ms"] = "iso"
    max_limit: int = Field(default=100, ge=1, le=10_000)


class CustomcrmApiSettings(_http.HttpSettings):
    """Connection extra of a ``customcrm`` connection (validated, unknown keys rejected).

    Example for a CRM that differs from the reference contract::

        {"resource_paths": {"contacts": "v2/people"},
         "envelope": {"items": "data", "next_cursor": "next"},
         "params": {"updated_since": "modified_after", "updated_since_format": "unix"},
         "fields": {"id": "id", "version": "rev", "updated_at": "modified"},
         "filter_params": {"external_ref": "billing_ref"},
         "idempotency_header": null}
    """

    resource_paths: dict[str, str] = Field(default_factory=dict)
    envelope: CustomcrmListEnvelope = Field(default_factory=CustomcrmListEnvelope)
    params: CustomcrmPagingParams = Field(default_factory=CustomcrmPagingParams)
    fields: CustomcrmFieldNames = Field(default_factory=CustomcrmFieldNames)
    #: Logical filter name used by the sync (``email``, ``external_ref``) → query parameter.
    filter_params: dict[str, str] = Field(default_factory=dict)
    #: Header that makes a create safe to replay; ``null`` if the CRM has none.
    idempotency_header: str | None = "Idempotency-Key"
    update_method: Literal["PATCH", "PUT", "POST"] = "PATCH"
    #: Resource listed by the UI's "Test connection".
    test_resource: str = "contacts"

    @field_validator("resource_paths")
    @classmethod
    def _valid_paths(cls, value: dict[str, str]) -> dict[str, str]:
        for resource, path in value.items():
            if not _PATH_RE.match(path) or ".." in path.split("/"):
                raise ValueError(f"path of {resource!r} must be a relative URL path without '..', '?' or '#'")
        return value

    @field_validator("idempotency_header")
    @classmethod
    def _valid_header(cls, value: str | None) -> str | None:
        if value is not None and not _HEADER_RE.match(value):
            raise ValueError("must be an HTTP header name")
        return value

    def path_of(self, resource: str) -> str:
        """URL path (relative to the base URL) of a resource's collection."""
        return self.resource_paths.get(resource, resource).strip("/")


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValueError("naive datetime in a Customcrm body; use an aware datetime")
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    raise TypeError(f"cannot JSON-encode a {type(value).__name__}")


def format_updated_since(when: datetime, fmt: str) -> str:
    """Render the incremental cursor the way the CRM wants it (aware datetimes only)."""
    if when.tzinfo is None:
        raise ValueError("updated_since must be timezone-aware (a naive datetime is ambiguous)")
    when = when.astimezone(UTC)
    if fmt == "unix":
        return str(int(when.timestamp()))
    if fmt == "unix_ms":
        return str(int(when.timestamp() * 1000))
    return when.isoformat(timespec="microseconds").replace("+00:00", "Z")


def if_match_value(version: int | str) -> str:
    """``3`` → ``"3"`` (a strong ETag); an already quoted or weak ETag is kept."""
    text = str(version).strip()
    if text.startswith('"') or text.startswith("W/"):
        return text
    return f'"{text}"'


#: The CRM's own uses of a status: 410 Gone is a deleted record, 428 a write without If-Match.
CUSTOMCRM_STATUS_ERRORS: dict[int, type[ApiError]] = {410: NotFound, 428: PreconditionFailed}


class CustomcrmHook(_http.ApiHook, system="customcrm", hook_name="Customcrm"):
    """Read and write Customcrm records: cursor paging, If-Match writes, typed errors.

    :param customcrm_conn_id: Airflow connection id (``conn_type`` ``customcrm``); the
        other parameters (the rate budget, the retry policy): see :class:`~crmsync.hooks._http.ApiHook`.

    Connection: host = base URL; password = API token (sent as ``Bearer``); extra: see
    :class:`CustomcrmApiSettings`.
    """

    conn_fields = CUSTOMCRM_CONN_FIELDS
    ui_behaviour = CUSTOMCRM_UI_BEHAVIOUR
    status_errors = CUSTOMCRM_STATUS_ERRORS
    settings_model: ClassVar[type[_http.HttpSettings]] = CustomcrmApiSettings
    default_rate_per_minute: ClassVar[int | None] = None

    def __init__(
        self, customcrm_conn_id: str = "customcrm_default", **clients: Unpack[_http.HookClients]
    ) -> None:
        super().__init__(customcrm_conn_id, **clients)
        self.customcrm_conn_id = customcrm_conn_id

    # ------------------------------------------------------------------ config

    @property
    def api(self) -> CustomcrmApiSettings:
        """The validated connection extra."""
        settings = self.settings
        assert isinstance(settings, CustomcrmApiSettings)
        return settings

    @property
    def fields(self) -> CustomcrmFieldNames:
        """The CRM's names of the system fields (records are returned under contract names)."""
        return self.api.fields

    def _resolve_base_url(self, conn: Any, settings: _http.HttpSettings) -> str:
        raw = (settings.base_url or "").strip() or (conn.host or "").strip()
        if not raw:
            raise _http.ConnectionConfigError(
                f"connection {self.http_conn_id!r}: set host to the CRM's base URL (e.g. https://crm.example.com/api)"
            )
        if "://" not in raw:
            schema = (conn.schema or "https").strip() or "https"
            raw = f"{schema}://{raw}"
            if conn.port:
                raw = f"{raw}:{conn.port}"
        return raw

    def _auth(self, conn: Any, settings: _http.HttpSettings) -> Any:
        return _BearerAuth(self._password(conn, "API token"))

    # --------------------------------------------------------- field renaming

    def _renames(self) -> list[tuple[str, str]]:
        """``(crm_name, contract_name)`` pairs that differ."""
        f = self.fields
        pairs = [
            (f.id, "Id"),
            (f.version, "Version"),
            (f.updated_at, "UpdatedAt"),
            (f.deleted, "Deleted"),
            (f.external_ref, "ExternalRef"),
        ]
        return [(crm, contract) for crm, contract in pairs if crm != contract]

    def _to_contract(self, record: Any, method: str, template: str) -> dict[str, Any]:
        if not isinstance(record, dict):
            raise self._invalid("record is not an object", method, template)
        renames = self._renames()
        if not renames:
            return record
        out = dict(record)
        for crm, contract in renames:
            if crm in out:
                out[contract] = out.pop(crm)
        return out

    def _from_contract(self, body: Mapping[str, Any]) -> dict[str, Any]:
        out = dict(body)
        for crm, contract in self._renames():
            if contract in out:
                out[crm] = out.pop(contract)
        return out

    # ----------------------------------------------------------------- errors

    def _read_error(self, response: requests.Response, body: dict[str, Any]) -> _http.ErrorReport:
        raw_type = body.get("type") if isinstance(body.get("type"), str) else None
        # "https://crm.example.com/problems/version-mismatch" or "urn:customcrm:problem:gone" → the slug.
        code = (
            re.split(r"[/:#]", raw_type.rstrip("/:#"))[-1] if raw_type and raw_type != "about:blank" else None
        )
        title = body.get("title") if isinstance(body.get("title"), str) else None
        detail = body.get("detail") if isinstance(body.get("detail"), str) else None
        errors: list[tuple[str | None, str]] = []
        raw_errors = body.get("errors")
        if isinstance(raw_errors, list):
            for item in raw_errors:
                if isinstance(item, dict):
                    field = item.get("field") if isinstance(item.get("field"), str) else None
                    errors.append((field, str(item.get("message") or "")))
        # Per-field errors say more than a summary detail ("2 invalid field(s)").
        if errors:
            message = "; ".join(f"{f}: {m}" if f else m for f, m in errors[:10])
        else:
            message = detail or title or response.reason
        param = next((f for f, _ in errors if f), None)
        return _http.ErrorReport(code or title, message, param, errors=errors)

    # ------------------------------------------------------------------ reads

    def _list_params(self, limit: int) -> dict[str, str]:
        p = self.api.params
        if not 1 <= limit <= p.max_limit:
            raise ValueError(f"limit must be between 1 and {p.max_limit}")
        return {p.limit: str(limit)}

    def _iter(self, resource: str, params: dict[str, str], template: str) -> Iterator[list[dict[str, Any]]]:
        api = self.api
        path = api.path_of(resource)
        cursor: str | None = None
        seen: set[str] = set()
        while True:
            query = dict(params)
            if cursor is not None:
                query[api.params.cursor] = cursor
            response = self._request("GET", template, path, params=query)
            body = self._json(response, "GET", template)
            items = body.get(api.envelope.items) if isinstance(body, dict) else None
            if not isinstance(items, list):
                raise self._invalid(
                    f"list response has no {api.envelope.items!r} array",
                    "GET",
                    template,
                    status=response.status_code,
                )
            page = [self._to_contract(item, "GET", template) for item in items]
            if page:
                yield page
            next_cursor = body.get(api.envelope.next_cursor)
            cursor = self._next_page(next_cursor, seen, "next cursor", template, response.status_code)
            if cursor is None:
                return

    def iter_pages(
        self,
        resource: str,
        *,
        updated_since: datetime | None = None,
        include_deleted: bool = True,
        limit: int = 100,
    ) -> Iterator[list[dict[str, Any]]]:
        """Yield pages of records ordered by ``(UpdatedAt, Id)``, tombstones included.

        :param updated_since: aware datetime; only records updated since then.
            ``None`` reads everything.
        :param include_deleted: include tombstones (``Deleted: true``) so deletes are seen.
        :param limit: page size (1..``params.max_limit``).
        """
        api = self.api
        params = self._list_params(limit)
        if updated_since is not None:
            params[api.params.updated_since] = format_updated_since(
                updated_since, api.params.updated_since_format
            )
        if api.params.include_deleted:
            params[api.params.include_deleted] = "true" if include_deleted else "false"
        yield from self._iter(resource, params, resource)

    def find(self, resource: str, **filters: str) -> list[dict[str, Any]]:
        """Return every record matching ``filters`` (``email=...``, ``external_ref=...``).

        Used for first-link matching and crash recovery, so tombstones are included
        (callers skip ``Deleted`` records themselves when they must). Filter names are
        translated through the extra's ``filter_params``.
        """
        if not filters:
            raise ValueError("find() needs at least one filter")
        api = self.api
        params = self._list_params(api.params.max_limit)
        for name, value in filters.items():
            params[api.filter_params.get(name, name)] = str(value)
        if api.params.include_deleted:
            params[api.params.include_deleted] = "true"
        out: list[dict[str, Any]] = []
        for page in self._iter(resource, params, resource):
            out.extend(page)
        return out

    def listable(self, resource: str) -> bool:
        """Every Customcrm resource has a list and a GET (:class:`~crmsync.hooks.client.SyncClient`)."""
        return True

    def iter_changed(
        self, resource: str, since: float | None, *, include_deleted: bool = True
    ) -> Iterator[list[dict[str, Any]]]:
        """:meth:`iter_pages` with ``since`` in Unix seconds (an aware UTC datetime for the
        API's ``updated_since``); the :class:`~crmsync.hooks.client.SyncClient` list."""
        when = None if since is None else datetime.fromtimestamp(since, UTC)
        return self.iter_pages(resource, updated_since=when, include_deleted=include_deleted)

    def find_own(self, resource: str, ref: str) -> list[dict[str, Any]]:
        """The records whose external reference is ``ref`` (the Chargebee id the sync wrote
        into them), tombstones included: :meth:`find` ``external_ref=ref``."""
        return self.find(resource, external_ref=ref)

    def get(self, resource: str, record_id: str) -> dict[str, Any] | None:
        """Return one record, or ``None`` if it does not exist (404) or is a tombstone (410)."""
        template = f"{resource}/{{id}}"
        path = f"{self.api.path_of(resource)}/{_http.quote_segment(record_id)}"
        try:
            response = self._request("GET", template, path)
        except NotFound:
            return None
        return self._to_contract(self._json(response, "GET", template), "GET", template)

    # ----------------------------------------------------------------- writes

    def _body(self, body: Mapping[str, Any]) -> str:
        return json.dumps(self._from_contract(body), default=_json_default, separators=(",", ":"))

    def create(
        self, resource: str, body: Mapping[str, Any], *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """Create a record and return it (with its server-assigned ``Id`` and ``Version``).

        With an idempotency header configured every create carries a key (the caller's,
        or a fresh one), so retries cannot create twice; pass a deterministic key to make
        a rerun after a crash replay the first response too. Without one, a create is
        only retried when the failure proves the CRM never saw it.
        """
        api = self.api
        headers = {"Content-Type": "application/json"}
        if api.idempotency_header:
            headers[api.idempotency_header] = idempotency_key or f"crmsync-{uuid.uuid4()}"
        response = self._request(
            "POST",
            resource,
            api.path_of(resource),
            data=self._body(body),
            headers=headers,
            replay_safe=bool(api.idempotency_header),
        )
        return self._to_contract(self._json(response, "POST", resource), "POST", resource)

    def update(
        self,
        resource: str,
        record_id: str,
        body: Mapping[str, Any],
        *,
        if_match: int | str | None = None,
    ) -> dict[str, Any]:
        """Apply a partial update and return the record.

        :param if_match: the ``Version`` read at extract; the CRM answers 412 when the
            record changed since, raised as :class:`PreconditionFailed`.
        """
        api = self.api
        method = api.update_method
        template = f"{resource}/{{id}}"
        headers = {"Content-Type": "application/json"}
        if if_match is not None:
            headers["If-Match"] = if_match_value(if_match)
        response = self._request(
            method,
            template,
            f"{api.path_of(resource)}/{_http.quote_segment(record_id)}",
            data=self._body(body),
            headers=headers,
        )
        return self._to_contract(self._json(response, method, template), method, template)

    def delete(self, resource: str, record_id: str, *, if_match: int | str | None = None) -> None:
        """Delete (tombstone) a record. Deleting a tombstone (410) is a no-op, so a replay
        after a lost response succeeds; a record that never existed raises ``NotFound``."""
        template = f"{resource}/{{id}}"
        headers = {"If-Match": if_match_value(if_match)} if if_match is not None else None
        try:
            self._request(
                "DELETE",
                template,
                f"{self.api.path_of(resource)}/{_http.quote_segment(record_id)}",
                headers=headers,
            )
        except NotFound as err:
            if err.status == 410:
                return
            raise

    # ---------------------------------------------------------------- helpers

    @staticmethod
    def record_id(record: Mapping[str, Any]) -> str:
        """``Id`` of a record as returned by this hook."""
        return str(record["Id"])

    @staticmethod
    def record_version(record: Mapping[str, Any]) -> int | str | None:
        """``Version`` of a record as returned by this hook (for ``if_match``)."""
        value = record.get("Version")
        return value if isinstance(value, int | str) else None

    def test_connection(self) -> tuple[bool, str]:
        """Check the base URL and token with one cheap list call (the UI's Test button)."""
        try:
            next(iter(self.iter_pages(self.api.test_resource, limit=1)), None)
        except (ApiError, _http.ConnectionConfigError, ValueError) as exc:
            return False, str(exc)
        return True, f"Connected to {self.base_url}"


class _BearerAuth(requests.auth.AuthBase):
    """``Authorization: Bearer <token>``; ``repr`` never shows the token."""

    def __init__(self, token: str) -> None:
        self._token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._token}"
        return request

    def __repr__(self) -> str:
        return "_BearerAuth(<hidden>)"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _BearerAuth) and other._token == self._token

    def __hash__(self) -> int:
        return hash(("bearer", self._token))


__all__ = [
    "CustomcrmApiSettings",
    "CustomcrmFieldNames",
    "CustomcrmHook",
    "CustomcrmListEnvelope",
    "CustomcrmPagingParams",
    "format_updated_since",
    "if_match_value",
]
