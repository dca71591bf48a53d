"""Hostile input for customer_business_entity (Customcrm customers ⇄ Chargebee business
entities): bad records are held with a reason a person can act on, good ones (however
exotic their names) sync, what the flow cannot do is reported per record, and a fixed
record leaves quarantine on the next run.

Chargebee's public API has no create or update for business entities (the mapping's
``limitations``): Chargebee is the source of the one field, the name, which is also the
match key. So each hypothesis example plants, through the sandboxes' admin endpoints
(no validation; for business entities the admin API is also how Chargebee's UI edits
them):

* Chargebee, good: entities with RTL, emoji/ZWJ, combining marks, bidi controls,
  names exactly 255 characters long (Customcrm's limit) - each creates a customer;
* Chargebee, bad: two entities whose names differ only in case and spacing (a name over
  255 characters, a control character in it, a list/object/true instead of a name, no
  name or a blank one are planted by the generated suite, ``test_hostile_generated.py``,
  which also checks that nothing is written to Chargebee);
* Customcrm, good: a customer whose name matches an entity's in another case and
  spacing (linked; Chargebee's spelling wins), and customers with no entity, which the
  flow cannot create in Chargebee: each is reported with its id and what to do, nothing
  is written to Chargebee;
* Customcrm, bad: a blank Name (the match key), a control character in it, an object
  instead of a name.

Then one bad record is fixed (a Chargebee entity renamed as its UI would, a Customcrm
customer through the public API) and the flow runs again.
"""

from __future__ import annotations

import itertools
import sys
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import requests
from crmsync.store.schema import plan
from hypothesis import strategies as st
from sqlalchemy import select

from tests.chaos import hostile
from tests.chaos.hostile import CB, CRM
from tests.e2e.test_contact_customer import writes

pytestmark = pytest.mark.e2e

FLOW = "customer_business_entity"
LIMIT = 255  # Customcrm's Name (the mapping's max_length)
NAME_FIELDS = ["Name", "name"]


@dataclass
class Rec:
    side: str
    n: int
    name: Any  # as planted
    defect: str | None = None  # None = good
    id: str | None = None
    partner: int | None = None  # a Customcrm customer made to match entity number ``partner``
    orphan: bool = False  # a Customcrm customer with no entity: reported, never created

    def describe(self) -> str:
        """The bad record, for the message of a check after fixing it."""
        return f"{self.side} {self.id} ({self.defect}: {self.name!r})"


def text(v: Any) -> str | None:
    if v is None:
        return None
    s = unicodedata.normalize("NFC", str(v)).strip()
    return s or None


def key(v: Any) -> str:
    return " ".join((text(v) or "").casefold().split())


# -- strategies ----------------------------------------------------------------------------


@st.composite
def good_name(draw: Any, n: int) -> str:
    tag = f" #{n}"  # every entity's name is its own: names are the match key
    if draw(st.integers(0, 3)) == 0:
        return draw(st.sampled_from(["ŵ", "x", "的", "😀"])) * (LIMIT - len(tag)) + tag
    return draw(hostile.exotic_text.filter(lambda s: text(s) is not None and len(s) < LIMIT - 8)) + tag


_NUMBERS = itertools.count(1)
#: a Chargebee name over the limit, with a control character, of a wrong type or blank is
#: planted by the generated suite (test_hostile_generated.py); what it cannot describe stays
DEFECTS_CB = ["duplicate"]
DEFECTS_CRM = ["blank_name", "control", "wrong_type"]


@st.composite
def bad_record(draw: Any, n: int, side: str, defect: str) -> list[Rec]:
    name: Any
    if defect == "control":
        name = f"Bad{draw(st.sampled_from(hostile.CONTROL))}Name #{n}"
    elif defect == "wrong_type":
        name = draw(st.sampled_from([["Acme", "AS"], {"name": "Acme"}, True]))
    elif defect == "blank_name":
        name = draw(st.sampled_from([None, "", "   "]))
    else:  # duplicate: two entities with one name, in other case and spacing: never guessed
        name = f"Twice Named #{n}"
        return [Rec(side, n, name, defect), Rec(side, n, f"  twice  NAMED #{n} ", defect)]
    return [Rec(side, n, name, defect)]


