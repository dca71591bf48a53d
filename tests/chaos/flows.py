"""Chaos harness for the other five flows, driven by each flow's mapping file.

``harness.py`` models contact_customer in depth (emails, billing address, creates on
both sides). This module runs the same experiment - seeded edits made through the
sandboxes' APIs, faulty sync runs, one upsert SIGKILLed in a subprocess and rerun,
then clean runs - for ``product_item``, ``customer_business_entity``, ``order_order``,
``quote_order`` and ``user_order``, with an expected state computed from the mapping's
documented policies only (read here with plain YAML, never through the package):

* ``direction: both`` fields: three-way merge against the value both sides last agreed
  on; changed on one side → the other side takes it; changed on both sides to
  different values → conflict, won by ``conflict.policy`` (``newest_wins``: the record
  with the newer ``updated_at`` as each system reported it, tie → ``tie_breaker``;
  ``customcrm_wins`` / ``chargebee_wins``), and audited in ``crmsync_audit``; a blank
  never overwrites a value;
* one-way fields (``to_customcrm``): a source-side edit reaches the other side; an
  edit on the other side is written back from the source (``read_only_edits:
  restore``) or kept (``keep``);
* ``delete: unlink`` on either side: the link ends, the survivor keeps its values,
  the deleted record stays deleted and nothing is re-created on the side that deleted;
* records that wait for a person (order_order: a Customcrm order whose invoice has no
  order yet, or that names none): never linked, nothing made for them on the other side,
  held ``waiting`` with a reason naming the record, the field and (for the first) the
  mapping's ``create_disabled_reason``; linked once their partner appears;
* creates (where the mapping allows them): the new record is created on the other side
  with the same values, found there by ``create_id`` or the match key, and linked; what
  the created side assigns itself (a default filling a blank, the fields only it is the
  source of: an order's number, totals, invoice) is then a change on that side that
  flows back; a new record that matches an existing one (a quote naming an order's
  invoice, an order created by a known user) is linked to it and merged as if nothing
  were agreed; a record that matches nothing where the flow never creates (``create:
  false``) stays unlinked and nothing appears on the other side;
* records are paired by the link store after the clean baseline run (the identity of
  pairs, not their values, comes from the engine).

The model itself (pairs, windows, merges, the checks against the link store, the loop)
is ``tests/chaos/model.py``, shared with ``harness.py``; this module adds each flow's
edits (``SPECS``), how its new records settle and are found, and the waiting/lonely
checks. As in ``harness.py``, a pair's edits accumulate in a window until a run syncs it (the
run finished and its plan rows report no failed/held write for the pair's records);
a window that spanned an unsynced run is checked with weaker invariants (one-sided
edits must still arrive; contested fields agree on one of the values seen).

Checks after every run, per flow (all of them apply to every flow unless said):

=========================  ==============================================================
duplicates                 no two live records with one match key on a side (Customcrm
                           side only for user_order and quote_order, whose Chargebee
                           orders legitimately share a ``created_by`` / lack a reference),
                           no record in two links (Customcrm side exempt for user_order,
                           cardinality one_to_many)
lost edits                 every settled pair's fields equal the model's; creates found
conflicts                  every policy conflict audited with the policy's winner (flows
                           with a two-way field: product_item, order_order, quote_order)
deletes                    unlink audited, deleted record not live again, no re-create
quarantine                 every held record has a reason; a waiting record (order_order)
                           is held ``waiting`` with the reason above, a linked one is not
read-only Chargebee        customer_business_entity and user_order: zero API writes to
                           Chargebee by the sync in the whole experiment, faults and kills
                           included (people's writes through the API are subtracted)
convergence                clean runs reach the model; then an idle run writes nothing
=========================  ==============================================================

What each flow's edits exercise (``SPECS``): product_item - creates on both sides,
two-way edits and conflicts of name/description/unit/archived, Customcrm edits of the
one-way Kind (restored), blanks, deletes both sides; customer_business_entity - entity
renames, new entities and entity deletes through the Chargebee sandbox's admin endpoint
(the public API is read-only), Customcrm renames (restored, or a conflict when both
renamed), Customcrm customers without an entity (never created in Chargebee), Customcrm
deletes; order_order (current order management, the sandbox's default: the flow never
creates Chargebee orders) - Customcrm orders naming a new paid invoice that has no order
yet (they wait, held with the mapping's create_disabled_reason, until the model has
Chargebee generate that invoice's order at a random later round, numbered or not; then
they link to it by invoice, merged as if nothing were agreed, Chargebee's number and
totals flowing back), Customcrm orders naming no invoice (held naming InvoiceId, never
linked), Chargebee orders generated from an invoice no Customcrm order names (a
Customcrm order is created), two-way edits and conflicts of
tracking/carrier/note/fulfilment/shipping city, Customcrm edits of the one-way Total
(restored), Customcrm deletes (Chargebee deletes only imported orders); no POST /orders
may reach the sandbox; quote_order -
quotes naming an unlinked order's invoice (linked, number written to the order), notes
both ways and conflicts, Customcrm edits of Amount/OrderNumber (restored), quote
deletes, quotes that name nothing (never create an order); user_order - orders created
by a known user (linked to that user: one user, many orders), Customcrm email edits
(``keep``), users nobody's order names, user deletes (every order of theirs unlinked).

The SIGKILL: in a kill round the upsert of a side the flow writes is killed after one
or two of its writes (faults and latency on), then rerun; user_order writes nothing
through the APIs, so its update_links is killed a random moment after it starts.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import yaml

from tests.chaos import hostile
from tests.chaos.hostile import CB_NESTED_UPDATE
from tests.chaos.model import (
    CB,
    CRM,
    SIDES,
    Config,
    Mapping,
    MField,
    Pair,
    Rec,
    Report,
    RunOutcome,
    RunView,
    World,
    canon,
    experiment,
    is_live,
    load_mapping,
    ts_of,
    values_of,
)
from tests.chaos.model import Sandboxes as Api

# -- per-flow knowledge: which API writes what, how values are made ----------------------------


def _word(rng: random.Random) -> str:
    return rng.choice(
        ["Fjord", "Nordic", "Aurora", "Bølge", "Granite", "Lumen", "Kvist", "Polar", "Ærø", "Ember"]
    )


Gen = Callable[[random.Random, str], Any]


@dataclass
class FlowSpec:
    flow: str
    crm_resource: str
    cb_resource: str
    gens: dict[str, Gen]  # canonical values for editable fields
    edit_sides: dict[str, tuple[str, ...]]  # field → sides a person may edit it on
    blankable: tuple[str, ...] = ()
    deletes: tuple[str, ...] = (CRM,)
    prereq: tuple[str, ...] = ()
    cb_admin: bool = False  # Chargebee edits through the sandbox admin endpoint (read-only API)
    create: dict[str, Callable[[FlowWorld, random.Random, str], Created | None]] = field(default_factory=dict)
    cb_key_unique: bool = True  # the match key is unique among live Chargebee records
    weights: dict[str, float] = field(default_factory=dict)
    kill_step: str = "upsert"  # the task SIGKILLed in a kill round
    create_weights: dict[str, float] = field(default_factory=dict)  # over ``create`` (default 1 each)
    #: order_order: the chance that Chargebee generates a waiting order's invoice's order at
    #: the start of each later round (besides the ``generate`` edits)
    generate_each_round: float = 0.0
    faults: dict[str, Any] = field(default_factory=dict)  # over Config.faults (few requests: more faults)


@dataclass
class Created:
    """A record a person made: on ``side``; ``partner`` is the other side's existing record
    it must link to (by the match rules); ``lonely``: the flow must neither link it nor
    create anything from it."""

    side: str
    raw: dict[str, Any]
    partner: str | None = None
    lonely: bool = False
    #: the invoice whose order (not generated yet) this Customcrm order names: it waits,
    #: held with the mapping's create_disabled_reason, until the model generates that order
    waits_for: str | None = None
    #: a Customcrm field the hold of a lonely record must name (e.g. an empty InvoiceId)
    held_for: str | None = None


def _admin_upsert(api: Api, resource: str, rec: dict[str, Any]) -> dict[str, Any]:
    r = requests.post(f"{api.sb.cb_url}/_sandbox/records/{resource}", json=rec, timeout=10)
    r.raise_for_status()
    return dict(r.json()["records"][0])


def _product(w: FlowWorld, rng: random.Random, tag: str) -> Created | None:
    body = {
        "Sku": f"CHAOS-{tag}".upper(),
        "Name": f"{_word(rng)} {tag}",
        "Kind": rng.choice(["plan", "addon", "charge"]),
        "Description": f"Made in Customcrm {tag}",
        "Unit": rng.choice(["user", "seat", None]),
        "Archived": False,
        "Shippable": False,
    }
    return Created(CRM, dict(w.api.sb.crm("POST", "products", json=body)))


def _item(w: FlowWorld, rng: random.Random, tag: str) -> Created | None:
    data = {
        "id": f"chaos-{tag}".lower(),
        "name": f"{_word(rng)} item {tag}",
        "type": rng.choice(["plan", "addon", "charge"]),
        "item_family_id": "nordpulse-software",
        "description": f"Made in Chargebee {tag}",
        "unit": "seat",
    }
    return Created(CB, dict(w.fa.cb("POST", "items", data=data)["item"]))


def _entity(w: FlowWorld, rng: random.Random, tag: str) -> Created | None:
    """Business entities cannot be created through the API: the sandbox's admin endpoint
    (a person in Chargebee's UI) creates one, with its business_entity_created event."""
    rec = {"id": f"be_chaos_{tag}".lower(), "name": f"{_word(rng)} Holding {tag} AS", "status": "active"}
    return Created(CB, _admin_upsert(w.api, "business_entities", rec))


def _lonely_customer(w: FlowWorld, rng: random.Random, tag: str) -> Created | None:
    """A Customcrm customer no entity names: the sync reports it and creates nothing."""
    raw = w.api.sb.crm("POST", "customers", json={"Name": f"{_word(rng)} Lonely {tag} AB"})
    return Created(CRM, dict(raw), lonely=True)


def _paid_invoice(
    w: FlowWorld, rng: random.Random, avoid: set[str] | frozenset[str] = frozenset()
) -> tuple[dict[str, Any], str] | None:
    """A paid invoice whose customer is linked to a contact (contact_customer), and the
    contact; not one of ``avoid``."""
    contacts = {cb: crm for crm, cb in w.links("contact_customer")}
    r = requests.get(f"{w.api.sb.cb_url}/_sandbox/records/invoices", timeout=10)
    r.raise_for_status()
    pool = [
        i
        for i in r.json()["records"]
        if i.get("status") == "paid" and i["customer_id"] in contacts and i["id"] not in avoid
    ]
    if not pool:
        return None
    inv = rng.choice(sorted(pool, key=lambda i: str(i["id"])))
    return inv, contacts[inv["customer_id"]]


#: what an invoice of a model-made order keeps from the paid invoice it copies (not its
#: status and amount due: the copy is paid)
INVOICE_COPY = tuple(k for k in hostile.INVOICE_COPY if k not in ("status", "amount_due"))


def _new_paid_invoice(w: FlowWorld, rng: random.Random, tag: str) -> tuple[str, str] | None:
    """A paid invoice of a linked customer that has no order yet (Chargebee generates it a
    while after the payment on a site with current order management; the model does it
    at a later round), made as a person would in Chargebee's UI (the sandbox's admin
    endpoint, a copy of one of the seed's paid invoices). Returns (invoice id, contact)."""
    got = _paid_invoice(w, rng)
    if got is None:
        return None
    src, contact = got
    inv = {k: src[k] for k in INVOICE_COPY if k in src}
    inv.update({"id": f"INV-CHAOS-{tag}".upper(), "status": "paid", "amount_due": 0, "linked_orders": []})
    made = _admin_upsert(w.api, "invoices", inv)
    return str(made["id"]), contact


def _crm_order(w: FlowWorld, rng: random.Random, tag: str) -> Created | None:
    """A Customcrm order naming a paid invoice whose order Chargebee has not generated yet:
    it waits (the sync never creates Chargebee orders on a site with current order
    management) until the model generates the invoice's order, then links to it."""
    got = _new_paid_invoice(w, rng, tag)
    if got is None:
        return None
    invoice, contact = got
    body = {
        "Number": f"SO-CHAOS-{tag}".upper(),
        "ContactId": contact,
        "InvoiceId": invoice,
        "Status": "processing",
        "FulfillmentStatus": rng.choice(["Picking", None]),
        "TrackingId": rng.choice([f"TRK{tag}".upper(), None]),
        "Carrier": rng.choice(["Bring", "DHL", None]),
        "Note": rng.choice([f"Made in Customcrm {tag}", None]),
    }
    return Created(CRM, dict(w.api.sb.crm("POST", "orders", json=body)), waits_for=invoice)


def _crm_order_without_invoice(w: FlowWorld, rng: random.Random, tag: str) -> Created | None:
    """A Customcrm order naming no invoice: no Chargebee order can ever be its partner;
    it waits, its hold naming InvoiceId, and nothing is made in Chargebee."""
    contacts = sorted(crm for crm, _ in w.links("contact_customer"))
    if not contacts:
        return None
    body = {
        "Number": f"SO-CHAOS-{tag}".upper(),
        "ContactId": rng.choice(contacts),
        "Status": "processing",
        "Note": f"No invoice yet {tag}",
    }
    return Created(CRM, dict(w.api.sb.crm("POST", "orders", json=body)), lonely=True, held_for="InvoiceId")


def _generated_order(
    w: FlowWorld, invoice_id: str, *, assign_number: bool = True, **fields: Any
) -> dict[str, Any]:
    """An order Chargebee generates from a paid invoice (what every site with current
    order management does; ``POST /orders`` is legacy), numbered or not yet, then
    ``fields`` set as a person in Chargebee's UI would."""
    r = requests.post(
        f"{w.api.sb.cb_url}/_sandbox/invoices/{invoice_id}/generate_order",
        json={"assign_number": assign_number},
        timeout=10,
    )
    r.raise_for_status()
    order = dict(r.json()["order"])
    return _admin_upsert(w.api, "orders", {"id": order["id"], **fields}) if fields else order


def _cb_order(w: FlowWorld, rng: random.Random, tag: str) -> Created | None:
    """A Chargebee order generated from a paid invoice of a linked customer: the sync
    creates the Customcrm order (its contact through contact_customer's links)."""
    got = _paid_invoice(w, rng, avoid=w.awaited_invoices())  # one order per invoice the CRM names
    if got is None:
        return None
    raw = _generated_order(w, got[0]["id"], fulfillment_status="Picking", note=f"Made in Chargebee {tag}")
    return Created(CB, raw)


def _quote_for_order(w: FlowWorld, rng: random.Random, tag: str) -> Created | None:
    """A quote naming the invoice of an order no quote names (and the order touched, so that
    one run reads both): it must link to that order and write its number there."""
    orders = w.fa.all(CB)
    per_invoice = Counter(o.get("invoice_id") for o in orders.values())
    linked = {cb for _, cb in w.links(w.m.flow)} | {p.cb.id for p in w.pairs.values() if p.cb and p.cb.id}
    pool = sorted(
        i
        for i, o in orders.items()
        if is_live(o)
        and i not in linked
        and not o.get("reference_id")
        and per_invoice[o.get("invoice_id")] == 1
    )
    if not pool:
        return None
    order = orders[rng.choice(pool)]
    body = {
        "Number": f"Q-CHAOS-{tag}".upper(),
        "InvoiceId": order["invoice_id"],
        "Notes": rng.choice([f"Quote for {tag}", None]),
        "Amount": rng.choice([None, rng.randint(1, 99999)]),
        "Status": "accepted",
    }
    quote = dict(w.api.sb.crm("POST", "quotes", json=body))
    # Matching sees only records read in the same run (a documented limitation of this
    # flow): the order is touched too, as when its note is updated for the accepted quote
    w.fa.cb("POST", f"orders/{order['id']}", data={"note": f"Quote {body['Number']} accepted"})
    return Created(CRM, quote, partner=order["id"])


def _lonely_quote(w: FlowWorld, rng: random.Random, tag: str) -> Created | None:
    body = {"Number": f"Q-CHAOS-{tag}".upper(), "Notes": f"Names no order {tag}", "Amount": 1000}
    return Created(CRM, dict(w.api.sb.crm("POST", "quotes", json=body)), lonely=True)


def _user(w: FlowWorld, rng: random.Random, tag: str) -> Created | None:
    body = {"Email": f"chaos.{tag}@nordpulse.example".lower(), "FirstName": _word(rng), "LastName": tag}
    return Created(CRM, dict(w.api.sb.crm("POST", "users", json=body)), lonely=True)


def _order_by_user(w: FlowWorld, rng: random.Random, tag: str) -> Created | None:
    """An order a Customcrm user created in Chargebee's UI (created_by = their email): it
    must link to that user, one of the user's many orders."""
    users = [r for (side, _), r in w.recs.items() if side == CRM and not r.deleted and r.values.get("email")]
    live = w.fa.all(CRM)
    users = [u for u in users if u.id in live and is_live(live[u.id])]
    got = _paid_invoice(w, rng)
    if not users or got is None:
        return None
    user = rng.choice(sorted(users, key=lambda u: str(u.id)))
    raw = _generated_order(w, got[0]["id"], created_by=user.values["email"])
    assert user.id is not None
    return Created(CB, raw, partner=user.id)


def _text(prefix: str) -> Gen:
    return lambda rng, tag: f"{prefix} {_word(rng)} {tag}"


SPECS: dict[str, FlowSpec] = {
    "product_item": FlowSpec(
        "product_item",
        "products",
        "items",
        gens={
            "name": lambda rng, tag: f"{_word(rng)} {tag}",
            "description": _text("Desc"),
            "unit": lambda rng, tag: rng.choice(["user", "seat", "site", "device"]) + f"-{tag}",
            "archived": lambda rng, tag: rng.choice(["true", "false"]),
            "kind": lambda rng, tag: rng.choice(["plan", "addon", "charge"]),
        },
        edit_sides={"name": SIDES, "description": SIDES, "unit": SIDES, "archived": SIDES, "kind": (CRM,)},
        blankable=("description",),
        deletes=(CRM, CB),
        create={"product": _product, "item": _item},
    ),
    "customer_business_entity": FlowSpec(
        "customer_business_entity",
        "customers",
        "business_entities",
        gens={"name": lambda rng, tag: f"{_word(rng)} {tag} AS"},
        edit_sides={"name": SIDES},
        deletes=(CRM, CB),
        cb_admin=True,
        create={"entity": _entity, "lonely_customer": _lonely_customer},
        weights={"delete": 0.4},
    ),
    "order_order": FlowSpec(
        "order_order",
        "orders",
        "orders",
        gens={
            "tracking_id": lambda rng, tag: f"TRK{rng.randint(10000, 99999)}{tag}".upper(),
            "carrier": lambda rng, tag: rng.choice(["Bring", "PostNord", "DHL", "UPS"]),
            "note": _text("Note"),
            "fulfillment_status": lambda rng, tag: rng.choice(["Picking", "Packed", "Awaiting stock"]),
            "ship_city": lambda rng, tag: f"{rng.choice(['Oslo', 'Tromsø', 'Malmö', 'Łódź'])} {tag}",
            "total": lambda rng, tag: rng.randint(1, 99999),
        },
        edit_sides={
            "tracking_id": SIDES,
            "carrier": SIDES,
            "note": SIDES,
            "fulfillment_status": SIDES,
            "ship_city": SIDES,
            "total": (CRM,),
        },
        blankable=("note", "tracking_id"),
        deletes=(CRM,),
        prereq=("contact_customer", "user_order"),
        create={
            "crm_order": _crm_order,
            "cb_order": _cb_order,
            "crm_order_no_invoice": _crm_order_without_invoice,
        },
        # more creates (mostly orders that wait), and Chargebee generating their invoices'
        # orders in later rounds
        weights={"delete": 0.4, "create": 3.0, "generate": 1.5},
        create_weights={"crm_order": 3.0, "cb_order": 1.0, "crm_order_no_invoice": 0.5},
        generate_each_round=0.5,
    ),
    "quote_order": FlowSpec(
        "quote_order",
        "quotes",
        "orders",
        gens={
            "notes": _text("Quote note"),
            "amount": lambda rng, tag: rng.randint(1, 99999),
            "order_number": lambda rng, tag: f"9{rng.randint(1000, 9999)}",
        },
        edit_sides={"notes": SIDES, "amount": (CRM,), "order_number": (CRM,)},
        blankable=("notes",),
        deletes=(CRM,),
        create={"quote_for_order": _quote_for_order, "lonely_quote": _lonely_quote},
        weights={"delete": 0.4},
        cb_key_unique=False,
    ),
    "user_order": FlowSpec(
        "user_order",
        "users",
        "orders",
        gens={"email": lambda rng, tag: f"renamed.{tag}@nordpulse.example".lower()},
        edit_sides={"email": (CRM,)},
        deletes=(CRM,),
        create={"lonely_user": _user, "order_by_user": _order_by_user},
        weights={"delete": 0.4},
        cb_key_unique=False,
        faults={"error_rate": 0.3, "drop_rate": 0.1},
        kill_step="update_links",
    ),
}

ALL_FLOWS = tuple(SPECS)


# -- a flow this module has no spec for: one derived from its mapping ---------------------------


def _gen_for(f: MField, key: str) -> Gen | None:
    """Values a person types into a field of a flow with no hand-written spec: plain text,
    a country, the match key (an email where the key is one); other fields are left alone."""
    if f.name == key:
        if f.transform == "email":
            return lambda rng, tag: f"{_word(rng)}.{tag}@chaos.example".lower()
        return lambda rng, tag: f"{_word(rng)} {tag}"
    if f.direction != "both" or f.values or f.transform not in ("strip", "country"):
        return None
    if f.transform == "country":
        return lambda rng, tag: rng.choice(["NO", "SE", "DE", "PL"])
    return lambda rng, tag: f"{_word(rng)} {tag}"


def _made(side: str) -> Callable[[FlowWorld, random.Random, str], Created | None]:
    """A person makes a record on ``side`` through its public API, every generated field filled."""

    def make(w: FlowWorld, rng: random.Random, tag: str) -> Created | None:
        values = {n: g(rng, tag) for n, g in w.spec.gens.items()}
        if side == CRM:
            body = {w.m.f(k).crm: w.fa.raw_for(w.m.f(k), v, CRM) for k, v in values.items()}
            return Created(CRM, dict(w.api.sb.crm("POST", w.spec.crm_resource, json=body)))
        data: dict[str, Any] = {}
        for k, v in values.items():
            top, _, sub = w.m.f(k).cb.partition(".")
            data[f"{top}[{sub}]" if sub else top] = w.fa.raw_for(w.m.f(k), v, CB)
        out = w.fa.cb("POST", w.spec.cb_resource, data=data)
        return Created(CB, dict(next(v for v in out.values() if isinstance(v, dict))))

    return make


def spec_from_mapping(m: Mapping) -> FlowSpec:
    """The experiment for a flow defined only by its mapping (a test mapping): two-way text
    fields edited, blanked and contested on both sides, records made where the flow creates
    on the other side, Customcrm deletes (a Chargebee delete is a purge later, which only
    ``harness.py`` models for customers)."""
    doc = yaml.safe_load(m.path.read_text())
    gens = {f.name: g for f in m.fields if (g := _gen_for(f, m.match_key))}
    editable = [n for n in gens if n != m.match_key]
    create: dict[str, Callable[[FlowWorld, random.Random, str], Created | None]] = {}
    if m.can_create[CB]:
        create["crm_record"] = _made(CRM)
    if m.can_create[CRM]:
        create["cb_record"] = _made(CB)
    return FlowSpec(
        m.flow,
        doc["customcrm"]["resource"],
        doc["chargebee"]["resource"],
        gens,
        edit_sides={n: SIDES for n in editable},
        blankable=tuple(n for n in editable if m.f(n).transform == "strip"),
        deletes=(CRM,),
        create=create,
    )


def spec_for(flow: str, mapping_file: Path | None = None) -> FlowSpec:
    return SPECS.get(flow) or spec_from_mapping(load_mapping(flow, mapping_file))


#: flows whose Chargebee side is never written (read-only there)
READ_ONLY_CB = ("customer_business_entity", "user_order")


class FlowApi:
    """A flow's records through the sandboxes: admin reads (no faults), people's writes."""

    def __init__(self, api: Api, m: Mapping, spec: FlowSpec) -> None:
        self.api, self.m, self.spec = api, m, spec
        self.cb_writes = 0  # people's writes through Chargebee's public API

    def cb(self, method: str, path: str, **kw: Any) -> Any:
        """Chargebee's public API, as a person; writes are counted."""
        if method != "GET":
            self.cb_writes += 1
        return self.api.sb.cb(method, path, **kw)

    def all(self, side: str) -> dict[str, dict[str, Any]]:
        base, res = (
            (self.api.sb.crm_url, self.spec.crm_resource)
            if side == CRM
            else (self.api.sb.cb_url, self.spec.cb_resource)
        )
        r = requests.get(f"{base}/_sandbox/records/{res}", timeout=30)
        r.raise_for_status()
        key = "Id" if side == CRM else "id"
        return {x[key]: x for x in r.json()["records"]}

    def raw_for(self, f: MField, value: Any, side: str) -> Any:
        if value is None:
            return None if side == CRM else ""
        if side == CB and f.values:
            return dict(f.values)[str(value)]
        if f.transform == "bool" or (f.values and value in ("true", "false")):
            return value == "true" if side == CRM else value
        return value

    def update(self, side: str, rid: str, values: dict[str, Any]) -> dict[str, Any]:
        if side == CRM:
            body = {self.m.f(k).crm: self.raw_for(self.m.f(k), v, CRM) for k, v in values.items()}
            return dict(self.api.sb.crm("PATCH", f"{self.spec.crm_resource}/{rid}", json=body))
        if self.spec.cb_admin:
            rec = {"id": rid, **{self.m.f(k).cb: v for k, v in values.items()}}
            r = requests.post(
                f"{self.api.sb.cb_url}/_sandbox/records/{self.spec.cb_resource}", json=rec, timeout=10
            )
            r.raise_for_status()
            return dict(r.json()["records"][0])
        data: dict[str, Any] = {}
        endpoint = f"{self.spec.cb_resource}/{rid}"
        for k, v in values.items():
            f = self.m.f(k)
            path = f.cb
            if "." in path:
                top, sub = path.split(".", 1)
                if top in CB_NESTED_UPDATE:  # a customer's billing address has its own endpoint
                    endpoint = f"{self.spec.cb_resource}/{rid}/{CB_NESTED_UPDATE[top]}"
                path = f"{top}[{sub}]"
                # An order's shipping_address is replaced by the lines sent (the sandbox
                # takes the stricter reading of Chargebee's docs): a person editing one line
                # through the API sends the others as they are, or clears them.
                current = self.all(CB).get(rid, {}).get(top) or {}
                for line, held in current.items():
                    if line != "object" and isinstance(held, str) and held:
                        data.setdefault(f"{top}[{line}]", held)
            data[path] = self.raw_for(f, v, CB)
        out = self.cb("POST", endpoint, data=data)
        return dict(next(iter(v for k, v in out.items() if isinstance(v, dict))))

    def delete(self, side: str, rid: str) -> None:
        if side == CRM:
            self.api.sb.crm("DELETE", f"{self.spec.crm_resource}/{rid}")
        elif self.spec.cb_admin:
            url = f"{self.api.sb.cb_url}/_sandbox/records/{self.spec.cb_resource}/{rid}/delete"
            requests.post(url, timeout=10).raise_for_status()
        else:
            self.cb("POST", f"{self.spec.cb_resource}/{rid}/delete")


# -- the world: a flow's edits, how its new records settle and are found ---------------------


class FlowWorld(World):
    def __init__(
        self, api: Api, store: Any, flow: str, cfg: Config, report: Report, mapping_file: Path | None = None
    ) -> None:
        rng = random.Random(cfg.seed * 31 + len(flow))
        super().__init__(api, store, cfg, report, load_mapping(flow, mapping_file), rng)
        self.prefix = f"{flow}: "
        self.spec = spec_for(flow, mapping_file)
        self.cb_key_unique = self.spec.cb_key_unique
        self.fa = FlowApi(api, self.m, self.spec)
        self.recs: dict[tuple[str, str], Rec] = {}  # shared by the pairs of a one-to-many user
        self.statuses: Counter[str] = Counter()  # the pairs' statuses at the end

    def read_all(self) -> tuple[dict[str, Any], dict[str, Any]]:
        return self.fa.all(CRM), self.fa.all(CB)

    def _trailer(self, p: Pair) -> str:
        assert p.crm is not None
        return "\n  " + "\n  ".join(
            h for h in self.history if f" {p.pid} " in h or (p.crm.id and p.crm.id in h)
        )

    def awaited_invoices(self) -> set[str]:
        """Invoices a Customcrm order of the model waits or waited for: their one order is
        the model's to generate (a second order of an invoice a Customcrm order names is
        held as ambiguous, the mapping's limitation, not what this experiment is about)."""
        return {p.invoice for p in self.pairs.values() if p.invoice}

    def links(self, flow: str) -> list[tuple[str, str]]:
        from crmsync.store.schema import link
        from sqlalchemy import select

        with self.store.connect() as conn:
            rows = conn.execute(select(link.c.crm_id, link.c.cb_id).where(link.c.flow == flow)).all()
        return [(str(c), str(k)) for c, k in rows]

    # -- setup -------------------------------------------------------------------------------
    def adopt_baseline(self) -> None:
        """After a clean baseline: every link is a pair, and its two records must already agree."""
        from crmsync.store.schema import link
        from sqlalchemy import select

        crm, cb = self.fa.all(CRM), self.fa.all(CB)
        with self.store.connect() as conn:
            links = conn.execute(
                select(link.c.crm_id, link.c.cb_id).where(link.c.flow == self.m.flow).order_by(link.c.crm_id)
            ).all()
        for ci, ki in links:
            c = self._rec(CRM, ci, crm[ci])
            k = self._rec(CB, ki, cb[ki])
            base = self._agreed(c.values, k.values)
            pid = self._pid()
            self.pairs[pid] = Pair(pid, c, k, "linked", base)
            for f in self.m.fields:
                if c.values[f.name] != k.values[f.name] and not self._may_differ(f, c.values, k.values):
                    self.fail(
                        "lost_edit",
                        f"baseline {pid} ({ci} ⇄ {ki}) {f.name}: {c.values[f.name]!r} ≠ {k.values[f.name]!r}",
                    )

    def _may_differ(self, f: MField, c: dict[str, Any], k: dict[str, Any]) -> bool:
        """A blank never overwrites; a kept read-only edit stays; a blank source fills nothing."""
        if f.direction == "both":
            return c[f.name] is None or k[f.name] is None
        return f.read_only_edits == "keep" or (k if f.source() == CB else c)[f.name] is None

    def _rec(self, side: str, rid: str, raw: dict[str, Any]) -> Rec:
        key = (side, rid)
        if key not in self.recs:
            self.recs[key] = Rec(side, rid, values_of(self.m, side, raw), ts_of(side, raw))
        return self.recs[key]

    def _pid(self) -> str:
        self._n += 1
        return f"{self.m.flow[:2].upper()}{self._n:04d}"

    # -- edits -------------------------------------------------------------------------------
    def _pairs(self, status: str) -> list[Pair]:
        out = []
        for p in self.pairs.values():
            if p.status != status:
                continue
            if status == "linked" and not all(r and r.id and not r.deleted for r in (p.crm, p.cb)):
                continue
            out.append(p)
        return out

    def _mark(self, side: str, rid: str) -> None:
        for p in self.pairs.values():
            r = p.rec(side)
            if r is not None and r.id == rid and p.status in ("linked", "new"):
                p.dirty = True

    def _apply(self, p: Pair, side: str, values: dict[str, Any]) -> None:
        r = p.rec(side)
        assert r is not None and r.id is not None
        self.history.append(f"round {self.round}: {p.pid} {p.status} {side} {r.id} set {values}")
        raw = self.fa.update(side, r.id, values)
        r.ts = ts_of(side, raw)
        for k, v in values.items():
            f = self.m.f(k)
            r.values[k] = canon(f, self.fa.raw_for(f, v, side), side) if v is not None else None
            for q in self.pairs.values():
                if q.rec(side) is r:
                    q.seen.setdefault(k, set()).add(r.values[k])
        self._mark(side, r.id)

    def edit_round(self) -> None:
        self.round += 1
        weights = {
            "edit": 8.0,
            "conflict": 2.5 if any(len(s) == 2 for s in self.spec.edit_sides.values()) else 0.0,
            "blank": 1.0 if self.spec.blankable else 0.0,
            "delete": 1.0,
            "create": 1.5 if self.spec.create else 0.0,
            "survivor_edit": 0.5,
            "generate": 0.0,  # order_order: Chargebee generates a waiting order's invoice's order
            **self.spec.weights,
        }
        kinds = [k for k, w in weights.items() if w > 0]
        if self.spec.generate_each_round:
            # Chargebee generating orders in its own time: each order a waiting Customcrm
            # order's invoice lacks appears at the start of a later round with this chance
            for p in list(self.pairs.values()):
                lucky = p.status == "waiting" and self.rng.random() < self.spec.generate_each_round
                if lucky and self._generate(p):
                    self.report.edits["generate"] += 1
        self.make_edits({k: weights[k] for k in kinds})

    def _edit(self, kind: str) -> bool:
        rng, spec = self.rng, self.spec
        self._n += 1
        tag = f"{self.cfg.seed}r{self.round}x{self._n}"
        if kind == "create":
            names = sorted(spec.create)
            how = rng.choices(names, [spec.create_weights.get(n, 1.0) for n in names])[0]
            made = spec.create[how](self, rng, tag)
            if made is None:
                return False
            rec = self._rec(made.side, made.raw["Id"] if made.side == CRM else made.raw["id"], made.raw)
            partner = None
            if made.partner is not None:
                other = CB if made.side == CRM else CRM
                partner = self.recs.get((other, made.partner)) or self._rec(
                    other, made.partner, self.fa.all(other)[made.partner]
                )
            crm, cb = (rec, partner) if made.side == CRM else (partner, rec)
            pid = self._pid()
            status = "lonely" if made.lonely else "waiting" if made.waits_for else "new"
            p = Pair(pid, crm, cb, status, dirty=True, invoice=made.waits_for, born=self.round)
            p.held_for = made.held_for or ("InvoiceId" if made.waits_for else None)
            self.pairs[pid] = p
            self.history.append(
                f"round {self.round}: {pid} create {how} {rec.id} (partner {made.partner}"
                f"{', waits for ' + made.waits_for if made.waits_for else ''}) {rec.values}"
            )
            return True
        if kind == "generate":
            # Chargebee generates the order of a waiting order's invoice, a round or more
            # after the Customcrm order was made (sometimes without a number yet): the
            # Customcrm order must link to it, by invoice, merged as if nothing were agreed
            pool = [p for p in self.pairs.values() if p.status == "waiting"]
            return bool(pool) and self._generate(rng.choice(pool))
        if kind in ("edit", "blank", "conflict"):
            pool = self._pairs("linked")
            if self.m.one_to_many:  # one edit per user, whatever the number of its orders
                pool = list({id(p.crm): p for p in pool}.values())
            if not pool:
                return False
            p = rng.choice(pool)
            if kind == "conflict":
                name = rng.choice(sorted(n for n, s in spec.edit_sides.items() if len(s) == 2))
                a, b = spec.gens[name](rng, tag + "a"), spec.gens[name](rng, tag + "b")
                first = rng.choice(SIDES)
                self._apply(p, first, {name: a})
                if rng.random() < 0.5:
                    time.sleep(rng.uniform(0.0, 1.1))
                self._apply(p, CB if first == CRM else CRM, {name: b})
                return True
            if kind == "blank":
                name = rng.choice(spec.blankable)
                side = rng.choice(spec.edit_sides[name])
                self._apply(p, side, {name: None})
                return True
            name = rng.choice(sorted(spec.edit_sides))
            side = rng.choice(spec.edit_sides[name])
            self._apply(p, side, {name: spec.gens[name](rng, tag)})
            return True
        if kind == "delete":
            pool = self._pairs("linked")
            if not pool:
                return False
            p = rng.choice(pool)
            side = rng.choice(spec.deletes)
            r = p.rec(side)
            assert r is not None and r.id is not None
            self.history.append(f"round {self.round}: {p.pid} {side} {r.id} delete")
            self.fa.delete(side, r.id)
            r.deleted = True
            for q in self.pairs.values():
                if q.rec(side) is r and q.status == "linked":
                    q.dirty = True
            return True
        if kind == "survivor_edit":
            pool = [
                p
                for p in self._pairs("detached")
                if any((CRM if p.deleted_side == CB else CB) in s for s in spec.edit_sides.values())
            ]
            if not pool:
                return False
            p = rng.choice(pool)
            side = CB if p.deleted_side == CRM else CRM
            names = sorted(n for n, s in spec.edit_sides.items() if side in s)
            r = p.rec(side)
            if not names or r is None or r.deleted or r.id is None:
                return False
            name = rng.choice(names)
            value = spec.gens[name](rng, tag)
            self.history.append(f"round {self.round}: {p.pid} survivor {side} {r.id} set {name}={value!r}")
            raw = self.fa.update(side, r.id, {name: value})
            r.values = values_of(self.m, side, raw)
            r.ts = ts_of(side, raw)
            return True
        raise ValueError(kind)

    def _generate(self, p: Pair) -> bool:
        """Chargebee generates the order of ``p``'s invoice (order_order), sometimes without
        a number yet; only a round after the Customcrm order was made (it has waited)."""
        if p.status != "waiting" or p.born >= self.round or p.crm is None or p.crm.deleted:
            return False
        assert p.invoice is not None
        numbered = self.rng.random() < 0.6
        raw = _generated_order(self, p.invoice, assign_number=numbered)
        p.cb = self._rec(CB, raw["id"], raw)
        p.status, p.dirty = "new", True
        self.history.append(
            f"round {self.round}: {p.pid} generate {raw['id']} of {p.invoice} "
            f"({'numbered' if numbered else 'no number'}) {p.cb.values}"
        )
        return True

    # -- model transitions at a run --------------------------------------------------------------
    def _settle_new(self, p: Pair) -> None:
        if p.crm is not None and p.cb is not None:
            # a new record and the existing one it matches: merged as if nothing were agreed
            if p.crm.deleted or p.cb.deleted:
                p.status = "gone"
                return
            p.base = {f.name: None for f in self.m.fields}
            p.status = "linked"
            self._merge(p)
            return
        src = p.crm if p.crm is not None else p.cb
        assert src is not None
        if src.deleted:
            p.status = "gone"
            return
        other_side = CB if src.side == CRM else CRM
        values = dict(src.values)
        other = Rec(other_side, None, values)
        if other_side == CB:
            p.cb = other
        else:
            p.crm = other
        p.base = dict(values)
        p.status = "linked"

    def _resolve_ids(self, crm: dict[str, Any], cb: dict[str, Any]) -> None:
        key = self.m.match_key
        for p in self.pairs.values():
            if p.status != "linked":
                continue
            for side, recs in ((CRM, crm), (CB, cb)):
                r = p.rec(side)
                assert r is not None
                if r.id:
                    continue
                want = r.values[key]
                found = [i for i, x in recs.items() if is_live(x) and values_of(self.m, side, x)[key] == want]
                src = p.crm if side == CB else p.cb
                if side == CB and self.m.create_id and src is not None and src.id:
                    # a deterministic id (``crm-{crm_id}``) names the record the sync created
                    with contextlib.suppress(KeyError):
                        made = self.m.create_id.format(crm_id=src.id, **src.values)
                        if made in recs:
                            found = [made]
                if len(found) == 1:
                    r.id = found[0]
                    self.recs[(side, r.id)] = r
                    # What the created side assigned itself: a default filling a blank (an
                    # item's external_name defaults to its name) is a change on that side
                    # and flows back by the next run; a field only the created side is the
                    # source of (an order's number, totals and invoice) is, as documented
                    # in links._base_after, what both sides start from - the source side's
                    # differing value (blank included) is then a read-only edit there
                    actual = values_of(self.m, side, recs[r.id])
                    for f in self.m.fields:
                        n, v = f.name, actual[f.name]
                        if v == r.values[n]:
                            continue
                        if f.source() == side:
                            assert p.base is not None
                            r.values[n] = p.base[n] = v
                            p.dirty = True
                        elif r.values[n] is None:
                            r.values[n] = v
                            p.dirty = True
                elif not found:
                    self.fail(
                        "lost_edit",
                        f"{p.pid}: no {side} record with {key}={want!r} after a sync (create lost)",
                    )
                    p.status = "gone"

    # -- the flow's own checks --------------------------------------------------------------------
    def _check_more(self, view: RunView) -> None:
        m, rnd, crm, cb = self.m, view.rnd, view.crm, view.cb
        self._check_waiting(view.out, rnd, cb, view.held, view.linked)
        # 6. a side the sync may not create on gets no record from a lonely or new one
        for p in self.pairs.values():
            if p.status != "lonely":
                continue
            src = p.crm or p.cb
            assert src is not None
            other, recs = (CB, cb) if src.side == CRM else (CRM, crm)
            key = src.values[m.match_key]
            twins = [i for i, x in recs.items() if is_live(x) and values_of(m, other, x)[m.match_key] == key]
            if twins and other == CB and self.spec.cb_key_unique:
                self.fail(
                    "duplicate",
                    f"{rnd}: {p.pid} made {other} records {twins} (the flow never creates there)",
                    once=f"tw {p.pid}",
                )

    def _check_waiting(
        self,
        out: RunOutcome,
        rnd: str,
        cb: dict[str, Any],
        held: list[Any],
        linked_ids: set[str],
    ) -> None:
        """Records that must wait for a person (order_order: a Customcrm order whose invoice
        has no order yet, or that names no invoice): never linked, nothing made for them
        in Chargebee, and, after a run that finished, held as ``waiting`` with a reason
        naming the record and the field to fill (``held_for``) and, for an order whose
        invoice has no order yet, the mapping's ``create_disabled_reason`` (what to do in
        Chargebee). A pair linked since must no longer be held."""
        holds = {(str(side), str(rid)): (kind, reason or "") for side, rid, reason, kind in held}
        why = " ".join(str(self.m.create_disabled_reason or "").split())
        for p in self.pairs.values():
            if p.crm is None or p.crm.id is None:
                continue
            if p.status == "linked" and not p.dirty and not p.uncertain and out.finished:
                hold = holds.get((CRM, p.crm.id))
                if hold is not None and hold[0] == "waiting" and p.held_for and p.held_for in hold[1]:
                    self.fail(
                        "quarantine",
                        f"{rnd}: {p.pid} {p.crm.id} is linked but still held: {hold[1][:200]}",
                        once=f"stale hold {p.pid}",
                    )
            if p.status not in ("waiting", "lonely") or p.held_for is None or p.crm.deleted:
                continue
            if p.crm.id in linked_ids:
                self.fail("link", f"{rnd}: {p.pid} {p.crm.id} waits for its order yet is linked")
            if p.invoice is not None:
                made = sorted(i for i, x in cb.items() if x.get("invoice_id") == p.invoice)
                if made:
                    self.fail(
                        "duplicate",
                        f"{rnd}: {p.pid} {p.crm.id}: Chargebee orders {made} of {p.invoice} exist, "
                        "not generated by Chargebee (the flow never creates orders there)",
                        once=f"made {p.pid}",
                    )
            if not out.finished:
                continue
            hold = holds.get((CRM, p.crm.id))
            if hold is None:
                self.fail(
                    "quarantine", f"{rnd}: {p.pid} {p.crm.id} waits but is not held", once=f"nh {p.pid}"
                )
                continue
            kind, reason = hold
            flat = " ".join(reason.split())
            wrong = []
            if kind != "waiting":
                wrong.append(f"kind {kind!r}, not 'waiting'")
            if p.crm.id not in reason or p.held_for not in reason:
                wrong.append(f"does not name {p.crm.id} and {p.held_for}")
            if p.invoice is not None and why and why not in flat:
                wrong.append("lacks the mapping's create_disabled_reason")
            if wrong:
                self.fail(
                    "quarantine",
                    f"{rnd}: {p.pid} {p.crm.id} held: {'; '.join(wrong)}: {reason[:300]!r}",
                    once=f"hr {p.pid}",
                )


# -- runs ----------------------------------------------------------------------------------------


def _planned_writes(store: Any, flow: str, run_id: str) -> Counter[str]:
    """Records the run's plan writes to, per side (after transform)."""
    from crmsync.store.schema import plan
    from sqlalchemy import select

    out: Counter[str] = Counter()
    with store.connect() as conn:
        for crm_op, cb_op in conn.execute(
            select(plan.c.crm_op, plan.c.cb_op).where(plan.c.run_id == run_id, plan.c.flow == flow)
        ):
            out[CRM] += crm_op is not None
            out[CB] += cb_op is not None
    return out


def _victim(store: Any, m: Mapping, rng: random.Random) -> Callable[[str], tuple[str, int] | None]:
    """A kill round's victim: the upsert of a side this run plans to write to, killed
    after one or two writes; none (update_links is killed) for a flow that writes nothing
    through the APIs (user_order)."""

    def pick(run_id: str) -> tuple[str, int] | None:
        if spec_for(m.flow, m.path).kill_step != "upsert":
            return None
        planned = _planned_writes(store, m.flow, run_id)
        writable = [s for s in SIDES if planned[s]] or [CRM]
        victim = rng.choice(writable)
        return victim, rng.randint(1, max(1, min(2, planned[victim])))

    return pick


def run_flow_chaos(
    api: Api,
    store: Any,
    dags: dict[str, Any],
    flow: str,
    cfg: Config,
    *,
    log: Callable[[str], None] = lambda s: None,
    mapping_file: Path | None = None,
) -> Report:
    """Prerequisite flows and a baseline sync, ``cfg.rounds`` faulty rounds, clean runs, an idle run.
    ``mapping_file``: the mapping ``dags[flow]`` was built from, when not the shipped one."""
    from scripts.runner import run_flow

    report = Report(cfg.seed, flow=flow)
    conf = {"approve_large_change": True}
    api.set_faults(None)
    spec = spec_for(flow, mapping_file)
    for pre in spec.prereq:
        assert run_flow(dags[pre], conf).ok, f"prerequisite {pre} failed"
    for _ in range(2):  # a record created by the first run takes the values its new side assigned
        first = run_flow(dags[flow], conf)
        assert first.ok, f"baseline run of {flow} failed: {first.failed_tasks}"
    world = FlowWorld(api, store, flow, cfg, report, mapping_file)
    world.adopt_baseline()
    log(f"{flow} baseline: {len(world.pairs)} linked pairs")
    cb_writes_before = api.writes(CB)
    rng = random.Random(cfg.seed * 7919 + len(flow))
    pick = _victim(store, world.m, rng)
    experiment(world, dags[flow], conf, rng, pick, extra_faults=spec.faults, label=f"{flow} ", log=log)

    by_sync = api.writes(CB) - cb_writes_before - world.fa.cb_writes
    if flow in READ_ONLY_CB and by_sync:
        world.fail("read_only", f"the sync wrote {by_sync} times to Chargebee's API")
    if not world.m.can_create[CB]:
        # a flow that never creates in Chargebee (order_order on current order management)
        # must not even try: POST /<resource> reaches no site that refuses it
        by_endpoint = api.sb.stats(CB)["by_endpoint"]
        creates = (f"POST /{spec.cb_resource}", f"POST /api/v2/{spec.cb_resource}")
        tried = {k: v for k, v in by_endpoint.items() if k in creates}
        if tried:
            world.fail("duplicate", f"the sync sent POST /{spec.cb_resource}: {tried}")
    report.seen_429 = api.status_count("429")
    world.statuses = Counter(p.status for p in world.pairs.values())
    log(
        f"{flow} done: edits {dict(report.edits)}; pairs by status {dict(world.statuses)}; "
        f"held at the end: {dict(world.held_reasons)}"
    )
    return report
