"""Hostile input for quote_order: a quote and the order made from it, one of them bad, are
held with a reason a person can act on; good pairs (however exotic their text) link and
sync; a fixed record leaves quarantine on the next run.

Same shape as ``test_hostile_input_order_order.py``. This flow creates nothing: it links a
Customcrm quote to the Chargebee order whose reference_id names the quote's Number, or else
to the order made from the invoice the quote names (and then writes the Number into the
order's reference_id). So the batch is made of pairs; a pair has at most one defect, and a
bad pair is not linked.

Bad Chargebee orders: a currency that is no ISO 4217 code, a total that is no whole number
(text, fraction, NaN, infinity), a note over Chargebee's 600 (1- to 4-byte units), control
characters or an object/list/true-false in the note. Bad Customcrm quotes: the same for
Notes, and (linked by invoice, so the Number is written to Chargebee) a Number over
reference_id's 50 characters or with control characters. Good: exotic unicode, notes at the
limit, nulls and blanks, lower/odd-case currencies, numeric-text totals, garbage in the
quote's fields that flow from Chargebee only (Chargebee's values overwrite it).
"""

from __future__ import annotations

import itertools
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import strategies as st

from tests.chaos import hostile
from tests.chaos.hostile import CB, CRM
from tests.chaos.test_hostile_input_order_order import _fits, _text

pytestmark = pytest.mark.e2e

FLOW = "quote_order"
FIELDS = hostile.mapped_fields(FLOW)  # canonical name → (Customcrm, Chargebee)
CURRENCY_OK = ["EUR", "NOK", "usd", " Gbp "]


def canon(name: str, v: Any) -> Any:
    if name == "amount":
        return None if v in (None, "") else int(v)
    t = _text(v)
    return t.upper() if name == "currency" and t else t


@dataclass
class Pair:
    n: int
    crm: dict[str, Any]  # raw Customcrm quote body
    cb: dict[str, Any]  # raw Chargebee order body
    by_invoice: bool
    defect: str | None = None
    side: str | None = None  # the bad record's side
    field: str | None = None  # canonical name of the bad field
    crm_id: str | None = None
    cb_id: str | None = None

    def rid(self, side: str) -> str:
        return (self.crm_id if side == CRM else self.cb_id) or ""

    def describe(self) -> str:
        """The bad record, for the message of a check after fixing it."""
        return f"{self.side} {self.rid(self.side or CRM)} ({self.defect} {self.field})"


@st.composite
def good_pair(draw: Any, n: int) -> Pair:
    by_invoice = draw(st.booleans())
    number = f"QH-{n}"
    notes_kind = draw(st.sampled_from(["text", "text", "limit", "none", "blank"]))
    notes: Any = {
        "text": lambda: draw(hostile.exotic_text.filter(lambda s: _fits(600, s))),
        "limit": lambda: draw(st.sampled_from(hostile.LONG_UNITS)) * 600,
        "none": lambda: None,
        "blank": lambda: draw(st.sampled_from(["", "  ", "\u3000"])),
    }[notes_kind]()
    notes_on_crm = draw(st.booleans())
    invoice = hostile.fresh_id("INV-H")
    crm = {
        "Number": number,
        "Status": "accepted",
        "Notes": notes if notes_on_crm else None,
        "InvoiceId": invoice if by_invoice else None,
        # flow from Chargebee only: whatever the quote holds is overwritten
        "Amount": draw(st.sampled_from([None, 1, -7, "lots"])),
        "Currency": draw(st.sampled_from([None, "EUR", "XXX"])),
        "OrderNumber": draw(st.sampled_from([None, "bogus"])),
    }
    cb = {
        "id": hostile.fresh_id("hostile_qo"),
        "object": "order",
        "document_number": f"{90000 + n}",
        "invoice_id": invoice,
        "status": "queued",
        "order_type": "system_generated",
        "created_by": "system",
        "deleted": False,
        "note": None if notes_on_crm else notes,
        "reference_id": None if by_invoice else number,
        "total": draw(st.one_of(st.integers(0, 10**9), st.sampled_from(["4200", 2**53]))),
        "currency_code": draw(st.sampled_from(CURRENCY_OK)),
    }
    return Pair(n, crm, cb, by_invoice)


DEFECTS_CB = ["currency", "total", "too_long", "control", "wrong_type"]
DEFECTS_CRM = ["too_long", "control", "wrong_type", "number_too_long", "number_control"]


@st.composite
def bad_pair(draw: Any, n: int, fixable_only: bool = False) -> Pair:
    p = draw(good_pair(n))
    side = draw(st.sampled_from([CRM, CB]))
    defects = DEFECTS_CB if side == CB else DEFECTS_CRM
    defect = draw(st.sampled_from([d for d in defects if d in FIXABLE] if fixable_only else defects))
    p.defect, p.side = defect, side
    rec = p.cb if side == CB else p.crm
    note_key = "note" if side == CB else "Notes"
    p.field = "notes"
    if defect == "currency":
        p.field = "currency"
        rec["currency_code"] = draw(st.sampled_from(["XYZ", "EURO", "€", "E1R", "12"]))
    elif defect == "total":
        p.field = "amount"
        rec["total"] = draw(st.sampled_from(["abc", "12,50", 12.5, math.nan, math.inf, "1e3"]))
    elif defect in ("too_long", "control", "wrong_type"):
        p.crm["Notes"] = p.cb["note"] = None  # the bad note is the only one: it must flow
        rec[note_key] = {
            "too_long": lambda: draw(st.sampled_from(hostile.LONG_UNITS)) * (600 + draw(st.integers(1, 300))),
            "control": lambda: f"Bad{draw(st.sampled_from(hostile.CONTROL))}Note{n}",
            "wrong_type": lambda: draw(st.sampled_from([{"a": 1}, ["x"], True])),
        }[defect]()
    else:  # the quote's Number goes into the order's reference_id: linked by invoice
        p.field = "quote_number"
        p.by_invoice = True
        p.crm["InvoiceId"] = p.cb["invoice_id"]
        p.cb["reference_id"] = None
        if defect == "number_too_long":
            p.crm["Number"] = draw(st.sampled_from(hostile.LONG_UNITS)) * (50 + draw(st.integers(1, 100)))
        else:
            p.crm["Number"] = f"QH{draw(st.sampled_from(hostile.CONTROL))}{n}"
    return p