@st.composite
def batches(draw: Any) -> list[Rec]:
    counter = _NUMBERS  # names unique across examples too: old examples' events stay in the feed
    recs: list[Rec] = []
    for _ in range(draw(st.integers(3, 5))):
        n = next(counter)
        recs.append(Rec(CB, n, draw(good_name(n))))
    for side, defects in ((CB, DEFECTS_CB), (CRM, DEFECTS_CRM)):  # every defect, every batch
        for defect in draw(st.permutations(defects)):
            recs += draw(bad_record(next(counter), side, defect))
    # customers that match a good entity by name, in another case and spacing
    for entity in draw(
        st.lists(
            st.sampled_from([r for r in recs if r.side == CB and not r.defect]),
            max_size=2,
            unique_by=lambda r: r.n,
        )
    ):
        spelled = f"  {' '.join(text(entity.name).split()).upper()}  "  # type: ignore[union-attr]
        if key(spelled) != key(entity.name):
            spelled = f" {entity.name} "
        recs.append(Rec(CRM, next(counter), spelled, partner=entity.n))
    for _ in range(draw(st.integers(1, 2))):
        n = next(counter)
        recs.append(Rec(CRM, n, draw(good_name(n)), orphan=True))
    return recs


# -- planting and fixing ---------------------------------------------------------------------


def wipe(sb: Any, store: Any) -> None:
    hostile.wipe(sb, store, crm=("customers",), cb=("business_entities",))


def plant(sb: Any, recs: list[Rec]) -> None:
    crm = [r for r in recs if r.side == CRM]
    for r, rid in zip(crm, hostile.plant(sb, CRM, "customers", [{"Name": r.name} for r in crm]), strict=True):
        r.id = rid
    cb = [r for r in recs if r.side == CB]
    for r in cb:
        r.id = hostile.fresh_id("be_hostile")
    hostile.plant(sb, CB, "business_entities", [{"id": r.id, "name": r.name, "status": "active"} for r in cb])


def fixable(recs: list[Rec]) -> list[Rec]:
    return [r for r in recs if r.defect]


def fix(sb: Any, recs: list[Rec], r: Rec) -> None:
    """What a person does after reading the reason: correct the name."""
    assert r.id
    if r.side == CB:  # Chargebee's UI: no public API for business entities
        r.name = f"Fixed Name #{r.n} {r.id}"
        out = requests.post(
            f"{sb.cb_url}/_sandbox/records/business_entities", json={"id": r.id, "name": r.name}, timeout=30
        )
        out.raise_for_status()
        for sibling in recs:  # the other of two duplicates is alone with its name now
            if sibling.defect == "duplicate" and sibling.n == r.n:
                sibling.defect = None
    else:  # the customer's name is corrected and, as the report says, the entity made in Chargebee
        r.name = f"Fixed Name #{r.n}"
        sb.crm("PATCH", f"customers/{r.id}", json={"Name": r.name})
        entity = Rec(CB, r.n, f"  FIXED name  #{r.n}", id=hostile.fresh_id("be_hostile"))
        hostile.plant(
            sb, CB, "business_entities", [{"id": entity.id, "name": entity.name, "status": "active"}]
        )
        recs.append(entity)
        r.partner = entity.n
    r.defect = None


# -- checks ----------------------------------------------------------------------------------


def skip_reasons(store: Any, run_id: str) -> dict[str, str]:
    """Customcrm id → the reason its plan row gives for skipping it in this run."""
    with store.connect() as conn:
        rows = conn.execute(
            select(plan.c.crm_id, plan.c.reason).where(
                plan.c.run_id == run_id, plan.c.flow == FLOW, plan.c.action == "skip"
            )
        )
        return {crm_id: reason or "" for crm_id, reason in rows if crm_id}


