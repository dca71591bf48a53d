"""Hostile input for user_order: bad users and orders are held with a reason a person can
act on, good users link to every order they created (however exotic their text), and a
fixed record leaves quarantine on the next run.

Same shape as ``test_hostile_input_order_order.py``. This flow writes nothing: Chargebee
has no user API and an order's ``created_by`` cannot be changed, so it links each
Chargebee order to the Customcrm user whose Email equals the order's created_by (one user,
many orders). What can go wrong is the match key itself, on either side.

Bad Customcrm users (one defect each): an Email with no @, two @ or a space, a blank or
null Email, control characters, an Email over the mapping's max_length (1- to 4-byte
UTF-8 units), an object, list or true/false where the Email belongs, and two users with
the same Email (held as ambiguous with the orders that name it: which user created them
cannot be told). Bad Chargebee orders: a created_by with two @ or a space, blank or null,
control characters, over-long. Good: exotic unicode in the users' names and the emails'
local parts, emails that differ only in case and surrounding spaces, users with no
order, Emails exactly at the limit, and orders Chargebee itself made (created_by
``system``, ``api``, ``import``: no user created them, so they link to nobody and are not
a problem either).
"""

from __future__ import annotations

import itertools
import sys
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from crmsync.store.schema import link
from hypothesis import strategies as st
from sqlalchemy import select

from tests.chaos import hostile
from tests.chaos.hostile import CB, CRM

pytestmark = pytest.mark.e2e

FLOW = "user_order"
#: the mapping's max_length of email (Chargebee's email fields hold 70 characters)
EMAIL_MAX = 70
#: local parts of good emails: valid (no @, no whitespace, no control) but unusual
LOCALS = ["søren", "的的", "👩\u200d💻", "o'brien", "a+tag", "zero\u200bwidth", "İstanbul", "Mixed.Case"]
#: created_by of orders no user made: Chargebee's own actors
ACTORS = ["system", "api", "import"]
SUFFIX = "@hostile.example"


def canon_email(v: Any) -> str | None:
    """The comparison the flow promises, written independently of the engine."""
    if not isinstance(v, str):
        return None
    s = unicodedata.normalize("NFC", v).strip().lower()
    return s or None


@dataclass
class User:
    n: int
    body: dict[str, Any]  # raw Customcrm user
    defect: str | None = None
    kind: str = "invalid"  # the hold kind a bad user must get
    id: str | None = None

    def describe(self) -> str:
        """The bad user, for the message of a check after fixing it."""
        return f"user {self.id} ({self.defect}: {self.body['Email']!r})"


@dataclass
class Order:
    n: int
    body: dict[str, Any]  # raw Chargebee order
    owner: User | None = None  # the user who created it (good orders)
    defect: str | None = None
    kind: str = "invalid"

    @property
    def id(self) -> str:
        return str(self.body["id"])


@dataclass
class Batch:
    users: list[User] = field(default_factory=list)
    orders: list[Order] = field(default_factory=list)


def _order(n: int, created_by: Any) -> dict[str, Any]:
    return {
        "id": hostile.fresh_id("hostile_uo"),
        "object": "order",
        "document_number": f"{70000 + n}",
        "invoice_id": hostile.fresh_id("INV-UO"),
        "status": "queued",
        "order_type": "system_generated",
        "created_by": created_by,
        "deleted": False,
        "total": 100,
        "currency_code": "EUR",
    }


def _user(email: Any, first: Any, last: Any) -> dict[str, Any]:
    return {"Email": email, "FirstName": first, "LastName": last, "Active": True, "Deleted": False}


def _variant(draw: Any, email: str) -> str:
    """The same email as another system may spell it: case and surrounding spaces."""
    local, domain = email.rsplit("@", 1)
    return (
        draw(st.sampled_from(["", " ", "  "]))
        + f"{local}@{domain.upper()}"
        + draw(st.sampled_from(["", " "]))
    )