@st.composite
def batches(draw: Any) -> list[Pair]:
    counter = itertools.count(1)
    pairs = [draw(good_pair(next(counter))) for _ in range(draw(st.integers(3, 5)))]
    pairs += [draw(bad_pair(next(counter))) for _ in range(draw(st.integers(4, 8)))]
    pairs.append(draw(bad_pair(next(counter), fixable_only=True)))  # the fix step always has one
    return pairs


# -- planting and fixing ------------------------------------------------------------------------


def wipe(sb: Any, store: Any) -> None:
    hostile.wipe(sb, store, crm=("quotes",), cb=("orders",), flow=FLOW)


def plant(sb: Any, pairs: list[Pair]) -> None:
    ids = hostile.plant(sb, CRM, "quotes", [p.crm for p in pairs])
    for p, rid in zip(pairs, ids, strict=True):
        p.crm_id = rid
        p.cb_id = p.cb["id"]
    hostile.plant_json(sb, "orders", [{k: v for k, v in p.cb.items() if v is not None} for p in pairs])


#: a Chargebee order's currency and total cannot be changed through the API
FIXABLE = {"too_long", "control", "wrong_type", "number_too_long", "number_control"}


def fixable(pairs: list[Pair]) -> list[Pair]:
    return [p for p in pairs if p.defect in FIXABLE]


def fix(sb: Any, pairs: list[Pair], p: Pair) -> None:
    """What a person does after reading the reason (``pairs``: the batch, not needed here)."""
    assert p.field
    if p.field == "quote_number":
        p.crm["Number"] = f"QH-FIXED-{p.n}"
        sb.crm("PATCH", f"quotes/{p.crm_id}", json={"Number": p.crm["Number"]})
    elif p.side == CRM:
        p.crm["Notes"] = f"Fixed note {p.n}"
        sb.crm("PATCH", f"quotes/{p.crm_id}", json={"Notes": p.crm["Notes"]})
    else:
        p.cb["note"] = f"Fixed note {p.n}"
        sb.cb("POST", f"orders/{p.cb_id}", data={"note": p.cb["note"]})
    p.defect = None  # from now on it must behave as a good pair
    # the fixed record changed, so it is read again; its partner did not change since the
    # first run read it: a full resync reads it too (quote_order's limitations say so)


# -- checks -----------------------------------------------------------------------------------


def check_batch(sb: Any, store: Any, pairs: list[Pair], run: Any) -> list[str]:
    now = hostile.after_run(sb, store, FLOW, run, "quotes", "orders")
    problems, held, links, crm_now, cb_now = now.problems, now.held, now.links, now.crm, now.cb
    for p in pairs:
        if p.defect:
            assert p.side and p.field
            rid = p.rid(p.side)
            rec = p.cb if p.side == CB else p.crm
            key = FIELDS[p.field][1 if p.side == CB else 0]
            what = f"{p.side} {rid} ({p.defect} {p.field}: {repr(rec.get(key))[:60]})"
            hold = held.get((p.side, rid))
            if hold is None:
                problems.append(f"{what}: not held")
            else:
                if hold[0] not in ("invalid", "rejected"):
                    problems.append(f"{what}: held as {hold[0]!r}: {hold[1]!r}")
                problems += hostile.reason_problems(what, hold[1], rid, [*FIELDS[p.field], p.field])
            if p.crm_id in links or p.cb_id in links.values():
                problems.append(f"{what}: a bad pair was linked")
            continue
        what = f"pair {p.crm_id}/{p.cb_id} (good, by {'invoice' if p.by_invoice else 'reference_id'})"
        for side in (CRM, CB):
            problems += hostile.good_record_problems(what, held.get((side, p.rid(side))), f"{side} record")
        if links.get(p.crm_id or "") != p.cb_id:
            problems.append(f"{what}: not linked (links to {links.get(p.crm_id or '')!r})")
            continue
        crm_rec, cb_rec = crm_now[p.crm_id], cb_now[p.cb_id]
        for name, (c, k) in FIELDS.items():
            cv, kv = canon(name, crm_rec.get(c)), canon(name, cb_rec.get(k))
            if cv != kv:
                problems.append(f"{what}: {name} differs: customcrm={cv!r} chargebee={kv!r}")
        want = _text(p.crm["Notes"]) or _text(p.cb["note"])  # exotic text arrives unchanged
        if canon("notes", crm_rec.get("Notes")) != want:
            problems.append(f"{what}: notes changed: {crm_rec.get('Notes')!r} != {want!r}")
    return problems


# -- the test ---------------------------------------------------------------------------------


def checker(sb: Any, store: Any, pairs: list[Pair], run_flow: Any) -> Callable[[], list[str]]:
    return lambda: check_batch(sb, store, pairs, run_flow(FLOW))


test_hostile_quotes_and_orders_bad_held_with_reasons_good_linked_fixed_released = hostile.batch_test(
    sys.modules[__name__]
)
