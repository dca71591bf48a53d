"""Shared parts of the hostile-input tests (one test file per flow).

Every hostile-input test follows the same shape: empty the flow's resources on both
sandboxes and the link store, plant a generated batch through the sandboxes' admin
endpoints (which skip validation, so bad data really is in the systems), run the flow,
check that every bad record is held with a reason naming the record, the field and what
to do, that every good record synced, then fix one bad record through the public API and
check it leaves quarantine on the next run.

This module holds what does not depend on a flow: the hostile text, the admin-endpoint
plumbing and the reason checks.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import requests
import yaml
from crmsync.store.schema import TABLES, link, quarantine
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select

CRM, CB = "customcrm", "chargebee"

#: what an invoice's copy keeps (the model's and the order_order batch's paid invoices; the rest
#: is the sandbox's bookkeeping or its orders)
INVOICE_COPY = (
    "customer_id",
    "status",
    "date",
    "paid_at",
    "currency_code",
    "sub_total",
    "tax",
    "total",
    "amount_paid",
    "amount_due",
    "line_items",
    "shipping_address",
    "billing_address",
)

#: C0/C1 control characters that no field accepts
CONTROL = ["\x00", "\x01", "\x07", "\x08", "\x0b", "\x0c", "\x1b", "\x7f", "\x9f"]
#: text that is unusual but valid: it must sync unchanged
EXOTIC = [
    "مرحبا بالعالم",  # Arabic, RTL
    "שָׁלוֹם",  # Hebrew with points
    "👩‍💻🎉",  # ZWJ sequence + emoji
    "e\u0301\u0301",  # stacked combining marks
    "Zalgo\u0351\u0354\u0362",
    "\u202eevil\u202c",  # RTL override
    "zero\u200bwidth",
    "\uff26\uff55\uff4c\uff4c\uff57\uff49\uff44\uff54\uff48",  # fullwidth
    "İstanbul straße",
    "O'Brien & Søn <b>",
    "a=b&c=d[e]+%20",  # form-encoding metacharacters
]
#: units for over-long values: one, two, three and four UTF-8 bytes
LONG_UNITS = ["x", "ø", "的", "😀"]

#: Chargebee attributes with an update endpoint of their own (an assignment: every sub-field
#: is sent, or it is cleared)
CB_NESTED_UPDATE = {"billing_address": "update_billing_info"}

#: words a reason uses to say what a person should do
ACTIONS = ("fix", "shorten", "remove", "fill", "correct", "choose")
#: holds that mean "this record did not sync"; others (a reference to another flow's record
#: not linked yet: the other fields are synced) are fine for a good record
PROBLEM_KINDS = {"invalid", "rejected", "failed", "ambiguous"}

#: hypothesis settings for a batch test: few, large examples (each is two DAG runs), no
#: shrinking, no example database (the sandboxes are fresh per test)
BATCH_SETTINGS = settings(
    max_examples=4,
    deadline=None,
    phases=[Phase.explicit, Phase.generate],
    database=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,  # a generated batch plants every defect a flow has
    ],
)

_chars = st.characters(codec="utf-8", exclude_categories=("Cc", "Cs"))
#: valid but hostile text (no control characters, no surrogates)
exotic_text = st.one_of(st.sampled_from(EXOTIC), st.text(_chars, min_size=1, max_size=24))

_IDS = itertools.count(1)


def fresh_id(prefix: str) -> str:
    """A record id never used before in this process: the sandboxes remember idempotency
    keys derived from ids, so a wiped-and-replanted id could replay an old answer."""
    return f"{prefix}_{next(_IDS)}"


# -- the sandboxes' admin endpoints -----------------------------------------------------------


def admin_records(sb: Any, side: str, resource: str) -> list[dict[str, Any]]:
    """Every record of ``resource`` as stored (deleted ones included)."""
    base = sb.crm_url if side == CRM else sb.cb_url
    out = requests.get(f"{base}/_sandbox/records/{resource}", timeout=30)
    out.raise_for_status()
    records: list[dict[str, Any]] = out.json()["records"]
    return records


def record_id(side: str, record: dict[str, Any]) -> str:
    return str(record["Id"] if side == CRM else record["id"])


def wipe(
    sb: Any, store: Any, *, crm: tuple[str, ...] = (), cb: tuple[str, ...] = (), flow: str | None = None
) -> None:
    """Remove every record of the named resources and empty the link store (with ``flow``,
    only that flow's rows: the flows it depends on keep their links)."""
    for side, resources in ((CRM, crm), (CB, cb)):
        base = sb.crm_url if side == CRM else sb.cb_url
        for resource in resources:
            for x in admin_records(sb, side, resource):
                rid = record_id(side, x)
                requests.delete(f"{base}/_sandbox/records/{resource}/{rid}", timeout=30).raise_for_status()
    with store.begin() as conn:
        for table in TABLES:
            if flow is None:
                conn.execute(delete(table))
            elif "flow" in table.c:
                conn.execute(delete(table).where(table.c.flow == flow))


def plant(sb: Any, side: str, resource: str, bodies: list[dict[str, Any]]) -> list[str]:
    """Store ``bodies`` as they are (no validation); returns their ids in order.

    Customcrm assigns ids; a Chargebee body needs its own ``id`` (use :func:`fresh_id`).
    """
    if not bodies:
        return []
    if side == CRM:
        out = requests.post(f"{sb.crm_url}/_sandbox/records/{resource}", json=bodies, timeout=30)
    else:
        out = requests.post(f"{sb.cb_url}/_sandbox/records/{resource}", json={"records": bodies}, timeout=30)
    out.raise_for_status()
    return [record_id(side, raw) for raw in out.json()["records"]]


def plant_json(sb: Any, resource: str, records: list[dict[str, Any]]) -> None:
    """Store Chargebee ``records`` as they are, by hand: requests refuses NaN and
    infinity, which Python's JSON (and the sandbox) take."""
    body = json.dumps({"records": records})
    out = requests.post(
        f"{sb.cb_url}/_sandbox/records/{resource}",
        data=body.encode(),
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    out.raise_for_status()


# -- the link store ---------------------------------------------------------------------------


def held(store: Any, flow: str) -> dict[tuple[str, str], tuple[str, str]]:
    """(side, record id) → (kind, reason) for the flow's quarantine."""
    with store.connect() as conn:
        rows = conn.execute(
            select(quarantine.c.side, quarantine.c.record_id, quarantine.c.kind, quarantine.c.reason).where(
                quarantine.c.flow == flow
            )
        )
        return {(s, rid): (kind, reason or "") for s, rid, kind, reason in rows}


def links(store: Any, flow: str) -> dict[str, str]:
    """Customcrm id → Chargebee id for the flow's links."""
    with store.connect() as conn:
        rows = conn.execute(select(link.c.crm_id, link.c.cb_id).where(link.c.flow == flow))
        return {crm_id: cb_id for crm_id, cb_id in rows}


# -- checks -----------------------------------------------------------------------------------


@dataclass
class After:
    """What a batch check reads after a run: the problems found so far (a failed run),
    the flow's held records and links, and both sides' records by id."""

    problems: list[str]
    held: dict[tuple[str, str], tuple[str, str]]
    links: dict[str, str]
    crm: dict[str, dict[str, Any]]
    cb: dict[str, dict[str, Any]]


def after_run(sb: Any, store: Any, flow: str, run: Any, crm_resource: str, cb_resource: str) -> After:
    problems = [] if run.ok else [f"run failed: {run.failed_tasks}"]
    return After(
        problems,
        held(store, flow),
        links(store, flow),
        {x["Id"]: x for x in admin_records(sb, CRM, crm_resource)},
        {x["id"]: x for x in admin_records(sb, CB, cb_resource)},
    )


def reason_problems(what: str, reason: str, rid: str, field_names: list[str]) -> list[str]:
    """A reason a person can act on names the record, the field and what to do."""
    problems = []
    low = reason.lower()
    if rid.lower() not in low:
        problems.append(f"{what}: reason does not name the record: {reason!r}")
    if not any(n.lower() in low for n in field_names):
        problems.append(f"{what}: reason does not name the field ({field_names}): {reason!r}")
    if not any(a in low for a in ACTIONS):
        problems.append(f"{what}: reason does not say what to do: {reason!r}")
    return problems


T = TypeVar("T")


def first_run_then_fix(
    check: Callable[[], list[str]],
    bad: Sequence[T],
    pick: int,
    fix: Callable[[T], str | None],
    describe: Callable[[T], str] | None = None,
) -> None:
    """The shape every flow's hostile-input test shares: a run whose problems (``check``
    runs the flow and lists them) must be none, then one bad record fixed as a person would
    (``fix`` returns what it fixed, or ``describe`` says it before the fix) and a run after
    which the fixed record is synced too."""
    problems = check()
    assert not problems, "\n".join(problems)
    assert bad, "the batch has no bad record a person could fix"
    victim = bad[pick % len(bad)]
    what = describe(victim) if describe else ""
    what = fix(victim) or what
    problems = check()
    assert not problems, f"after fixing {what}:\n" + "\n".join(problems)


def batch_test(flow: ModuleType) -> Callable[..., None]:
    """The batch test of a flow's hostile-input module ``flow``, built from its names:
    ``batches()`` (the strategy of a batch), ``wipe(sb, store)``, ``plant(sb, batch)``,
    ``checker(sb, store, batch, run_flow)`` (after planting: a function that runs the flow
    and lists the problems), ``fixable(batch)`` (the bad records a person can fix) and
    ``fix(sb, batch, victim)``; a victim says what it is with ``describe()``.

    Both sides emptied, the batch planted, a run with no problem, one fixable record fixed
    and a run after which it is synced too (:func:`first_run_then_fix`). The module binds the
    result to its test's name, so the test keeps its id.
    """

    @BATCH_SETTINGS
    @given(batch=flow.batches(), pick=st.integers(min_value=0))
    def test(run_flow: Any, sandboxes: Any, store: Any, batch: Any, pick: int) -> None:
        flow.wipe(sandboxes, store)
        flow.plant(sandboxes, batch)
        first_run_then_fix(
            flow.checker(sandboxes, store, batch, run_flow),
            flow.fixable(batch),
            pick,
            lambda victim: flow.fix(sandboxes, batch, victim),
            describe=lambda victim: victim.describe(),
        )

    return test


def good_record_problems(what: str, hold: tuple[str, str] | None, noun: str = "a good record") -> list[str]:
    """A good record is not held for a problem (a waiting hold is no problem)."""
    if hold is not None and hold[0] in PROBLEM_KINDS:
        return [f"{what}: {noun} is held: {hold}"]
    return []


def bad_record_problems(
    what: str, hold: tuple[str, str] | None, linked_to: str | None, rid: str, field_names: list[str]
) -> list[str]:
    """A bad record is held with a reason a person can act on, and not linked."""
    if hold is None:
        problems = [f"{what}: not quarantined"]
    else:
        problems = reason_problems(what, hold[1], rid, field_names)
    if linked_to is not None:
        problems.append(f"{what}: a bad record was linked")
    return problems


MAPPINGS = Path(__file__).resolve().parents[2] / "include" / "mappings"


def mapped_fields(flow: str, *, leave_out: Sequence[str] = ()) -> dict[str, tuple[str, str]]:
    """Every field the flow's shipped mapping file maps: canonical name → (Customcrm field,
    Chargebee path), read from the YAML itself so a hostile test checks what the file says."""
    doc = yaml.safe_load((MAPPINGS / f"{flow}.yaml").read_text(encoding="utf-8"))
    return {f["name"]: (f["customcrm"], f["chargebee"]) for f in doc["fields"] if f["name"] not in leave_out}
