"""Chaos harness for contact_customer: seeded edits, faulty DAG runs, an independent model.

Shared by ``tests/chaos/test_chaos_convergence.py`` (small) and ``scripts/chaos.py``
(bigger, prints a table). One *round* is: a seeded batch of edits made on both
sandboxes the way people would make them (API calls with faults off), then one sync
run with faults on (a DAG run, or - in kill rounds - the task callables run one by
one with an upsert task SIGKILLed in a subprocess and then rerun, as Airflow's retry
would), then faults off and a check.

The expected state is the shared model of ``tests/chaos/model.py`` (also used by
``flows.py``), computed from the flow's documented policies only (the mapping file and
DESIGN.md §4), never from the engine's code; this module adds contact_customer's edits
(emails, billing address, creates on both sides) and how its new records settle:

* per field, three-way against the value both sides last agreed on (``base``): a
  field changed on one side flows to the other; changed on both sides to different
  values is a conflict won by the record with the newer ``updated_at`` as each system
  reports it (tie → Customcrm), and it must be audited;
* a clear is an edit: a field both sides last agreed on with a value, cleared on one
  side, is cleared on the other; cleared on one side and edited on the other is a
  conflict like any other; a blank that was never synced (no agreed value) never
  overwrites, the other side's value fills it;
* a new record is linked to the one record on the other side with the same
  normalised email, else created there with its non-blank values;
* ``unlink`` on a delete on either side: the link ends, the survivor keeps its values,
  and nothing is re-created on the side that deleted. Chargebee only schedules a
  customer delete and purges the customer minutes later; the harness moves the
  Chargebee clock past the purge after a round's edits, before its run, so a round's
  deletes have happened when the run reads (the pending window itself is checked in
  ``tests/e2e/test_customer_deletion.py``). Customcrm's clock moves by the same amount,
  so neither system runs ahead of the other.

A run is a *sync point* for a person when it finished and reported no failed, stale
or held write for the person's records (read from the run's plan rows: the engine's
per-record report). Until then the person's edits accumulate in one open window; a
window that spanned a failed run is checked with weaker invariants (one-sided edits
must still arrive; contested fields must agree on one of the values seen) and the
model then adopts what the systems hold.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Any

import requests

from tests.chaos.model import (  # noqa: F401  (re-exported: scripts/chaos.py and the tests import them here)
    CB,
    CRM,
    SIDES,
    Config,
    Pair,
    Rec,
    Report,
    RunOutcome,
    Sandboxes,
    World,
    _path,
    canon_text,
    experiment,
    kill_task,
    load_mapping,
    run_outcome,
    table,
    ts_of,
    values_of,
)

FLOW = "contact_customer"
#: the plain two-way fields: references and one-way fields follow other rules (flows.py)
MAPPING = load_mapping(FLOW, two_way_only=True)
MAPPING_FILE = MAPPING.path
FIELDS = list(MAPPING.fields)
BY_NAME = {f.name: f for f in FIELDS}
EDITABLE = ("first_name", "last_name", "phone", "company", "city")
BLANKABLE = ("last_name", "phone", "company", "city")

#: a text value in the canonical form (used by generated.py)
canon = canon_text
Person = Pair


def crm_values(rec: dict[str, Any]) -> dict[str, Any]:
    return values_of(MAPPING, CRM, rec)


def cb_values(rec: dict[str, Any]) -> dict[str, Any]:
    return values_of(MAPPING, CB, rec)


def crm_ts(rec: dict[str, Any]) -> float:
    return ts_of(CRM, rec)


def cb_ts(rec: dict[str, Any]) -> float:
    return ts_of(CB, rec)


# -- sandbox access (faults are off whenever the harness itself calls an API) -----------------


class Api(Sandboxes):
    """People's edits, through the public APIs, and admin reads that skip faults and stats."""

    # reads (admin: never faulted, never counted)
    def all_crm(self) -> dict[str, dict[str, Any]]:
        r = requests.get(f"{self.sb.crm_url}/_sandbox/records/contacts", timeout=30)
        r.raise_for_status()
        return {x["Id"]: x for x in r.json()["records"]}

    def all_cb(self) -> dict[str, dict[str, Any]]:
        r = requests.get(f"{self.sb.cb_url}/_sandbox/records/customers", timeout=30)
        r.raise_for_status()
        return {x["id"]: x for x in r.json()["records"]}

    # Customcrm, as a person in its UI (no If-Match)
    def crm_create(self, values: dict[str, Any]) -> dict[str, Any]:
        body = {BY_NAME[k].crm: v for k, v in values.items()}
        return dict(self.sb.crm("POST", "contacts", json=body))

    def crm_update(self, rid: str, values: dict[str, Any]) -> dict[str, Any]:
        body = {BY_NAME[k].crm: v for k, v in values.items()}
        return dict(self.sb.crm("PATCH", f"contacts/{rid}", json=body))

    def crm_delete(self, rid: str) -> None:
        self.sb.crm("DELETE", f"contacts/{rid}")

    # Chargebee, as a person in its UI
    def cb_create(self, values: dict[str, Any]) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for k, v in values.items():
            if v is None:
                continue
            path = BY_NAME[k].cb
            if "." in path:
                top, sub = path.split(".", 1)
                data[f"{top}[{sub}]"] = v
            else:
                data[path] = v
        return dict(self.sb.cb("POST", "customers", data=data)["customer"])

    def cb_update(self, rid: str, values: dict[str, Any]) -> dict[str, Any]:
        top = {BY_NAME[k].cb: ("" if v is None else v) for k, v in values.items() if "." not in BY_NAME[k].cb}
        nested = {BY_NAME[k].cb.split(".", 1)[1]: v for k, v in values.items() if "." in BY_NAME[k].cb}
        rec: dict[str, Any] = {}
        if top:
            rec = self.sb.cb("POST", f"customers/{rid}", data=top)["customer"]
        if nested:
            # update_billing_info replaces the address: send all of it, as the UI does.
            current = self.sb.cb("GET", f"customers/{rid}")["customer"].get("billing_address") or {}
            addr = {k: v for k, v in current.items() if k not in ("object", "validation_status")}
            addr.update(nested)
            data = {f"billing_address[{k}]": v for k, v in addr.items() if v not in (None, "")}
            rec = self.sb.cb("POST", f"customers/{rid}/update_billing_info", data=data)["customer"]
        return dict(rec)

    def cb_delete(self, rid: str) -> None:
        """Chargebee only schedules a customer delete; :meth:`purge_cb` makes it happen."""
        self.sb.cb("POST", f"customers/{rid}/delete")

    def purge_cb(self) -> None:
        """Move the clocks past the purge of every Chargebee customer delete made so far:
        Chargebee purges a deleted customer "after a few minutes" (the sandbox's
        ``customer_purge_seconds``) and publishes ``customer_deleted`` then."""
        base = f"{self.sb.cb_url}/_sandbox"
        seconds = float(requests.get(f"{base}/config", timeout=10).json()["customer_purge_seconds"])
        # both clocks, by the same amount: neither system runs ahead of the other, so the
        # conflict rule's ties (same updated_at on both sides) stay possible
        for url in (self.sb.cb_url, self.sb.crm_url):
            moved = requests.post(f"{url}/_sandbox/clock", json={"advance": seconds + 1}, timeout=10)
            moved.raise_for_status()