@st.composite
def good_user(draw: Any, b: Batch, n: int) -> None:
    kind = draw(st.sampled_from(["exotic", "exotic", "limit"]))
    if kind == "limit":
        local = f"u{n}_".ljust(EMAIL_MAX - len(SUFFIX), draw(st.sampled_from(hostile.LONG_UNITS)))
    else:
        local = f"{draw(st.sampled_from(LOCALS))}.{n}"
    email = local + SUFFIX
    assert len(email) <= EMAIL_MAX
    u = User(n, _user(email, draw(hostile.exotic_text), draw(st.one_of(st.none(), hostile.exotic_text))))
    b.users.append(u)
    for _ in range(draw(st.integers(0, 3))):
        m = 1000 * n + len(b.orders)
        b.orders.append(Order(m, _order(m, _variant(draw, email)), owner=u))


USER_DEFECTS = ["no_at", "two_at", "space", "blank", "control", "too_long", "wrong_type", "duplicate"]
ORDER_DEFECTS = ["two_at", "space", "blank", "control", "too_long"]


def _bad_email(draw: Any, defect: str, n: int) -> Any:
    return {
        "no_at": lambda: f"user{n}.hostile.example",
        "two_at": lambda: f"user{n}@@hostile.example",
        "space": lambda: f"us er{n}{SUFFIX}",
        "blank": lambda: draw(st.sampled_from([None, "", "   ", "\u3000"])),
        "control": lambda: f"user{draw(st.sampled_from(hostile.CONTROL))}{n}{SUFFIX}",
        "too_long": lambda: (
            f"u{n}"
            + draw(st.sampled_from(hostile.LONG_UNITS)) * (EMAIL_MAX + draw(st.integers(0, 80)))
            + SUFFIX
        ),
        "wrong_type": lambda: draw(st.sampled_from([{"a": 1}, ["x@y.z"], True])),
    }[defect]()


@st.composite
def bad_user(draw: Any, b: Batch, n: int) -> None:
    defect = draw(st.sampled_from(USER_DEFECTS))
    if defect != "duplicate":
        b.users.append(User(n, _user(_bad_email(draw, defect, n), f"Bad{n}", None), defect))
        return
    # two users share an Email: neither is linked, nor are the orders naming it
    email = f"dup.{n}{SUFFIX}"
    for i, spelling in enumerate([email, _variant(draw, email)]):
        b.users.append(User(n, _user(spelling, f"Twin{i}", None), defect, "ambiguous"))
    for _ in range(draw(st.integers(0, 2))):
        m = 1000 * n + len(b.orders)
        b.orders.append(Order(m, _order(m, email), defect=defect, kind="ambiguous"))


@st.composite
def bad_order(draw: Any, b: Batch, n: int) -> None:
    defect = draw(st.sampled_from(ORDER_DEFECTS))
    b.orders.append(Order(n, _order(n, _bad_email(draw, defect, n)), defect=defect))


@st.composite
def batches(draw: Any) -> Batch:
    b = Batch()
    counter = itertools.count(1)
    for _ in range(draw(st.integers(2, 4))):
        draw(good_user(b, next(counter)))
    for _ in range(draw(st.integers(0, 2))):
        n = next(counter)
        b.orders.append(Order(n, _order(n, draw(st.sampled_from(ACTORS)))))
    for _ in range(draw(st.integers(2, 5))):
        draw(bad_user(b, next(counter)))
    for _ in range(draw(st.integers(1, 4))):
        draw(bad_order(b, next(counter)))
    return b


# -- planting and fixing ------------------------------------------------------------------------


def wipe(sb: Any, store: Any) -> None:
    hostile.wipe(sb, store, crm=("users",), cb=("orders",), flow=FLOW)


def plant(sb: Any, b: Batch) -> None:
    for u, rid in zip(b.users, hostile.plant(sb, CRM, "users", [u.body for u in b.users]), strict=True):
        u.id = rid
    hostile.plant(sb, CB, "orders", [o.body for o in b.orders])
    # a new record's null is left out and defaulted ("system"); on an existing one it
    # removes the key: the order then has no created_by at all
    hostile.plant(
        sb, CB, "orders", [{"id": o.id, "created_by": None} for o in b.orders if o.body["created_by"] is None]
    )


def fixable(b: Batch) -> list[User]:
    """A bad user's Email can be corrected; an order's created_by cannot."""
    return [u for u in b.users if u.defect]


