"""Hostile input for product_item that the generated suite does not plant.

The batch test for every defect the mapping describes (text over its limit, control
characters, wrong types, an unknown or missing Kind, a blank Sku or Name, Archived that is
neither true nor false, Metadata that is no JSON object, on both sides) is generated from
the mapping: ``test_hostile_generated.py``. What stays here are the two defects only
Chargebee's item rules explain: a Sku Chargebee rejects as an item id, and a Name another
item already has (item names are unique in Chargebee, compared in NFC and any case).
"""

from __future__ import annotations

import unicodedata
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.chaos import generated as gen
from tests.chaos import hostile
from tests.chaos.generated import CB, CRM, Rec

pytestmark = pytest.mark.e2e

FLOW = gen.load(gen.PRODUCT_MAPPINGS / "product_item.yaml")
#: Customcrm takes these as a Sku; Chargebee does not as an item id
BAD_SKUS = ["HP {n}", "HP-{n}-Ø", "HP-{n}-的", "HP/{n}", "HP-{n}\x07", "HP-{n}\x00", "HP-{n}-" + "x" * 100]


@st.composite
def batches(draw: Any) -> list[Rec]:
    recs: list[Rec] = []
    for side in (CB, CRM):  # Chargebee's good items first: a Customcrm name copies one
        for _ in range(draw(st.integers(1, 3))):
            u = next(FLOW.uniq)
            recs.append(Rec(side, u, draw(gen.good_values(FLOW, side, u))))
    first_item = next(r for r in recs if r.side == CB)
    # a name Chargebee compares as equal to the one the engine writes (NFC, other case)
    taken = first_item.values["name"] = unicodedata.normalize("NFC", first_item.values["name"])
    other_case = taken.upper()
    same = other_case.lower() == taken.lower() and unicodedata.is_normalized("NFC", other_case)
    u = next(FLOW.uniq)
    values = draw(gen.good_values(FLOW, CRM, u))
    values["name"] = f"  {other_case if same else taken} "
    recs.append(Rec(CRM, u, values, "name_taken", "name"))
    for template in draw(st.lists(st.sampled_from(BAD_SKUS), min_size=1, max_size=3, unique=True)):
        u = next(FLOW.uniq)
        values = draw(gen.good_values(FLOW, CRM, u))
        values["sku"] = template.format(n=u)
        recs.append(Rec(CRM, u, values, "bad_sku", "sku"))
    return recs


@hostile.BATCH_SETTINGS
@given(recs=batches(), pick=st.integers(min_value=0))
def test_bad_skus_and_taken_names_held_with_reasons_fixed_released(
    run_flow: Any, sandboxes: Any, store: Any, recs: list[Rec], pick: int
) -> None:
    gen.wipe(sandboxes, store, FLOW)
    gen.plant(sandboxes, FLOW, recs)
    problems = gen.check_batch(sandboxes, store, FLOW, recs, run_flow(FLOW.name))
    assert not problems, "\n".join(problems)

    bad = [r for r in recs if r.defect]
    victim = bad[pick % len(bad)]
    what = f"{victim.side} {victim.id} ({victim.defect} {victim.field})"
    gen.fix(sandboxes, FLOW, victim)
    victim.defect = None  # from now on it must behave as a good record
    problems = gen.check_batch(sandboxes, store, FLOW, recs, run_flow(FLOW.name))
    assert not problems, f"after fixing {what}:\n" + "\n".join(problems)
