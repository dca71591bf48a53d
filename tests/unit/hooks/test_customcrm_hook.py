"""CustomcrmHook and its configurable API settings, against a local stub server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from crmsync.hooks._http import ConnectionConfigError
from crmsync.hooks.budget import RateBudget
from crmsync.hooks.customcrm import (
    CustomcrmApiSettings,
    CustomcrmHook,
    format_updated_since,
    if_match_value,
)
from crmsync.hooks.errors import (
    AuthError,
    Conflict,
    PreconditionFailed,
    RateLimited,
    ServerError,
    TransportError,
    ValidationError,
)
from crmsync.hooks.retry import RetryPolicy

from .conftest import Stub, StubRequest

TOKEN = "crm_token_FAKE_0123456789"
MARKER = "BODY-MARKER-2718281828"


@pytest.fixture
def hook(stub: Stub, make_conn: Any, fast_policy: RetryPolicy, no_budget: RateBudget) -> CustomcrmHook:
    conn_id = make_conn("customcrm", host=stub.base_url, password=TOKEN)
    return CustomcrmHook(conn_id, budget=no_budget, retry_policy=fast_policy)


def problem(status: int, slug: str, detail: str, errors: list[tuple[str, str]] | None = None) -> Any:
    return (
        status,
        {"Content-Type": "application/problem+json"},
        {
            "type": f"urn:customcrm:problem:{slug}",
            "title": "Title",
            "status": status,
            "detail": detail,
            "errors": [{"field": f, "message": m} for f, m in errors or []],
        },
    )


# ---------------------------------------------------------------- settings


def test_settings_defaults_follow_the_contract() -> None:
    s = CustomcrmApiSettings()
    assert (s.fields.id, s.fields.version, s.fields.updated_at, s.fields.deleted, s.fields.external_ref) == (
        "Id",
        "Version",
        "UpdatedAt",
        "Deleted",
        "ExternalRef",
    )
    assert (s.envelope.items, s.envelope.next_cursor) == ("items", "next_cursor")
    assert (s.params.cursor, s.params.limit, s.params.updated_since) == ("cursor", "limit", "updated_since")
    assert s.path_of("contacts") == "contacts" and s.idempotency_header == "Idempotency-Key"


@pytest.mark.parametrize(
    ("extra", "complaint"),
    [
        ({"resource_path": {}}, "resource_path: Extra inputs are not permitted"),
        ({"fields": {"id": ""}}, "fields.id"),
        ({"fields": {"etag": "x"}}, "fields.etag"),
        ({"resource_paths": {"contacts": "../admin"}}, "resource_paths"),
        ({"resource_paths": {"contacts": "x?y=1"}}, "resource_paths"),
        ({"params": {"updated_since_format": "rfc"}}, "params.updated_since_format"),
        ({"idempotency_header": "Bad Header"}, "idempotency_header"),
        ({"headers": {"Authorization": "Bearer x"}}, "headers"),
        ({"max_workers": 0}, "max_workers"),
    ],
)
def test_settings_errors_are_clear(make_conn: Any, extra: dict[str, Any], complaint: str) -> None:
    conn_id = make_conn("customcrm", host="http://127.0.0.1:1", password=TOKEN, extra=extra)
    with pytest.raises(ConnectionConfigError) as info:
        CustomcrmHook(conn_id).get_conn()
    assert complaint in str(info.value) and conn_id in str(info.value)
    assert "Bearer x" not in str(info.value)


def test_base_url_and_auth(make_conn: Any) -> None:
    hook = CustomcrmHook(make_conn("customcrm", host="crm.example.com/api", password=TOKEN))
    session = hook.get_conn()
    assert hook.base_url == "https://crm.example.com/api" and session.verify is True
    assert "FAKE" not in repr(session.auth)
    with pytest.raises(ConnectionConfigError, match="API token"):
        CustomcrmHook(make_conn("customcrm", host="http://x")).get_conn()
    with pytest.raises(ConnectionConfigError, match="base URL"):
        CustomcrmHook(make_conn("customcrm", password=TOKEN)).get_conn()


def test_ui_metadata() -> None:
    behaviour = CustomcrmHook.get_ui_field_behaviour()
    assert behaviour["relabeling"] == {"host": "Base URL", "password": "API token"}
    assert CustomcrmHook.conn_type == "customcrm" and CustomcrmHook.default_conn_name == "customcrm_default"


def test_helpers() -> None:
    assert (
        if_match_value(3) == '"3"' and if_match_value('"3"') == '"3"' and if_match_value('W/"3"') == 'W/"3"'
    )
    when = datetime(2024, 5, 1, 12, 0, 0, 1234, tzinfo=timezone(timedelta(hours=2)))
    assert format_updated_since(when, "iso") == "2024-05-01T10:00:00.001234Z"
    assert format_updated_since(when, "unix") == "1714557600"
    assert format_updated_since(when, "unix_ms") == "1714557600001"
    with pytest.raises(ValueError, match="timezone"):
        format_updated_since(datetime(2024, 1, 1), "iso")


# ------------------------------------------------------------------- reads


def test_iter_pages(stub: Stub, hook: CustomcrmHook) -> None:
    pages = {None: ([{"Id": "c1"}, {"Id": "c2"}], "k1"), "k1": ([{"Id": "c3"}], None)}

    def handler(req: StubRequest) -> Any:
        items, nxt = pages[req.params.get("cursor")]
        return 200, {}, {"items": items, "next_cursor": nxt}

    stub.respond(handler)
    since = datetime(2024, 1, 1, tzinfo=UTC)
    assert list(hook.iter_pages("contacts", updated_since=since, limit=2)) == [
        [{"Id": "c1"}, {"Id": "c2"}],
        [{"Id": "c3"}],
    ]
    assert stub.requests[0].path == "/contacts"
    assert stub.requests[0].params == {
        "limit": "2",
        "updated_since": "2024-01-01T00:00:00.000000Z",
        "include_deleted": "true",
    }
    assert stub.requests[1].params["cursor"] == "k1"
    assert stub.requests[0].headers["Authorization"] == f"Bearer {TOKEN}"
    assert hook.calls == {"GET contacts": 2}


def test_a_differing_crm_is_configuration_only(stub: Stub, make_conn: Any, no_budget: RateBudget) -> None:
    """Paths, envelope, paging names and system field names all come from the extra;
    records reach the engine under the contract's names and go back under the CRM's."""
    extra = {
        "resource_paths": {"contacts": "v2/people"},
        "envelope": {"items": "data", "next_cursor": "next"},
        "params": {
            "cursor": "page_token",
            "limit": "page_size",
            "updated_since": "modified_after",
            "include_deleted": None,
            "updated_since_format": "unix",
        },
        "fields": {
            "id": "id",
            "version": "rev",
            "updated_at": "modified",
            "deleted": "archived",
            "external_ref": "billing_ref",
        },
        "filter_params": {"external_ref": "billing_ref"},
        "idempotency_header": None,
        "update_method": "PUT",
    }
    conn_id = make_conn("customcrm", host=f"{stub.base_url}/api", password=TOKEN, extra=extra)
    hook = CustomcrmHook(conn_id, budget=no_budget)
    record = {
        "id": "p1",
        "rev": 4,
        "modified": "2024-01-01T00:00:00Z",
        "archived": False,
        "billing_ref": "cb_1",
        "Name": "Ann",
    }

    def handler(req: StubRequest) -> Any:
        if req.method == "GET" and req.path == "/api/v2/people":
            if req.params.get("page_token"):
                return 200, {}, {"data": [], "next": None}
            return 200, {}, {"data": [record], "next": "t2"}
        return 200, {}, {**record, **req.json()}

    stub.respond(handler)
    pages = list(hook.iter_pages("contacts", updated_since=datetime(2024, 1, 1, tzinfo=UTC)))
    contract = {
        "Id": "p1",
        "Version": 4,
        "UpdatedAt": "2024-01-01T00:00:00Z",
        "Deleted": False,
        "ExternalRef": "cb_1",
        "Name": "Ann",
    }
    assert pages == [[contract]]
    assert stub.requests[0].params == {"page_size": "100", "modified_after": "1704067200"}
    assert stub.requests[1].params["page_token"] == "t2"
    assert hook.find("contacts", external_ref="cb_1") == [contract]
    assert stub.requests[2].params == {"page_size": "100", "billing_ref": "cb_1"}
    hook.create("contacts", {"Name": "Bob", "ExternalRef": "cb_2"})
    assert stub.requests[-1].json() == {"Name": "Bob", "billing_ref": "cb_2"}
    assert not any(k.lower() == "idempotency-key" for k in stub.requests[-1].headers)
    assert hook.update("contacts", "p1", {"Name": "Ann B"}, if_match=4)["Name"] == "Ann B"
    assert stub.requests[-1].method == "PUT" and stub.requests[-1].path == "/api/v2/people/p1"
    assert hook.record_id(contract) == "p1" and hook.record_version(contract) == 4


def test_get(stub: Stub, hook: CustomcrmHook) -> None:
    def handler(req: StubRequest) -> Any:
        if req.path.endswith("/gone"):
            return problem(410, "gone", "contact gone was deleted")
        if req.path.endswith("/missing"):
            return problem(404, "not-found", "no contact")
        return 200, {"ETag": '"2"'}, {"Id": "c1", "Version": 2}

    stub.respond(handler)
    assert hook.get("contacts", "gone") is None
    assert hook.get("contacts", "missing") is None
    assert hook.get("contacts", "c1") == {"Id": "c1", "Version": 2}
    assert hook.calls == {"GET contacts/{id}": 3}


def test_find_requires_a_filter(hook: CustomcrmHook) -> None:
    with pytest.raises(ValueError):
        hook.find("contacts")


# ------------------------------------------------------------------ writes


def test_create_sends_json_and_an_idempotency_key(stub: Stub, hook: CustomcrmHook) -> None:
    stub.respond(lambda req: (201, {}, {"Id": "c9", "Version": 1, **req.json()}))
    made = hook.create(
        "contacts",
        {"FirstName": "Åse", "Born": datetime(2000, 1, 1, tzinfo=UTC), "X": None},
        idempotency_key="k1",
    )
    assert made["Id"] == "c9"
    req = stub.requests[0]
    assert req.json() == {"FirstName": "Åse", "Born": "2000-01-01T00:00:00Z", "X": None}
    assert req.headers["Idempotency-Key"] == "k1" and req.headers["Content-Type"] == "application/json"
    hook.create("contacts", {"FirstName": "B"})
    assert stub.requests[1].headers["Idempotency-Key"].startswith("crmsync-")


def test_update_sends_if_match_and_412_is_precondition_failed(stub: Stub, hook: CustomcrmHook) -> None:
    def handler(req: StubRequest) -> Any:
        if req.headers.get("If-Match") != '"3"':
            return problem(
                412, "version-mismatch", 'contact c1 is at version 4, not "2"; re-read it and retry'
            )
        return 200, {}, {"Id": "c1", "Version": 4}

    stub.respond(handler)
    assert hook.update("contacts", "c1", {"City": "Oslo"}, if_match=3) == {"Id": "c1", "Version": 4}
    assert stub.requests[0].method == "PATCH" and stub.requests[0].json() == {"City": "Oslo"}
    with pytest.raises(PreconditionFailed) as info:
        hook.update("contacts", "c1", {"City": "Bergen"}, if_match=2)
    assert "HTTP 412, version-mismatch" in str(info.value)
    assert len(stub.requests) == 2  # never retried


def test_delete(stub: Stub, hook: CustomcrmHook) -> None:
    def handler(req: StubRequest) -> Any:
        if req.path.endswith("/tomb"):
            return problem(410, "gone", "already deleted")
        if req.path.endswith("/missing"):
            return problem(404, "not-found", "no contact")
        return 204, {}, None

    stub.respond(handler)
    assert hook.delete("contacts", "c1", if_match=5) is None
    assert stub.requests[0].method == "DELETE" and stub.requests[0].headers["If-Match"] == '"5"'
    assert hook.delete("contacts", "tomb") is None
    from crmsync.hooks.errors import NotFound

    with pytest.raises(NotFound):
        hook.delete("contacts", "missing")


# ------------------------------------------------------------------ errors


def test_problem_json_becomes_validation_error_with_fields(stub: Stub, hook: CustomcrmHook) -> None:
    stub.respond(
        lambda req: problem(
            422,
            "validation",
            "2 invalid field(s)",
            [("Email", "not a valid email address"), ("FirstName", "longer than 255 characters")],
        )
    )
    with pytest.raises(ValidationError) as info:
        hook.create("contacts", {"Email": "nope", "FirstName": "x" * 300})
    e = info.value
    assert e.field == "Email" and e.code == "validation" and e.status == 422
    assert e.errors == [("Email", "not a valid email address"), ("FirstName", "longer than 255 characters")]
    assert str(e) == (
        "customcrm POST contacts failed: HTTP 422, validation, param 'Email': "
        "Email: not a valid email address; FirstName: longer than 255 characters"
    )
    assert "x" * 50 not in str(e)


@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (problem(401, "unauthorized", "missing or invalid bearer token"), AuthError),
        (
            problem(409, "conflict", "a unique field is already in use", [("Email", "already used by c2")]),
            Conflict,
        ),
        (
            problem(400, "bad-query", "1 invalid query parameter(s)", [("limit", "must be an integer")]),
            ValidationError,
        ),
    ],
)
def test_error_mapping(stub: Stub, hook: CustomcrmHook, reply: Any, error: type[Exception]) -> None:
    stub.respond(lambda req: reply)
    with pytest.raises(error):
        hook.get("contacts", "c1")
    assert len(stub.requests) == 1


def test_retries_429_and_5xx(stub: Stub, hook: CustomcrmHook, sleeps: Any) -> None:
    replies = [
        problem(429, "rate-limited", "too many requests"),
        (503, {"Retry-After": "1"}, {"detail": "busy"}),
        (200, {}, {"Id": "c1"}),
    ]
    replies[0][1]["Retry-After"] = "2"
    stub.respond(lambda req: replies[len(stub.requests) - 1])
    assert hook.get("contacts", "c1") == {"Id": "c1"}
    assert hook.calls == {"GET contacts/{id}": 3}
    assert sleeps.calls == [pytest.approx(2.1), pytest.approx(1.05)]


def test_create_without_idempotency_is_not_replayed_after_5xx(
    stub: Stub, make_conn: Any, fast_policy: RetryPolicy, no_budget: RateBudget
) -> None:
    conn_id = make_conn("customcrm", host=stub.base_url, password=TOKEN, extra={"idempotency_header": None})
    hook = CustomcrmHook(conn_id, budget=no_budget, retry_policy=fast_policy)
    stub.respond(lambda req: problem(500, "internal", "internal error"))
    with pytest.raises(ServerError):
        hook.create("contacts", {"FirstName": "A"})
    assert len(stub.requests) == 1  # it may have been created: replaying could duplicate
    stub.requests.clear()
    replies = [problem(429, "rate-limited", "slow down"), (201, {}, {"Id": "c1"})]
    stub.respond(lambda req: replies[len(stub.requests) - 1])
    assert hook.create("contacts", {"FirstName": "A"}) == {"Id": "c1"}  # a 429 proves nothing was done


def test_rate_limited_gives_up_with_retry_after(stub: Stub, hook: CustomcrmHook) -> None:
    stub.respond(lambda req: (429, {"Retry-After": "600"}, {"detail": "come back later"}))
    with pytest.raises(RateLimited) as info:
        hook.get("contacts", "c1")
    assert info.value.retry_after == 600.0 and len(stub.requests) == 1


def test_failures_never_leak_token_or_body(stub: Stub, make_conn: Any, output: Any, sleeps: Any) -> None:
    conn_id = make_conn("customcrm", host=stub.base_url, password=TOKEN)
    hook = CustomcrmHook(conn_id, budget=RateBudget(0), retry_policy=RetryPolicy(sleep=sleeps))

    def echo(req: StubRequest) -> Any:
        status, headers, body = problem(
            422 if len(stub.requests) > 1 else 502,
            "validation",
            "1 invalid field(s)",
            [("Email", "not a valid email address")],
        )
        return status, headers, {**body, "echo": req.headers, "sent": req.body.decode(), "debug": MARKER}

    stub.respond(echo)
    with pytest.raises(ValidationError) as info:
        hook.update("contacts", "c1", {"Email": "private.person@example.org"}, if_match=1)
    for text in (str(info.value), repr(info.value.__dict__), output.text()):
        for forbidden in (TOKEN, MARKER, "private.person@example.org", "echo"):
            assert forbidden not in text, (forbidden, text)
    assert "Email: not a valid email address" in str(info.value)


def test_timeout_is_a_transport_error(stub: Stub, make_conn: Any, no_budget: RateBudget, sleeps: Any) -> None:
    import time

    conn_id = make_conn("customcrm", host=stub.base_url, password=TOKEN, extra={"timeout": 0.2})
    hook = CustomcrmHook(conn_id, budget=no_budget, retry_policy=RetryPolicy(max_attempts=2, sleep=sleeps))
    stub.respond(lambda req: (time.sleep(0.5), (200, {}, {"Id": "c1"}))[1])
    with pytest.raises(TransportError) as info:
        hook.get("contacts", "c1")
    assert info.value.kind == "read timeout" and len(stub.requests) == 2