def fix(sb: Any, b: Batch, victim: User) -> None:
    """What a person does after reading the reason: correct the user's Email in Customcrm.
    (An order's created_by cannot be changed through Chargebee's API.)"""
    email = f"fixed.{victim.n}.{victim.id}{SUFFIX}".lower()
    victim.body["Email"] = email
    sb.crm("PATCH", f"users/{victim.id}", json={"Email": email})
    victim.defect = None
    if victim.kind == "ambiguous":
        # its twin now owns the Email alone: the orders naming it link to the twin
        twin = next(u for u in b.users if u.n == victim.n and u is not victim)
        twin.defect = None
        for o in b.orders:
            if o.defect == "duplicate" and canon_email(o.body["created_by"]) == canon_email(
                twin.body["Email"]
            ):
                o.defect, o.owner = None, twin


# -- checks -----------------------------------------------------------------------------------


def links(store: Any) -> dict[str, str]:
    """Chargebee order id → Customcrm user id (one user links to many orders)."""
    with store.connect() as conn:
        rows = conn.execute(select(link.c.crm_id, link.c.cb_id).where(link.c.flow == FLOW))
        return {cb_id: crm_id for crm_id, cb_id in rows}


def check_batch(sb: Any, store: Any, b: Batch, run: Any) -> list[str]:
    now = hostile.after_run(sb, store, FLOW, run, "users", "orders")
    problems, held, crm_now, cb_now = now.problems, now.held, now.crm, now.cb
    owner_of = links(store)
    linked_users = set(owner_of.values())

    def bad(what: str, side: str, rid: str, kind: str, names: list[str], linked: bool) -> None:
        hold = held.get((side, rid))
        if hold is None:
            problems.append(f"{what}: not held")
        else:
            if hold[0] != kind:
                problems.append(f"{what}: held as {hold[0]!r}, not {kind!r}: {hold[1]!r}")
            problems.extend(hostile.reason_problems(what, hold[1], rid, names))
        if linked:
            problems.append(f"{what}: a bad record was linked")

    for u in b.users:
        assert u.id
        what = f"user {u.id} ({u.defect or 'good'}: {repr(u.body['Email'])[:60]})"
        if u.defect:
            bad(what, CRM, u.id, u.kind, ["Email"], u.id in linked_users)
            continue
        problems += hostile.good_record_problems(what, held.get((CRM, u.id)), "a good user")
        now = crm_now[u.id]  # nothing is written to Customcrm: exotic text arrives unchanged
        for k in ("Email", "FirstName", "LastName"):
            if now.get(k) != u.body[k]:
                problems.append(f"{what}: {k} changed: {now.get(k)!r} != {u.body[k]!r}")
    for o in b.orders:
        what = f"order {o.id} ({o.defect or 'good'}: {repr(o.body['created_by'])[:60]})"
        if o.defect:
            bad(what, CB, o.id, o.kind, ["created_by"], o.id in owner_of)
            continue
        problems += hostile.good_record_problems(what, held.get((CB, o.id)), "a good order")
        if cb_now[o.id].get("created_by") != o.body["created_by"]:
            problems.append(f"{what}: created_by changed: {cb_now[o.id].get('created_by')!r}")
        if o.owner is None:  # made by Chargebee itself: nobody to link to
            if o.id in owner_of:
                problems.append(f"{what}: linked to user {owner_of[o.id]}")
            continue
        if owner_of.get(o.id) != o.owner.id:
            problems.append(f"{what}: linked to {owner_of.get(o.id)!r}, not its creator {o.owner.id}")
            continue
        user_email = canon_email(crm_now[o.owner.id].get("Email"))
        if user_email != canon_email(cb_now[o.id].get("created_by")):
            problems.append(f"{what}: email differs: customcrm={user_email!r} chargebee=...")
    return problems


# -- the test ---------------------------------------------------------------------------------


def checker(sb: Any, store: Any, b: Batch, run_flow: Any) -> Callable[[], list[str]]:
    return lambda: check_batch(sb, store, b, run_flow(FLOW))


test_hostile_users_and_orders_bad_held_with_reasons_good_linked_fixed_released = hostile.batch_test(
    sys.modules[__name__]
)
