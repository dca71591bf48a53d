"""References a created Chargebee record carried before their flow linked them.

A customer created from a company-less contact gets Chargebee's default business
entity; when that entity is not linked yet, the link must remember the untranslated
entity (``PENDING_REFS``) so a later run reads it as what the created record held, not
as an edit made in Chargebee. The e2e test is
tests/e2e/test_entity_on_create.py::test_a_contacts_company_does_not_depend_on_which_flow_ran_first.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from crmsync.engine.plan import LinkState
from crmsync.flows.links import _base_after, _pending_after
from crmsync.flows.refs import PENDING_REFS, RefResolver
from crmsync.mapping.model import Mapping, load_mapping
from crmsync.store.schema import link, metadata
from sqlalchemy import create_engine
from sqlalchemy.engine import Engine

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def m() -> Mapping:
    return load_mapping(ROOT / "include" / "mappings" / "contact_customer.yaml")


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    e = create_engine(f"sqlite:///{tmp_path / 'store.db'}")
    metadata.create_all(e)
    return e


def link_entity(engine: Engine, cb_entity: str, crm_customer: str) -> None:
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(
            link.insert().values(
                flow="customer_business_entity",
                crm_id=crm_customer,
                crm_slot="",
                cb_id=cb_entity,
                base="{}",
                crm_snapshot="{}",
                cb_snapshot="{}",
                base_hash="-",
                created_at=now,
                synced_at=now,
            )
        )


def created_row(result: dict[str, Any], sent: dict[str, Any]) -> dict[str, Any]:
    """The plan row of a Chargebee create that was applied."""
    return {
        "cb_op": "create",
        "cb_status": "done",
        "cb_changes": json.dumps(sent),
        "cb_result": json.dumps(result),
        "crm_op": None,
        "crm_status": None,
        "crm_changes": None,
        "crm_result": None,
    }


def test_a_created_records_unlinked_reference_is_kept_pending_in_base_and_snapshot(m: Mapping) -> None:
    values = {"email": "a@example.com", "company_id": None}
    result = {"id": "crm-1", "values": values, "pending_refs": {"company_id": "be_default"}}
    row = created_row(result, {"email": "a@example.com"})
    pending = _pending_after(row, {}, values)  # type: ignore[arg-type]
    assert pending == {"company_id": "be_default"}
    base = _base_after(m, row, dict(values), dict(values), values, pending, None)  # type: ignore[arg-type]
    assert base[PENDING_REFS] == {"company_id": "be_default"}
    assert base["company_id"] is None


def test_pending_is_carried_while_blank_and_dropped_once_it_reads_as_a_value(m: Mapping) -> None:
    row = {"cb_op": "update", "cb_status": None, "cb_result": None, "crm_op": None, "crm_status": None}
    old_base = {"company_id": None, PENDING_REFS: {"company_id": "be_default"}}
    carried = _base_after(m, row, {"company_id": None}, {}, {}, {}, old_base)  # type: ignore[arg-type]
    assert carried[PENDING_REFS] == {"company_id": "be_default"}
    resolved = _base_after(m, row, {"company_id": "CUS-1"}, {}, {}, {}, old_base)  # type: ignore[arg-type]
    assert PENDING_REFS not in resolved
    assert _pending_after(row, {"company_id": "be_x"}, {"company_id": "CUS-1"}) == {}  # type: ignore[arg-type]
    assert _pending_after(row, {"company_id": "be_x"}, {"company_id": None}) == {"company_id": "be_x"}  # type: ignore[arg-type]


def test_resolve_link_translates_pending_references_once_linked_and_strips_the_marker(
    m: Mapping, engine: Engine
) -> None:
    base = {"email": "a@example.com", "company_id": None, PENDING_REFS: {"company_id": "be_default"}}
    state = LinkState("CON-1", "crm-CON-1", base, {"email": "a@example.com"}, dict(base))

    before = RefResolver(engine, m).resolve_link(state)
    assert PENDING_REFS not in before.base and PENDING_REFS not in before.cb_snapshot
    assert before.base["company_id"] is None  # not linked yet: reads as blank, as before

    link_entity(engine, "be_default", "CUS-1")
    after = RefResolver(engine, m).resolve_link(state)
    assert after.base["company_id"] == "CUS-1"
    assert after.cb_snapshot["company_id"] == "CUS-1"
    assert PENDING_REFS not in after.base
    assert state.base[PENDING_REFS] == {"company_id": "be_default"}  # the stored state is untouched


def test_a_link_without_pending_references_is_returned_as_is(m: Mapping, engine: Engine) -> None:
    state = LinkState("CON-1", "crm-CON-1", {"company_id": "CUS-2"}, {}, {"company_id": "CUS-2"})
    assert RefResolver(engine, m).resolve_link(state) is state
