"""Hostile input for contact_customer that the generated suite does not plant.

The batch test (bad values held with a reason, good ones synced, a fixed record released,
twins linked by email, wrong types held rather than written as their Python repr) is
generated from the mapping: ``test_hostile_generated.py``. What stays here is a check of
one reason's wording.
"""

from __future__ import annotations

from typing import Any

import pytest
from crmsync.store.schema import quarantine
from sqlalchemy import select

from tests.chaos import generated as gen
from tests.chaos.generated import CB, Rec

pytestmark = pytest.mark.e2e

FLOW = gen.load(gen.PRODUCT_MAPPINGS / "contact_customer.yaml")


def test_too_long_reason_for_a_chargebee_record_states_a_true_limit(
    run_flow: Any, sandboxes: Any, store: Any
) -> None:
    recs = [Rec(CB, 1, {"email": "long.cb@example.com", "first_name": "y" * 200}, "too_long", "first_name")]
    gen.wipe(sandboxes, store, FLOW)
    gen.plant(sandboxes, FLOW, recs)
    run = run_flow()
    assert not gen.check_batch(sandboxes, store, FLOW, recs, run)  # held, with id, field and action
    with store.connect() as conn:
        reason = conn.execute(
            select(quarantine.c.reason).where(quarantine.c.record_id == recs[0].id)
        ).scalar()
    assert "Customcrm FirstName allows at most 150" not in reason, reason
