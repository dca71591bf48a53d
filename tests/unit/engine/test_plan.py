"""Decisions per pair: create, match, update, echo, deletes by policy, quarantine."""

from __future__ import annotations

from typing import Any

import pytest
from crmsync.engine import plan
from crmsync.engine.canonical import SideRecord, to_canonical
from crmsync.engine.plan import Action, LinkState, Op
from crmsync.mapping.model import DeletePolicy, Mapping, Side


def full(m: Mapping) -> dict[str, Any]:
    """Every Customcrm field of ``m`` empty, as the Customcrm contract returns a record."""
    return {f.customcrm: None for f in m.fields}


def crm(m: Mapping, rid: str = "CON-1", deleted: bool = False, t: float = 100, **raw: Any) -> SideRecord:
    # Customcrm returns every field (null when empty); a missing one would be unknown
    raw = {**full(m), "Email": "ada@example.com", "FirstName": "Ada", "LastName": "Lovelace", **raw}
    return SideRecord(Side.CUSTOMCRM, rid, to_canonical(m, Side.CUSTOMCRM, raw), t, "3", deleted)


def cb(m: Mapping, rid: str = "cb_1", deleted: bool = False, t: float = 100, **raw: Any) -> SideRecord:
    raw = {"email": "ada@example.com", "first_name": "Ada", "last_name": "Lovelace", **raw}
    return SideRecord(Side.CHARGEBEE, rid, to_canonical(m, Side.CHARGEBEE, raw), t, "1700", deleted)


def linked(m: Mapping, c: SideRecord, k: SideRecord) -> LinkState:
    return LinkState(c.id, k.id, dict(c.values), dict(c.values), dict(k.values), c.version, k.version)


def test_new_crm_record_is_created_in_chargebee(contact_mapping: Mapping) -> None:
    d = plan.decide_new(contact_mapping, crm(contact_mapping, Phone="+47 1"))
    assert d.action is Action.CREATE and d.cb_write is not None and d.cb_write.op is Op.CREATE
    assert d.cb_write.changes["phone"] == "+47 1" and "city" not in d.cb_write.changes


def test_bad_email_is_quarantined_with_an_actionable_reason(contact_mapping: Mapping) -> None:
    d = plan.decide_new(contact_mapping, crm(contact_mapping, Email="maria@@example"))
    assert d.action is Action.QUARANTINE and d.hold_kind == "invalid"
    assert "CON-1" in d.reason and "Email" in d.reason and "valid email" in d.reason
    assert "fix it in Customcrm" in d.reason


def test_long_name_is_quarantined_naming_the_limit(contact_mapping: Mapping) -> None:
    d = plan.decide_new(contact_mapping, crm(contact_mapping, FirstName="x" * 200))
    assert d.action is Action.QUARANTINE
    assert "FirstName is 200 characters" in d.reason and "at most 150" in d.reason


def test_missing_match_key_is_held_not_created(contact_mapping: Mapping) -> None:
    d = plan.decide_new(contact_mapping, crm(contact_mapping, Email=""))
    assert d.action is Action.QUARANTINE and "match key" in d.reason


def test_deleted_unlinked_record_is_skipped(contact_mapping: Mapping) -> None:
    assert plan.decide_new(contact_mapping, crm(contact_mapping, deleted=True)).action is Action.SKIP


def test_match_links_and_fills_both_ways(contact_mapping: Mapping) -> None:
    m = contact_mapping
    d = plan.decide_match(m, crm(m, Phone="+47 1"), cb(m, company="ACME"))
    assert d.action is Action.LINK_BY_MATCH
    assert d.cb_write and d.cb_write.changes == {"phone": "+47 1"}
    assert d.crm_write and d.crm_write.changes == {"company": "ACME"} and d.crm_write.if_version == "3"


def test_echo_of_our_own_write_is_unchanged(contact_mapping: Mapping) -> None:
    m = contact_mapping
    c, k = crm(m), cb(m)
    d = plan.decide_linked(m, linked(m, c, k), None, cb(m, t=200))
    assert d.action is Action.UNCHANGED and d.crm_write is None and d.cb_write is None


def test_linked_edit_uses_the_snapshot_of_the_unchanged_side(contact_mapping: Mapping) -> None:
    m = contact_mapping
    c, k = crm(m), cb(m)
    d = plan.decide_linked(m, linked(m, c, k), crm(m, City="Oslo"), None)
    assert d.action is Action.UPDATE and d.cb_write and d.cb_write.changes == {"city": "Oslo"}
    assert d.cb_write.if_version == "1700"


def test_invalid_value_on_update_quarantines_the_source(contact_mapping: Mapping) -> None:
    m = contact_mapping
    c, k = crm(m), cb(m)
    d = plan.decide_linked(m, linked(m, c, k), crm(m, Country="Norway"), None)
    assert d.action is Action.QUARANTINE and d.held_side is Side.CUSTOMCRM and "ISO country" in d.reason


@pytest.mark.parametrize(
    ("policy", "action", "op_side"),
    [
        ("propagate", Action.DELETE, Side.CHARGEBEE),
        ("unlink", Action.UNLINK, None),
        ("restore", Action.RESTORE, Side.CUSTOMCRM),
    ],
)
def test_crm_delete_follows_policy(
    contact_mapping: Mapping, policy: str, action: Action, op_side: Side | None
) -> None:
    m = contact_mapping.model_copy(
        update={
            "delete": contact_mapping.delete.model_copy(update={"on_customcrm_delete": DeletePolicy(policy)})
        }
    )
    c, k = crm(m), cb(m)
    d = plan.decide_linked(m, linked(m, c, k), crm(m, deleted=True), None)
    assert d.action is action
    if op_side is not None:
        w = d.write_for(op_side)
        assert w is not None
    else:
        assert d.crm_write is None and d.cb_write is None
    assert d.reason and "deleted in Customcrm" in d.reason
    assert d.deleted_on == (Side.CUSTOMCRM,)  # structured: read back from the audit, not the reason


def test_deleted_on_both_sides_unlinks(contact_mapping: Mapping) -> None:
    m = contact_mapping
    c, k = crm(m), cb(m)
    d = plan.decide_linked(m, linked(m, c, k), crm(m, deleted=True), cb(m, deleted=True))
    assert d.action is Action.UNLINK
    assert d.deleted_on == (Side.CUSTOMCRM, Side.CHARGEBEE)


@pytest.mark.parametrize("policy", list(DeletePolicy))
def test_a_chargebee_delete_names_the_deleted_side_under_every_policy(
    contact_mapping: Mapping, policy: DeletePolicy
) -> None:
    spec = contact_mapping.delete.model_copy(update={"on_chargebee_delete": policy})
    m = contact_mapping.model_copy(update={"delete": spec})
    c, k = crm(m), cb(m)
    d = plan.decide_linked(m, linked(m, c, k), None, cb(m, deleted=True))
    assert d.deleted_on == (Side.CHARGEBEE,)
    assert plan.decide_linked(m, linked(m, c, k), crm(m, City="Oslo"), None).deleted_on == ()


def test_ambiguous_names_the_candidates(contact_mapping: Mapping) -> None:
    d = plan.ambiguous(contact_mapping, crm(contact_mapping), ["Chargebee a", "Chargebee b"], "shared")
    assert d.action is Action.QUARANTINE and "Chargebee a" in d.reason and d.hold_kind == "ambiguous"