# -- values ------------------------------------------------------------------------------------

FIRST = [
    "Ada",
    "Øystein",
    "Zoë",
    "José",
    "Nguyễn",
    "Émile",
    "Ingrid",
    "Søren",
    "Anaïs",
    "Björn",
    "Aiko",
    "Łukasz",
]
LAST = ["Lovelace", "Ødegård", "Müller", "García", "Trần", "Brontë", "Haugen", "Kowalski", "O'Neil", "Dvořák"]
WORDS = ["Fjord", "Nordic", "Aurora", "Bølge", "Granite", "Lumen", "Kvist", "Polar", "Vindel", "Ember"]
CITIES = ["Oslo", "Bergen", "Tromsø", "Malmö", "Zürich", "Kraków", "Dublin", "Århus", "Göteborg", "Łódź"]


def new_value(rng: random.Random, name: str, tag: str) -> str:
    if name == "first_name":
        return f"{rng.choice(FIRST)}-{tag}"
    if name == "last_name":
        return f"{rng.choice(LAST)} {tag}"
    if name == "phone":
        return f"+47 {rng.randint(40000000, 99999999)}"
    if name == "company":
        return f"{rng.choice(WORDS)} {tag} AS"
    if name == "city":
        return f"{rng.choice(CITIES)} {tag}"
    raise ValueError(name)


