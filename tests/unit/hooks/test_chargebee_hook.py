"""ChargebeeHook against a local stub server (the real sandbox is covered in tests/integration)."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from crmsync.hooks._http import ConnectionConfigError
from crmsync.hooks.budget import RateBudget
from crmsync.hooks.chargebee import IDEMPOTENCY_HEADER, ChargebeeHook, chargebee_base_url
from crmsync.hooks.errors import (
    AuthError,
    Conflict,
    InvalidResponse,
    ServerError,
    TransportError,
    ValidationError,
)
from crmsync.hooks.retry import RetryPolicy

from .conftest import Stub, StubRequest

KEY = "test_key_abc123"


@pytest.fixture
def hook(stub: Stub, make_conn: Any, fast_policy: RetryPolicy, no_budget: RateBudget) -> ChargebeeHook:
    conn_id = make_conn("chargebee", host=f"{stub.base_url}/api/v2", password=KEY)
    return ChargebeeHook(conn_id, budget=no_budget, retry_policy=fast_policy)


def cb_error(status: int, code: str, message: str, param: str | None = None) -> dict[str, Any]:
    body = {"message": message, "type": "invalid_request", "api_error_code": code, "http_status_code": status}
    if param:
        body["param"] = param
    return body


# ------------------------------------------------------------------ config


@pytest.mark.parametrize(
    ("host", "base_url", "expected"),
    [
        ("acme-test", None, "https://acme-test.chargebee.com/api/v2"),
        ("ACME-test.chargebee.com", None, "https://acme-test.chargebee.com/api/v2"),
        ("http://127.0.0.1:8602/api/v2", None, "http://127.0.0.1:8602/api/v2"),
        ("http://127.0.0.1:8602", None, "http://127.0.0.1:8602/api/v2"),
        ("http://127.0.0.1:8602/", None, "http://127.0.0.1:8602/api/v2"),
        ("acme-test", "http://localhost:9/api/v2/", "http://localhost:9/api/v2"),
        (None, "http://localhost:9", "http://localhost:9/api/v2"),
    ],
)
def test_base_url(host: str | None, base_url: str | None, expected: str) -> None:
    assert chargebee_base_url(host, base_url) == expected


@pytest.mark.parametrize("host", [None, "", "acme test", "evil.com/x", "a_b", "-x"])
def test_bad_site(host: str | None) -> None:
    with pytest.raises(ConnectionConfigError):
        chargebee_base_url(host, None)


def test_connection_settings(make_conn: Any) -> None:
    conn_id = make_conn(
        "chargebee",
        host="acme-test",
        password=KEY,
        extra={
            "rate_limit_per_minute": "1000",
            "max_workers": 8,
            "timeout": 12,
            "verify": False,
            "extra__chargebee__connect_timeout": "3",
            "base_url": "",
        },
    )
    hook = ChargebeeHook(conn_id)
    assert hook.base_url == "" or hook.base_url  # lazily resolved
    assert hook.max_workers == 8
    assert hook.settings.timeouts == (3.0, 12.0)
    assert hook.budget.rate_per_minute == 1000  # type: ignore[attr-defined]
    assert hook.base_url == "https://acme-test.chargebee.com/api/v2"
    session = hook.get_conn()
    assert session.verify is False
    assert session.auth.username == KEY and session.auth.password == ""  # type: ignore[union-attr]


def test_defaults(make_conn: Any) -> None:
    hook = ChargebeeHook(make_conn("chargebee", host="acme-test", password=KEY))
    assert hook.get_conn().verify is True  # TLS verification on by default
    assert hook.settings.timeouts == (10.0, 30.0)
    assert hook.budget.limit == 150  # type: ignore[attr-defined]
    assert hook.retry_policy.max_attempts == 6 and hook.retry_policy.max_wait == 60.0
    assert hook.max_workers == 4


def test_all_hooks_of_a_site_share_one_budget(make_conn: Any) -> None:
    a = ChargebeeHook(make_conn("chargebee", host="acme-test", password=KEY))
    b = ChargebeeHook(make_conn("chargebee", host="acme-test", password="other"))
    c = ChargebeeHook(make_conn("chargebee", host="acme", password=KEY))
    assert a.budget is b.budget and a.budget is not c.budget


def test_invalid_extra_names_the_key_not_the_value(make_conn: Any) -> None:
    conn_id = make_conn(
        "chargebee",
        host="acme-test",
        password=KEY,
        extra={"rate_limit_per_minit": 10, "timeout": "sk_secret_value"},
    )
    with pytest.raises(ConnectionConfigError) as info:
        ChargebeeHook(conn_id).max_workers
    text = str(info.value)
    assert "rate_limit_per_minit" in text and "timeout" in text and conn_id in text
    assert "sk_secret_value" not in text


def test_missing_api_key(make_conn: Any) -> None:
    with pytest.raises(ConnectionConfigError, match="API key"):
        ChargebeeHook(make_conn("chargebee", host="acme-test")).get_conn()


def test_ui_metadata() -> None:
    behaviour = ChargebeeHook.get_ui_field_behaviour()
    assert behaviour["relabeling"] == {"host": "Site", "password": "API key"}
    assert set(behaviour["hidden_fields"]) == {"schema", "port", "login"}
    assert "acme-test" in behaviour["placeholders"]["host"]
    assert ChargebeeHook.conn_type == "chargebee" and ChargebeeHook.default_conn_name == "chargebee_default"
    assert ChargebeeHook.conn_name_attr == "chargebee_conn_id" and ChargebeeHook.hook_name == "Chargebee"


# ------------------------------------------------------------------- reads


def test_iter_pages(stub: Stub, hook: ChargebeeHook) -> None:
    pages = {
        None: ([{"customer": {"id": "a"}}, {"customer": {"id": "b"}}], "o1"),
        "o1": ([{"customer": {"id": "c"}}], "o2"),
        "o2": ([], None),
    }

    def handler(req: StubRequest) -> Any:
        items, nxt = pages[req.params.get("offset")]
        return 200, {}, {"list": items, **({"next_offset": nxt} if nxt else {})}

    stub.respond(handler)
    got = list(hook.iter_pages("customers", updated_after=1700000000, filters={"id[in]": ["a", "b"]}))
    assert got == [[{"id": "a"}, {"id": "b"}], [{"id": "c"}]]
    first = stub.requests[0]
    assert first.path == "/api/v2/customers"
    assert first.params == {
        "limit": "100",
        "sort_by[asc]": "updated_at",
        "updated_at[after]": "1700000000",
        "include_deleted": "true",
        "id[in]": '["a", "b"]',
    }
    assert [r.params.get("offset") for r in stub.requests] == [None, "o1", "o2"]
    assert first.headers["Authorization"] == "Basic " + base64.b64encode(f"{KEY}:".encode()).decode()
    assert hook.calls == {"GET customers": 3}


def test_iter_pages_events_and_no_deleted(stub: Stub, hook: ChargebeeHook) -> None:
    stub.respond(lambda req: (200, {}, {"list": []}))
    assert list(hook.iter_pages("events", updated_after=5)) == []
    assert stub.requests[0].params == {
        "limit": "100",
        "sort_by[asc]": "occurred_at",
        "occurred_at[after]": "5",
    }
    list(hook.iter_pages("customers", include_deleted=False, limit=7))
    assert stub.requests[1].params["include_deleted"] == "false" and stub.requests[1].params["limit"] == "7"


def test_iter_pages_validates_before_calling(stub: Stub, hook: ChargebeeHook) -> None:
    with pytest.raises(ValueError):
        list(hook.iter_pages("customers", limit=101))
    with pytest.raises(ValueError, match="unknown Chargebee resource"):
        list(hook.iter_pages("widgets"))
    assert stub.requests == []


def test_iter_pages_detects_a_paging_loop(stub: Stub, hook: ChargebeeHook) -> None:
    stub.respond(lambda req: (200, {}, {"list": [{"customer": {"id": "a"}}], "next_offset": "same"}))
    with pytest.raises(InvalidResponse, match="paging_loop"):
        list(hook.iter_pages("customers"))


def test_object_keys_extra(stub: Stub, make_conn: Any, no_budget: RateBudget) -> None:
    conn_id = make_conn(
        "chargebee", host=stub.base_url, password=KEY, extra={"object_keys": {"coupons": "coupon"}}
    )
    stub.respond(lambda req: (200, {}, {"coupon": {"id": "c1"}}))
    assert ChargebeeHook(conn_id, budget=no_budget).retrieve("coupons", "c1") == {"id": "c1"}


def test_retrieve(stub: Stub, hook: ChargebeeHook) -> None:
    def handler(req: StubRequest) -> Any:
        if req.path.endswith("/missing"):
            return 404, {}, cb_error(404, "resource_not_found", "Sorry, we couldn't find that resource")
        return 200, {}, {"customer": {"id": "a/b c", "email": "x@y.z"}}

    stub.respond(handler)
    assert hook.retrieve("customers", "missing") is None
    assert hook.retrieve("customers", "a/b c") == {"id": "a/b c", "email": "x@y.z"}
    assert stub.requests[1].path == "/api/v2/customers/a%2Fb%20c"
    assert hook.calls == {"GET customers/{id}": 2}


def test_invalid_json_response(stub: Stub, hook: ChargebeeHook) -> None:
    stub.respond(lambda req: (200, {"Content-Type": "text/html"}, b"<html>secret page</html>"))
    with pytest.raises(InvalidResponse) as info:
        hook.retrieve("customers", "x")
    assert "secret page" not in str(info.value) and "text/html" in str(info.value)


# ------------------------------------------------------------------ writes


def test_create_update_action(stub: Stub, hook: ChargebeeHook) -> None:
    stub.respond(lambda req: (200, {}, {"customer": {"id": "cust_1"}, "card": {"id": "x"}}))
    assert hook.create(
        "customers",
        {
            "id": "cust_1",
            "email": "a@b.c",
            "meta_data": {"crm": "C-1"},
            "phone": None,
            "taxability": "taxable",
        },
        idempotency_key="k-1",
    ) == {"id": "cust_1"}
    req = stub.requests[0]
    assert req.method == "POST" and req.path == "/api/v2/customers"
    assert req.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert req.form == [
        ("id", "cust_1"),
        ("email", "a@b.c"),
        ("meta_data", '{"crm":"C-1"}'),
        ("taxability", "taxable"),
    ]
    assert req.headers[IDEMPOTENCY_HEADER] == "k-1"

    hook.update("customers", "cust_1", {"first_name": "Ann"})
    req = stub.requests[1]
    assert req.path == "/api/v2/customers/cust_1" and req.form == [("first_name", "Ann")]
    assert req.headers[IDEMPOTENCY_HEADER].startswith("crmsync-")  # generated: retries stay safe

    hook.action("customers", "cust_1", "update_billing_info", {"billing_address": {"city": "Oslo"}})
    assert stub.requests[2].path == "/api/v2/customers/cust_1/update_billing_info"
    assert stub.requests[2].form == [("billing_address[city]", "Oslo")]
    hook.action("customers", "cust_1", "delete")
    assert stub.requests[3].path == "/api/v2/customers/cust_1/delete" and stub.requests[3].body == b""
    with pytest.raises(ValueError):
        hook.action("customers", "cust_1", "../admin")
    assert hook.calls == {
        "POST customers": 1,
        "POST customers/{id}": 1,
        "POST customers/{id}/update_billing_info": 1,
        "POST customers/{id}/delete": 1,
    }


def test_extras_never_become_headers(stub: Stub, make_conn: Any, no_budget: RateBudget) -> None:
    conn_id = make_conn(
        "chargebee",
        host="acme-test",
        password=KEY,
        extra={"base_url": stub.base_url, "rate_limit_per_minute": 150, "max_workers": 2},
    )
    stub.respond(lambda req: (200, {}, {"list": []}))
    list(ChargebeeHook(conn_id, budget=no_budget).iter_pages("customers"))
    names = {k.lower() for k in stub.requests[0].headers}
    assert not names & {"base_url", "rate_limit_per_minute", "max_workers"}
    assert stub.requests[0].headers["User-Agent"].startswith("crmsync/")


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    ("status", "body", "error", "text"),
    [
        (
            400,
            cb_error(400, "duplicate_entry", "The value cust_1 is already present.", "id"),
            Conflict,
            "chargebee POST customers failed: HTTP 400, duplicate_entry, param 'id': "
            "The value cust_1 is already present.",
        ),
        (
            400,
            cb_error(400, "param_wrong_value", "email : invalid email format", "email"),
            ValidationError,
            "param 'email'",
        ),
        (
            401,
            cb_error(401, "api_authentication_failed", "Sorry, authentication failed. Invalid api key"),
            AuthError,
            "HTTP 401, api_authentication_failed",
        ),
        (418, {}, Exception, "HTTP 418"),
    ],
)
def test_error_mapping(
    stub: Stub, hook: ChargebeeHook, status: int, body: Any, error: type[Exception], text: str
) -> None:
    stub.respond(lambda req: (status, {}, body))
    with pytest.raises(error) as info:
        hook.create("customers", {"id": "cust_1"})
    assert text in str(info.value)
    assert len(stub.requests) == 1  # 4xx is never retried


def test_retries_5xx_and_429(stub: Stub, hook: ChargebeeHook, sleeps: Any) -> None:
    replies = [
        (500, {}, cb_error(500, "internal_error", "oops")),
        (429, {"Retry-After": "7"}, cb_error(429, "api_request_limit_exceeded", "Too many requests")),
        (503, {}, b"<html>upstream</html>"),
        (200, {}, {"customer": {"id": "a"}}),
    ]
    stub.respond(lambda req: replies[len(stub.requests) - 1])
    assert hook.retrieve("customers", "a") == {"id": "a"}
    assert hook.calls == {"GET customers/{id}": 4}
    assert len(sleeps.calls) == 3 and sleeps.calls[1] == pytest.approx(7 * 1.05)


def test_429_pauses_the_shared_budget(stub: Stub, make_conn: Any, sleeps: Any) -> None:
    budget = RateBudget(150, sleep=lambda seconds: None)
    penalties: list[float] = []
    original = budget.penalise
    budget.penalise = lambda s: (penalties.append(s), original(0))[1]  # type: ignore[method-assign]
    conn_id = make_conn("chargebee", host=stub.base_url, password=KEY)
    hook = ChargebeeHook(conn_id, budget=budget, retry_policy=RetryPolicy(sleep=sleeps, rng=lambda: 0.0))
    replies = [
        (429, {"Retry-After": "3"}, cb_error(429, "api_request_limit_exceeded", "slow")),
        (429, {}, cb_error(429, "api_request_limit_exceeded", "slow")),  # no header: Chargebee blocks ~60 s
        (200, {}, {"customer": {"id": "a"}}),
    ]
    stub.respond(lambda req: replies[len(stub.requests) - 1])
    hook.retrieve("customers", "a")
    assert penalties == [3.0, 60.0] and sleeps.calls == [3.0, 60.0]


def test_gives_up_after_max_attempts(stub: Stub, hook: ChargebeeHook) -> None:
    stub.respond(lambda req: (502, {}, cb_error(502, "internal_temporary_error", "try later")))
    with pytest.raises(ServerError, match="HTTP 502"):
        hook.retrieve("customers", "a")
    assert len(stub.requests) == 6


def test_connection_refused_is_a_transport_error(make_conn: Any, no_budget: RateBudget, sleeps: Any) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conn_id = make_conn("chargebee", host=f"http://127.0.0.1:{port}", password=KEY)
    hook = ChargebeeHook(conn_id, budget=no_budget, retry_policy=RetryPolicy(max_attempts=3, sleep=sleeps))
    with pytest.raises(TransportError) as info:
        hook.retrieve("customers", "someone@example.com")
    assert info.value.sent is False and "before the request was sent" in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__
    assert "someone@example.com" not in str(info.value)
    assert hook.calls == {"GET customers/{id}": 3}


def test_threads_share_one_hook(stub: Stub, make_conn: Any, no_budget: RateBudget) -> None:
    """The engine runs writes in a thread pool over one hook: sessions are per thread,
    the call counter and budget are shared and exact."""
    from concurrent.futures import ThreadPoolExecutor

    conn_id = make_conn("chargebee", host=stub.base_url, password=KEY, extra={"max_workers": 16})
    hook = ChargebeeHook(conn_id, budget=no_budget)
    stub.respond(lambda req: (200, {}, {"customer": {"id": req.path.rsplit("/", 1)[-1]}}))
    with ThreadPoolExecutor(max_workers=hook.max_workers) as pool:
        got = list(pool.map(lambda i: hook.retrieve("customers", f"c{i}"), range(200)))
    assert [g["id"] for g in got if g] == [f"c{i}" for i in range(200)]
    assert hook.calls == {"GET customers/{id}": 200} and len(stub.requests) == 200
    assert hook.keep_alive_adapter is not None and hook.keep_alive_adapter._pool_maxsize == 16


def test_test_connection(stub: Stub, hook: ChargebeeHook) -> None:
    stub.respond(lambda req: (200, {}, {"list": []}))
    assert hook.test_connection() == (True, f"Connected to {stub.base_url}/api/v2")
    stub.respond(lambda req: (401, {}, cb_error(401, "api_authentication_failed", "Invalid api key")))
    ok, message = hook.test_connection()
    assert not ok and "api_authentication_failed" in message


# ---------------------------------------------------------- secrets and bodies

SECRET = "sk_test_FAKE_SECRET_9f8e7d6c5b4a"
MARKER = "BODY-MARKER-3141592653"
CUSTOMER = "private.person@example.org"


def test_failures_never_leak_secret_body_or_request_data(
    stub: Stub, make_conn: Any, output: Any, sleeps: Any
) -> None:
    """A failing call whose response echoes the request (auth header, form body) plus a
    marker: neither the logs nor the exception may contain any of it, only the API's
    own short message."""
    conn_id = make_conn("chargebee", host=stub.base_url, password=SECRET)
    hook = ChargebeeHook(
        conn_id, budget=RateBudget(0, sleep=sleeps), retry_policy=RetryPolicy(sleep=sleeps, rng=lambda: 1.0)
    )

    def echo(req: StubRequest) -> Any:
        status = 500 if len(stub.requests) < 3 else 400
        return (
            status,
            {},
            {
                **cb_error(status, "param_wrong_value", "email : invalid email format", "email"),
                "echo": {"headers": req.headers, "body": req.body.decode()},
                "debug": MARKER,
            },
        )

    stub.respond(echo)
    with pytest.raises(ValidationError) as info:
        hook.create("customers", {"email": CUSTOMER, "id": "cust_1"})
    logged = output.text()
    texts = [str(info.value), repr(info.value), repr(info.value.__dict__), logged]
    basic = base64.b64encode(f"{SECRET}:".encode()).decode()
    for text in texts:
        for forbidden in (SECRET, basic, MARKER, CUSTOMER, "echo"):
            assert forbidden not in text, (forbidden, text)
    assert "email : invalid email format" in str(info.value)
    retry_lines = [line for line in output.lines() if "retry" in line]
    assert len(retry_lines) == 2
    assert "chargebee POST customers: HTTP 500 param_wrong_value; retry 2/6 in 1.0 s" in retry_lines[0]
    assert "chargebee POST customers: HTTP 500 param_wrong_value; retry 3/6 in 2.0 s" in retry_lines[1]


def test_httphook_run_does_not_log_bodies(stub: Stub, make_conn: Any, output: Any) -> None:
    """Even the inherited ``HttpHook.run`` path is body-free on these hooks."""
    conn_id = make_conn("chargebee", host=stub.base_url, password=SECRET)
    stub.respond(lambda req: (400, {}, {**cb_error(400, "x", "bad"), "debug": MARKER}))
    with pytest.raises(Exception) as info:
        ChargebeeHook(conn_id, budget=RateBudget(0)).run("customers")
    assert MARKER not in output.text() and MARKER not in str(info.value)
    assert isinstance(info.value, ValidationError)


def test_items_list_deleted_ones_through_the_status_filter(stub: Stub, hook: ChargebeeHook) -> None:
    """Item.ListParams has no include_deleted: deleted items are listed by their status (issue 12)."""
    stub.respond(lambda req: (200, {}, {"list": []}))
    list(hook.iter_pages("items", updated_after=9))
    assert stub.requests[0].params == {
        "limit": "100",
        "sort_by[asc]": "updated_at",
        "updated_at[after]": "9",
        "status[in]": '["active", "archived", "deleted"]',
    }
    list(hook.iter_pages("items", include_deleted=False))
    assert stub.requests[1].params == {"limit": "100", "sort_by[asc]": "updated_at"}
    # a caller's own status filter is sent as given
    list(hook.iter_pages("items", filters={"status[is]": "archived"}))
    assert stub.requests[2].params["status[is]"] == "archived" and "status[in]" not in stub.requests[2].params