def check_batch(sb: Any, store: Any, recs: list[Rec], run: Any, cb_writes_before: int) -> list[str]:
    problems: list[str] = []
    if not run.ok:
        problems.append(f"run failed: {run.failed_tasks}")
    if writes(sb)["chargebee"] != cb_writes_before:
        problems.append("something was written to Chargebee: business entities are read only")
    held = hostile.held(store, FLOW)
    links = hostile.links(store, FLOW)
    by_cb = {v: k for k, v in links.items()}
    skipped = skip_reasons(store, run.summary["run_id"]) if run.summary else {}
    crm_now = {x["Id"]: x for x in hostile.admin_records(sb, CRM, "customers")}
    cb_now = {x["id"]: x for x in hostile.admin_records(sb, CB, "business_entities")}
    entity_of = {r.n: r for r in recs if r.side == CB and not r.defect}
    for r in recs:
        assert r.id
        what = f"{r.side} {r.id} ({r.defect or ('orphan' if r.orphan else 'good')}: {repr(r.name)[:60]})"
        hold = held.get((r.side, r.id))
        other = links.get(r.id) if r.side == CRM else by_cb.get(r.id)
        if r.defect:
            problems += hostile.bad_record_problems(what, hold, other, r.id, NAME_FIELDS)
            continue
        problems += hostile.good_record_problems(what, hold)
        if r.orphan:
            # the flow cannot create a business entity: reported with the record and the way out
            if other is not None:
                problems.append(f"{what}: an orphan customer was linked to {other}")
            # it is reported in the run that first sees it (later runs only read changes)
            reason = skipped.get(r.id)
            if reason is not None and not (
                r.id in reason
                and "cannot create business entities" in reason
                and "create the entity in Chargebee" in reason
            ):
                problems.append(f"{what}: the skip does not say why and what to do: {reason!r}")
            continue
        if other is None:
            problems.append(f"{what}: a good record was not synced ({hold})")
            continue
        crm_rec, cb_rec = (crm_now[r.id], cb_now[other]) if r.side == CRM else (crm_now[other], cb_now[r.id])
        if text(crm_rec["Name"]) != text(cb_rec.get("name")):
            problems.append(
                f"{what}: Name differs: customcrm={crm_rec['Name']!r} chargebee={cb_rec.get('name')!r}"
            )
        if r.side == CB and text(cb_rec.get("name")) != text(r.name):
            problems.append(f"{what}: the entity's name changed: {cb_rec.get('name')!r}")
        if r.partner is not None and other != entity_of[r.partner].id:
            problems.append(
                f"{what}: linked to {other}, not to the entity it matches ({entity_of[r.partner].id})"
            )
    return problems


# -- the tests -------------------------------------------------------------------------------


def checker(sb: Any, store: Any, recs: list[Rec], run_flow: Any) -> Callable[[], list[str]]:
    """Runs the flow and lists its problems; nothing may be written to Chargebee after
    planting, and orphans are reported in the run that first sees them."""
    before = writes(sb)["chargebee"]
    runs: list[Any] = []

    def check() -> list[str]:
        run = run_flow(FLOW)
        problems = check_batch(sb, store, recs, run, before)
        if not runs:  # orphans are reported in the run that first sees them
            skipped = skip_reasons(store, run.summary["run_id"]) if run.summary else {}
            problems += [
                f"orphan {r.id}: not reported in the first run"
                for r in recs
                if r.orphan and r.id not in skipped
            ]
        runs.append(run)
        return problems

    return check


test_hostile_entities_and_customers_bad_held_good_synced_orphans_reported_fixed_released = hostile.batch_test(
    sys.modules[__name__]
)