# -- report ------------------------------------------------------------------------------------


# -- the world: contact_customer's edits and how its new records settle ---------------------


WEIGHTS = {
    "create_crm": 2.0,
    "create_cb": 2.0,
    "create_both": 1.0,
    "edit": 8.0,
    "conflict": 2.5,
    "same_both": 0.8,
    "blank": 1.5,
    "email": 1.5,
    "delete": 1.2,
    "delete_new": 0.3,
    "survivor_edit": 0.7,
}


class ContactWorld(World):
    #: a pair created on both sides in one window is audited by either of its ids
    match_either = True

    def __init__(self, api: Api, store: Any, cfg: Config, report: Report) -> None:
        super().__init__(api, store, cfg, report, MAPPING, random.Random(cfg.seed))
        self.api: Api = api
        self._twins_seen: set[tuple[str, tuple[str, ...]]] = set()
        #: Chargebee customer deletes this round (scheduled; purged before the run)
        self.cb_deletes = 0

    @property
    def persons(self) -> dict[str, Pair]:
        return self.pairs

    def read_all(self) -> tuple[dict[str, Any], dict[str, Any]]:
        return self.api.all_crm(), self.api.all_cb()

    def before_run(self) -> None:
        if self.cb_deletes:
            self.api.purge_cb()  # the round's Chargebee deletes have happened when the run reads

    # -- setup ------------------------------------------------------------------------------
    def adopt_baseline(self) -> None:
        """After a clean first sync: every email live exactly once on each side is one person."""
        crm, cb = self.api.all_crm(), self.api.all_cb()
        crm_by = _by_email({i: crm_values(r) for i, r in crm.items() if not r["Deleted"]})
        cb_by = _by_email({i: cb_values(r) for i, r in cb.items() if not r.get("deleted")})
        for email in sorted(set(crm_by) & set(cb_by)):
            if len(crm_by[email]) != 1 or len(cb_by[email]) != 1:
                continue
            ci, ki = crm_by[email][0], cb_by[email][0]
            cv, kv = crm_values(crm[ci]), cb_values(cb[ki])
            pid = self._pid()
            self.pairs[pid] = Pair(
                pid,
                Rec(CRM, ci, cv, crm_ts(crm[ci])),
                Rec(CB, ki, kv, cb_ts(cb[ki])),
                "linked",
                self._agreed(cv, kv),
            )

    def _pid(self) -> str:
        self._n += 1
        return f"P{self._n:04d}"

    def _email(self, pid: str) -> str:
        self._n += 1
        return f"{pid.lower()}.{self.cfg.seed}.{self._n}@chaos.example"

    # -- edits ------------------------------------------------------------------------------
    def _pick(
        self, status: str, *, both_live: bool = False, pred: Callable[[Person], bool] | None = None
    ) -> Person | None:
        pool = [
            p
            for p in self.pairs.values()
            if p.status == status
            and (
                not both_live
                or (p.crm and p.cb and p.crm.id and p.cb.id and not p.crm.deleted and not p.cb.deleted)
            )
            and (pred is None or pred(p))
        ]
        return self.rng.choice(pool) if pool else None

    def _apply(self, p: Person, side: str, values: dict[str, Any]) -> None:
        s = p.rec(side)
        assert s is not None and s.id is not None
        self.history.append(f"round {self.round}: {p.pid} {p.status} {side} {s.id} set {values}")
        raw = self.api.crm_update(s.id, values) if side == CRM else self.api.cb_update(s.id, values)
        s.ts = crm_ts(raw) if side == CRM else cb_ts(raw)
        for k, v in values.items():
            s.values[k] = canon(BY_NAME[k].transform, v)
            p.note(k, s.values[k])
        p.dirty = True

    def _create(self, side: str, values: dict[str, Any]) -> Rec:
        raw = self.api.crm_create(values) if side == CRM else self.api.cb_create(values)
        vals = crm_values(raw) if side == CRM else cb_values(raw)
        return Rec(
            side, raw["Id"] if side == CRM else raw["id"], vals, crm_ts(raw) if side == CRM else cb_ts(raw)
        )

    def _delete(self, p: Pair, side: str) -> None:
        """A person deletes the record of ``p`` on ``side`` (Chargebee: scheduled, purged
        before the round's run)."""
        s = p.rec(side)
        assert s is not None and s.id is not None
        self.history.append(f"round {self.round}: {p.pid} {p.status} {side} {s.id} delete")
        (self.api.crm_delete if side == CRM else self.api.cb_delete)(s.id)
        self.cb_deletes += side == CB
        s.deleted = True

    def _fresh_person(self) -> tuple[str, dict[str, Any]]:
        pid = self._pid()
        tag = pid[1:]
        values = {"email": self._email(pid), "first_name": new_value(self.rng, "first_name", tag)}
        for name in ("last_name", "phone", "company", "city"):
            if self.rng.random() < 0.8:
                values[name] = new_value(self.rng, name, tag)
        return pid, values

    def edit_round(self) -> None:
        self.round += 1
        self.cb_deletes = 0
        self.make_edits(WEIGHTS)

    def _edit(self, kind: str) -> bool:
        rng = self.rng
        tag = f"r{self.round}x{rng.randint(100, 999)}"
        if kind in ("create_crm", "create_cb", "create_both"):
            pid, values = self._fresh_person()
            crm = cb = None
            if kind in ("create_crm", "create_both"):
                crm = self._create(CRM, values)
            if kind in ("create_cb", "create_both"):
                other = dict(values)
                if kind == "create_both":  # the same person entered twice, a little differently
                    for name in EDITABLE:
                        if rng.random() < 0.4:
                            other[name] = new_value(rng, name, tag)
                    if rng.random() < 0.5:
                        other["email"] = values["email"].upper()
                cb = self._create(CB, other)
            made = Pair(pid, crm, cb, "new", dirty=True)
            self.history.append(
                f"round {self.round}: {pid} {kind} crm={crm and crm.id} cb={cb and cb.id} {values}"
            )
            for s in (crm, cb):
                if s:
                    for k, v in s.values.items():
                        made.note(k, v)
            self.pairs[pid] = made
            return True
        if kind in ("edit", "blank", "email"):
            p = self._pick("linked", both_live=True)
            if p is None:
                return False
            side = rng.choice(SIDES)
            if kind == "edit":
                name = rng.choice(EDITABLE)
                value: Any = new_value(rng, name, tag)
            elif kind == "blank":
                name = rng.choice(BLANKABLE)
                value = rng.choice([None, ""])
            else:
                name, value = "email", self._email(p.pid)
            self._apply(p, side, {name: value})
            return True
        if kind in ("conflict", "same_both"):
            p = self._pick("linked", both_live=True)
            if p is None:
                return False
            name = rng.choice((*EDITABLE, "email"))
            if name == "email":
                a, b = self._email(p.pid), self._email(p.pid)
            else:
                a, b = new_value(rng, name, tag + "a"), new_value(rng, name, tag + "b")
            if kind == "same_both":
                b = a
            first = rng.choice(SIDES)
            self._apply(p, first, {name: a})
            if rng.random() < 0.5:
                time.sleep(rng.uniform(0.0, 1.1))  # sometimes the same second, sometimes not
            self._apply(p, CB if first == CRM else CRM, {name: b})
            return True
        if kind == "delete":
            p = self._pick("linked", both_live=True)
            if p is None:
                return False
            self._delete(p, rng.choice(SIDES))
            p.dirty = True
            return True
        if kind == "delete_new":
            p = self._pick(
                "new",
                pred=lambda q: [x.deleted for x in (q.crm, q.cb) if x is not None] == [False],
            )
            if p is None:
                return False
            self._delete(p, CRM if p.crm is not None else CB)
            return True
        if kind == "survivor_edit":
            p = self._pick("detached")
            if p is None:
                return False
            side = CB if p.deleted_side == CRM else CRM
            name = rng.choice(EDITABLE)
            self._apply(p, side, {name: new_value(rng, name, tag)})
            return True
        raise ValueError(kind)

    # -- model transitions at a run ----------------------------------------------------------

    # -- model transitions at a run ----------------------------------------------------------
    def _settle_new(self, p: Pair) -> None:
        live = [s for s in (p.crm, p.cb) if s is not None and not s.deleted]
        if not live:
            p.status = "gone"
            return
        p.status = "linked"
        if len(live) == 2:
            p.base = {f.name: None for f in FIELDS}
            self._merge(p)
            return
        src = live[0]
        values = dict(src.values)
        if src is p.crm:
            p.cb = Rec(CB, None, values)
        else:
            p.crm = Rec(CRM, None, values)
        p.base = dict(values)

    def _resolve_ids(self, crm: dict[str, Any], cb: dict[str, Any]) -> None:
        """A record the sync created is found by the email it must carry."""
        need = [
            p
            for p in self.pairs.values()
            if p.status == "linked" and not (p.crm and p.crm.id and p.cb and p.cb.id)
        ]
        if not need:
            return
        crm_by = _by_email({i: crm_values(r) for i, r in crm.items() if not r["Deleted"]})
        cb_by = _by_email({i: cb_values(r) for i, r in cb.items() if not r.get("deleted")})
        for p in need:
            for side, by in ((CRM, crm_by), (CB, cb_by)):
                s = p.rec(side)
                assert s is not None
                if s.id:
                    continue
                email = s.values["email"]
                found = by.get(email, [])
                if len(found) == 1:
                    s.id = found[0]
                elif not found:
                    self.fail(
                        "lost_edit", f"{p.pid}: no {side} record with {email} after a sync (create lost)"
                    )
                    p.status = "gone"
                # several: counted by the duplicate check

    def explain(self, p: Person) -> str:
        """A person's state, what the link store says about its records, and its edits."""
        from crmsync.store.schema import plan, quarantine
        from sqlalchemy import select

        ids = sorted(p.ids())
        lines = [f"{p.pid} status={p.status} ids={ids} uncertain={p.uncertain}"]
        with self.store.connect() as conn:
            for row in conn.execute(
                select(
                    quarantine.c.side, quarantine.c.record_id, quarantine.c.kind, quarantine.c.reason
                ).where(quarantine.c.record_id.in_(ids))
            ):
                lines.append(f"  held: {tuple(row)}")
            for row in conn.execute(
                select(
                    plan.c.run_id,
                    plan.c.action,
                    plan.c.crm_status,
                    plan.c.cb_status,
                    plan.c.crm_error,
                    plan.c.cb_error,
                )
                .where(plan.c.crm_id.in_(ids) | plan.c.cb_id.in_(ids))
                .order_by(plan.c.id.desc())
                .limit(4)
            ):
                lines.append(f"  plan: {tuple(row)}")
        lines += [f"  edit: {h}" for h in self.history if f" {p.pid} " in h][-8:]
        return "\n".join(lines)


def _by_email(values: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for rid, v in sorted(values.items()):
        if v.get("email"):
            out.setdefault(v["email"], []).append(rid)
    return out


# -- the whole experiment ----------------------------------------------------------------------


# -- the whole experiment ----------------------------------------------------------------------


def run_chaos(
    api: Api,
    store: Any,
    dag: Any,
    cfg: Config,
    *,
    log: Callable[[str], None] = lambda s: None,
) -> Report:
    """Baseline sync, ``cfg.rounds`` faulty rounds, then clean runs until converged."""
    from scripts.runner import run_flow

    report = Report(cfg.seed)
    conf = {"approve_large_change": True}  # chaos rounds are bulk edits by design
    api.set_faults(None)
    first = run_flow(dag, conf)
    assert first.ok, f"baseline run failed: {first.failed_tasks}"
    world = ContactWorld(api, store, cfg, report)
    world.adopt_baseline()
    log(f"baseline: {len(world.pairs)} linked people")
    rng = random.Random(cfg.seed * 7919)
    # a kill round: the upsert of a random side, killed after one to four of its writes
    experiment(world, dag, conf, rng, lambda _run_id: (rng.choice(SIDES), rng.randint(1, 4)), log=log)
    report.seen_429 = api.status_count("429")
    return report
