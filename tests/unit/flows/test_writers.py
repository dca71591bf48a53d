"""Writers' recovery paths, with a fake hook for states a real server cannot produce on demand."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from crmsync.flows.writers import ChargebeeWriter, CustomcrmWriter
from crmsync.hooks.errors import Conflict, PreconditionFailed, RateLimited, ServerError, ValidationError
from crmsync.mapping.model import load_mapping

ROOT = Path(__file__).resolve().parents[3]
M = load_mapping(ROOT / "include/mappings/contact_customer.yaml")


def row(**kw: Any) -> dict[str, Any]:
    base = {
        "id": 1,
        "run_id": "r",
        "action": "update",
        "crm_id": "CON-1",
        "cb_id": "cb_1",
        "merged": "{}",
        "cb_op": None,
        "cb_changes": None,
        "cb_if_version": None,
        "crm_op": None,
        "crm_changes": None,
        "crm_if_version": None,
    }
    base.update(kw)
    return base


class FakeChargebee:
    def __init__(
        self, records: dict[str, dict[str, Any]] | None = None, fail_create: Exception | None = None
    ):
        self.records = records or {}
        self.fail_create = fail_create
        self.calls: list[tuple[str, str]] = []

    def retrieve(self, resource: str, rid: str) -> dict[str, Any] | None:
        self.calls.append(("retrieve", rid))
        return self.records.get(rid)

    def create(
        self, resource: str, params: dict[str, Any], *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        self.calls.append(("create", params.get("id", "")))
        if self.fail_create:
            raise self.fail_create
        rec = {"id": params["id"], "updated_at": 1, "resource_version": 1, **params}
        self.records[params["id"]] = rec
        return rec

    def update(self, resource: str, rid: str, params: dict[str, Any], **_: Any) -> dict[str, Any]:
        self.calls.append(("update", rid))
        self.records[rid].update(params)
        return self.records[rid]

    def action(
        self, resource: str, rid: str, action: str, params: dict[str, Any] | None = None, **_: Any
    ) -> dict[str, Any]:
        self.calls.append((action, rid))
        self.records[rid].setdefault("billing_address", {}).update((params or {}).get("billing_address", {}))
        return self.records[rid]


def test_create_after_a_crash_finds_the_record_instead_of_creating_again() -> None:
    existing = {"id": "crm-CON-1", "email": "ada@example.com", "first_name": "Old", "updated_at": 1}
    hook = FakeChargebee({"crm-CON-1": existing})
    w = ChargebeeWriter(M, hook, "r")
    changes = {"email": "ada@example.com", "first_name": "Ada"}
    out = w.execute(
        row(cb_op="create", cb_id=None, cb_changes=json.dumps(changes)), recovering=True, reread=False
    )
    assert out.status == "done" and out.result and out.result["id"] == "crm-CON-1"
    assert ("create", "crm-CON-1") not in hook.calls
    assert hook.records["crm-CON-1"]["first_name"] == "Ada", "the record is brought to the planned values"


def test_duplicate_id_on_create_is_recovered_by_lookup() -> None:
    hook = FakeChargebee(fail_create=Conflict("chargebee", 400, "duplicate_entry", "exists", "id"))
    hook.records["crm-CON-1"] = {"id": "crm-CON-1", "email": "ada@example.com", "updated_at": 1}
    w = ChargebeeWriter(M, hook, "r")
    out = w.execute(
        row(cb_op="create", cb_id=None, cb_changes=json.dumps({"email": "ada@example.com"})),
        recovering=False,
        reread=False,
    )
    assert out.status == "done" and out.result["id"] == "crm-CON-1"


def test_old_extract_is_re_read_and_a_changed_record_is_not_overwritten() -> None:
    hook = FakeChargebee({"cb_1": {"id": "cb_1", "resource_version": 99, "first_name": "Edited"}})
    w = ChargebeeWriter(M, hook, "r")
    out = w.execute(
        row(cb_op="update", cb_changes=json.dumps({"first_name": "Ada"}), cb_if_version="42"),
        recovering=False,
        reread=True,
    )
    assert out.status == "stale" and hook.records["cb_1"]["first_name"] == "Edited"
    assert w.rereads == 1


def test_billing_address_is_sent_whole_through_update_billing_info() -> None:
    hook = FakeChargebee({"cb_1": {"id": "cb_1", "billing_address": {}}})
    w = ChargebeeWriter(M, hook, "r")
    merged = {"address_line1": "Street 1", "city": "Oslo", "zip": "0150", "country": "NO"}
    out = w.execute(
        row(cb_op="update", cb_changes=json.dumps({"city": "Oslo"}), merged=json.dumps(merged)),
        recovering=False,
        reread=False,
    )
    assert out.status == "done"
    assert hook.records["cb_1"]["billing_address"] == {
        "line1": "Street 1",
        "city": "Oslo",
        "zip": "0150",
        "country": "NO",
    }


def test_a_rejected_value_is_reported_not_raised() -> None:
    hook = FakeChargebee(
        fail_create=ValidationError("chargebee", 400, "param_wrong_value", "invalid email", "email")
    )
    w = ChargebeeWriter(M, hook, "r")
    out = w.execute(
        row(cb_op="create", cb_id=None, cb_changes=json.dumps({"email": "x@y.io"})),
        recovering=False,
        reread=False,
    )
    assert out.status == "rejected" and "email" in (out.error or "")
    assert out.rate_limited is False


def _create_failing_with(err: Exception) -> Any:
    w = ChargebeeWriter(M, FakeChargebee(fail_create=err), "r")
    return w.execute(
        row(cb_op="create", cb_id=None, cb_changes=json.dumps({"email": "x@y.io"})),
        recovering=False,
        reread=False,
    )


def test_a_write_refused_for_the_rate_limit_is_flagged_not_matched_by_text() -> None:
    """The site-blocked alert counts ``Outcome.rate_limited``, set from the error's type and
    status; a message that merely mentions 429 is not a rate limit."""
    out = _create_failing_with(RateLimited("chargebee", 429, "api_request_limit_exceeded", "slow down"))
    assert out.status == "failed" and out.rate_limited is True
    # Chargebee's limit code on another status still comes as RateLimited (hooks/chargebee.py)
    assert _create_failing_with(RateLimited("chargebee", 503, "api_request_limit_exceeded", "x")).rate_limited
    text_only = ValidationError("chargebee", 400, "param_wrong_value", "HTTP 429 api_request_limit_exceeded")
    assert _create_failing_with(text_only).rate_limited is False
    server = ServerError("chargebee", 503, "internal_error", "HTTP 429")
    assert _create_failing_with(server).rate_limited is False


class FakeCrm:
    def __init__(self, current: dict[str, Any]):
        self.current = current

    def update(
        self, resource: str, rid: str, body: dict[str, Any], *, if_match: Any = None
    ) -> dict[str, Any]:
        raise PreconditionFailed("customcrm", 412, "precondition_failed", "version mismatch")

    def get(self, resource: str, rid: str) -> dict[str, Any]:
        return self.current


def test_412_after_our_own_applied_write_counts_as_done() -> None:
    hook = FakeCrm({"Id": "CON-1", "Version": 5, "UpdatedAt": "2026-01-01T00:00:00Z", "FirstName": "Ada"})
    w = CustomcrmWriter(M, hook, "r")
    out = w.execute(
        row(crm_op="update", crm_changes=json.dumps({"first_name": "Ada"}), crm_if_version="4"),
        recovering=False,
        reread=False,
    )
    assert out.status == "done" and out.result["version"] == "5"


def test_412_after_someone_else_edited_is_stale() -> None:
    hook = FakeCrm({"Id": "CON-1", "Version": 5, "UpdatedAt": "2026-01-01T00:00:00Z", "FirstName": "Other"})
    w = CustomcrmWriter(M, hook, "r")
    out = w.execute(
        row(crm_op="update", crm_changes=json.dumps({"first_name": "Ada"}), crm_if_version="4"),
        recovering=False,
        reread=False,
    )
    assert out.status == "stale"
