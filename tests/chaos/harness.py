"""Chaos harness for contact_customer: seeded edits, faulty DAG runs, an independent model.

Shared by ``tests/chaos/test_chaos_convergence.py`` (small) and ``scripts/chaos.py``
(bigger, prints a table). One *round* is: a seeded batch of edits made on both
sandboxes the way people would make them (API calls with faults off), then one sync
run with faults on (a DAG run, or - in kill rounds - the task callables run one by
one with an upsert task SIGKILLed in a subprocess and then rerun, as Airflow's retry
would), then faults off and a check.

The expected state is computed here, from the flow's documented policies only (the
mapping file and DESIGN.md §4), never from the engine's code:

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

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import requests
import yaml

ROOT = Path(__file__).resolve().parents[2]
MAPPING_FILE = ROOT / "include" / "mappings" / "contact_customer.yaml"
FLOW = "contact_customer"
CRM, CB = "customcrm", "chargebee"
SIDES = (CRM, CB)


# -- the mapping, read independently of the package ----------------------------------------


@dataclass(frozen=True)
class Field:
    name: str
    crm: str
    cb: str  # dotted path, e.g. billing_address.city
    transform: str


def load_fields(path: Path = MAPPING_FILE) -> list[Field]:
    """The plain two-way fields. References (``ref:``, ids translated through another
    flow's links) and one-way fields follow other rules and are left out of the model."""
    doc = yaml.safe_load(path.read_text())
    return [
        Field(f["name"], f["customcrm"], f["chargebee"], f.get("transform", "strip"))
        for f in doc["fields"]
        if not f.get("ref") and f.get("direction", "both") == "both"
    ]


FIELDS = load_fields()
BY_NAME = {f.name: f for f in FIELDS}
EDITABLE = ("first_name", "last_name", "phone", "company", "city")
BLANKABLE = ("last_name", "phone", "company", "city")


def canon(transform: str, value: Any) -> Any:
    """The canonical form both sides are compared in: NFC, trimmed, '' → None, email lower."""
    if value is None:
        return None
    if isinstance(value, bool):
        value = "true" if value else "false"
    s = unicodedata.normalize("NFC", str(value)).strip()
    if not s:
        return None
    if transform in ("email", "lower"):
        return s.lower()
    if transform in ("country", "upper"):
        return s.upper()
    return s


def _path(raw: dict[str, Any], path: str) -> Any:
    cur: Any = raw
    for part in path.split("."):
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    return cur


def crm_values(rec: dict[str, Any]) -> dict[str, Any]:
    return {f.name: canon(f.transform, rec.get(f.crm)) for f in FIELDS}


def cb_values(rec: dict[str, Any]) -> dict[str, Any]:
    return {f.name: canon(f.transform, _path(rec, f.cb)) for f in FIELDS}


def crm_ts(rec: dict[str, Any]) -> float:
    return datetime.fromisoformat(str(rec["UpdatedAt"]).replace("Z", "+00:00")).timestamp()


def cb_ts(rec: dict[str, Any]) -> float:
    return float(rec.get("updated_at") or 0)


# -- sandbox access (faults are off whenever the harness itself calls an API) -----------------


class Api:
    """People's edits, through the public APIs, and admin reads that skip faults and stats."""

    def __init__(self, sb: Any) -> None:
        self.sb = sb  # tests.e2e.conftest.Sandboxes

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

    # faults and counters
    def set_faults(self, settings: dict[str, Any] | None) -> None:
        for which in SIDES:
            self.sb.faults(which, **(settings or {}))

    def injected(self) -> Counter[str]:
        """Faults injected since the last configuration, both sandboxes (read before reconfiguring)."""
        out: Counter[str] = Counter()
        for base in (self.sb.cb_url, self.sb.crm_url):
            out.update(requests.get(f"{base}/_sandbox/faults", timeout=10).json().get("injected", {}))
        return out

    def status_count(self, status: str) -> int:
        return sum(int(self.sb.stats(w).get("by_status", {}).get(status, 0)) for w in SIDES)

    def writes(self, which: str) -> int:
        rows = self.sb.stats(which)["requests"]
        return sum(int(r["count"]) for r in rows if r["method"] in ("POST", "PATCH", "DELETE"))


# -- the model ---------------------------------------------------------------------------------


@dataclass
class SideState:
    id: str | None
    values: dict[str, Any]
    ts: float = 0.0  # updated_at of the record as its system reported it at the last edit
    deleted: bool = False


@dataclass
class Person:
    pid: str
    crm: SideState | None
    cb: SideState | None
    status: str  # new | linked | detached | gone
    base: dict[str, Any] | None = None
    dirty: bool = False  # edited since its last sync point
    uncertain: bool = False  # the open window spans a run that did not sync this person
    seen: dict[str, set[Any]] = field(default_factory=dict)  # every value of the open window
    contested: set[str] = field(default_factory=set)  # fields changed on both sides in the window
    deleted_side: str | None = None  # detached: which side deleted

    def side(self, name: str) -> SideState | None:
        return self.crm if name == CRM else self.cb

    def ids(self) -> set[str]:
        return {s.id for s in (self.crm, self.cb) if s is not None and s.id}

    def note(self, name: str, value: Any) -> None:
        self.seen.setdefault(name, set()).add(value)


@dataclass(frozen=True)
class Expected:
    """A conflict the model expects the engine to audit in a given run."""

    pid: str
    field: str
    winner: str


def merge_field(b: Any, c: Any, k: Any, c_ts: float, k_ts: float) -> tuple[Any, Any, Any, str | None]:
    """One field, as the mapping's policies say: (merged, crm after, cb after, conflict winner)."""
    if c == k:
        return c, c, k, None
    c_changed, k_changed = c != b, k != b
    conflict = c_changed and k_changed
    if c_changed and not k_changed:
        winner = CRM
    elif k_changed and not c_changed:
        winner = CB
    else:
        winner = CRM if c_ts >= k_ts else CB  # newest_wins (a clear too), tie → customcrm
    value, other = (c, k) if winner == CRM else (k, c)
    if value is None and b is None:  # a blank never synced never overwrites
        return other, c, k, (winner if conflict else None)
    return value, value, value, (winner if conflict else None)


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


@dataclass
class Report:
    seed: int
    flow: str = FLOW
    rounds: int = 0
    edits: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    kills: int = 0
    kill_attempts: int = 0
    duplicates: int = 0
    lost_edits: int = 0
    conflicts_expected: int = 0
    conflicts_audited: int = 0
    conflicts_missing: int = 0
    quarantined: int = 0
    quarantined_kinds: Counter[str] = field(default_factory=Counter)
    quarantine_without_reason: int = 0
    link_violations: int = 0
    seen_429: int = 0
    runs: int = 0
    runs_not_synced: int = 0
    converge_seconds: float | None = None
    converge_runs: int = 0
    idle_writes: int | None = None
    violations: list[str] = field(default_factory=list)

    def fail(self, kind: str, message: str) -> None:
        self.violations.append(f"[{kind}] {message}")
        if kind == "lost_edit":
            self.lost_edits += 1
        elif kind == "duplicate":
            self.duplicates += 1
        elif kind == "conflict_not_audited":
            self.conflicts_missing += 1
        elif kind == "link":
            self.link_violations += 1
        elif kind == "quarantine":
            self.quarantine_without_reason += 1


# -- runs --------------------------------------------------------------------------------------


@dataclass
class RunOutcome:
    run_id: str
    finished: bool  # the run's update_links completed (crmsync_run.status == finished)
    bad_ids: set[str]  # record ids with a failed/stale/held/unfinished write or hold in this run
    summary: dict[str, Any] | None
    killed: bool = False


def run_outcome(
    store: Any, run_id: str, summary: dict[str, Any] | None, killed: bool = False, flow: str = FLOW
) -> RunOutcome:
    """Whether the run finished, and the records it left unsynced (failed, held, waiting)."""
    from crmsync.store.schema import plan, run
    from sqlalchemy import select

    bad: set[str] = set()
    with store.connect() as conn:
        status = conn.execute(select(run.c.status).where(run.c.run_id == run_id, run.c.flow == flow)).scalar()
        for row in conn.execute(
            select(plan.c.action, plan.c.crm_id, plan.c.cb_id, plan.c.crm_status, plan.c.cb_status).where(
                plan.c.run_id == run_id, plan.c.flow == flow
            )
        ):
            statuses = {row.crm_status, row.cb_status} - {None, "done"}
            if statuses or row.action in ("quarantine", "wait"):
                bad.update(x for x in (row.crm_id, row.cb_id) if x)
    return RunOutcome(run_id, status == "finished", bad, summary, killed)


def _step(
    name: str, run_id: str, side: str | None, params: dict[str, Any], mapping_file: Path = MAPPING_FILE
) -> None:
    """One task callable, as a worker runs it."""
    from crmsync.flows.tasks import run_step

    kwargs: dict[str, Any] = {"run_id": run_id, "params": params}
    if side:
        kwargs["side"] = side
    run_step(name, str(mapping_file), **kwargs)


def kill_task(call: str, when: Callable[[float], bool]) -> bool:
    """Run ``crmsync.flows.tasks.<call>`` in a subprocess; SIGKILL it once ``when()`` holds
    (called with the seconds since the task module was imported). True when it was killed."""
    code = f"from crmsync.flows.tasks import run_step\nprint('go', flush=True)\n{call}\n"
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        env=os.environ.copy(),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        proc.stdout.readline()  # "go": imports done, the task starts now
        started = time.monotonic()
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            if when(time.monotonic() - started):
                os.kill(proc.pid, signal.SIGKILL)
                break
            time.sleep(0.01)
    finally:
        proc.wait(timeout=60)
        if proc.stdout is not None:
            proc.stdout.close()
    return proc.returncode == -signal.SIGKILL


def run_with_kill(
    api: Api, store: Any, run_id: str, rng: random.Random, params: dict[str, Any], report: Report
) -> RunOutcome:
    """The six task callables in DAG order; one upsert is SIGKILLed mid-way in a subprocess,
    then rerun in this process (what Airflow's task retry does)."""
    from scripts.runner import read_summary

    killed = False
    try:
        _step("extract", run_id, CRM, params)
        _step("extract", run_id, CB, params)
        _step("transform", run_id, None, params)
        ok = True
    except Exception:  # a failed task: its downstream tasks are upstream_failed, update_links runs
        ok = False
    if ok:
        victim = rng.choice(SIDES)
        after = rng.randint(1, 4)
        start = api.writes(victim)
        call = (
            f"run_step('upsert', {str(MAPPING_FILE)!r}, side={victim!r}, run_id={run_id!r}, "
            f"params={params!r})"
        )
        report.kill_attempts += 1
        killed = kill_task(call, lambda _seconds: api.writes(victim) - start >= after)
        report.kills += killed
        for side in (victim, CRM if victim == CB else CB):
            # the retry of the victim, then the other side; a failure (error budget) is
            # a failed task, and update_links still runs (trigger rule all_done)
            with contextlib.suppress(Exception):
                _step("upsert", run_id, side, params)
    with contextlib.suppress(Exception):
        _step("update_links", run_id, None, params)
    return run_outcome(store, run_id, read_summary(run_id, FLOW), killed)


# -- the world: edits, model transitions, checks ---------------------------------------------


@dataclass
class Config:
    seed: int = 1
    rounds: int = 4
    edits_per_round: int = 12
    kill_rounds: tuple[int, ...] = (2,)
    clean_runs: int = 2
    faults: dict[str, Any] = field(
        default_factory=lambda: {
            "error_rate": 0.08,
            "statuses": [500, 502, 503],
            "rate_429": 0.02,
            "drop_rate": 0.03,
            "lost_response_rate": 0.06,
            "latency_ms": 2,
            "latency_jitter_ms": 8,
        }
    )
    kill_latency_ms: int = 60


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


class World:
    def __init__(self, api: Api, store: Any, cfg: Config, report: Report) -> None:
        self.api = api
        self.store = store
        self.cfg = cfg
        self.report = report
        self.rng = random.Random(cfg.seed)
        self.persons: dict[str, Person] = {}
        self.expected_conflicts: list[Expected] = []
        self._n = 0
        self.round = 0
        self._dup_seen: set[str] = set()
        self._twins_seen: set[tuple[str, tuple[str, ...]]] = set()
        self.history: list[str] = []  # every edit made, for failure messages
        #: Chargebee customer deletes this round (scheduled; purged before the run)
        self.cb_deletes = 0

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
            base = {f: (cv[f] if cv[f] == kv[f] else (cv[f] if kv[f] is None else kv[f])) for f in cv}
            pid = self._pid()
            self.persons[pid] = Person(
                pid,
                SideState(ci, cv, crm_ts(crm[ci])),
                SideState(ki, kv, cb_ts(cb[ki])),
                "linked",
                base,
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
            for p in self.persons.values()
            if p.status == status
            and (
                not both_live
                or (p.crm and p.cb and p.crm.id and p.cb.id and not p.crm.deleted and not p.cb.deleted)
            )
            and (pred is None or pred(p))
        ]
        return self.rng.choice(pool) if pool else None

    def _apply(self, p: Person, side: str, values: dict[str, Any]) -> None:
        s = p.side(side)
        assert s is not None and s.id is not None
        self.history.append(f"round {self.round}: {p.pid} {p.status} {side} {s.id} set {values}")
        raw = self.api.crm_update(s.id, values) if side == CRM else self.api.cb_update(s.id, values)
        s.ts = crm_ts(raw) if side == CRM else cb_ts(raw)
        for k, v in values.items():
            s.values[k] = canon(BY_NAME[k].transform, v)
            p.note(k, s.values[k])
        p.dirty = True

    def _create(self, side: str, values: dict[str, Any]) -> SideState:
        raw = self.api.crm_create(values) if side == CRM else self.api.cb_create(values)
        vals = crm_values(raw) if side == CRM else cb_values(raw)
        return SideState(
            raw["Id"] if side == CRM else raw["id"], vals, crm_ts(raw) if side == CRM else cb_ts(raw)
        )

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
        kinds, weights = zip(*WEIGHTS.items(), strict=True)
        for _ in range(self.cfg.edits_per_round):
            kind = self.rng.choices(kinds, weights)[0]
            try:
                done = self._edit(kind)
            except Exception as exc:
                raise RuntimeError(
                    f"edit {kind} failed; last edits:\n" + "\n".join(self.history[-15:])
                ) from exc
            if done:
                self.report.edits[kind] += 1

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
            p = Person(pid, crm, cb, "new", dirty=True)
            self.history.append(
                f"round {self.round}: {pid} {kind} crm={crm and crm.id} cb={cb and cb.id} {values}"
            )
            for s in (crm, cb):
                if s:
                    for k, v in s.values.items():
                        p.note(k, v)
            self.persons[pid] = p
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
            side = rng.choice(SIDES)
            s = p.side(side)
            assert s is not None and s.id is not None
            self.history.append(f"round {self.round}: {p.pid} {p.status} {side} {s.id} delete")
            (self.api.crm_delete if side == CRM else self.api.cb_delete)(s.id)
            self.cb_deletes += side == CB
            s.deleted = True
            p.dirty = True
            return True
        if kind == "delete_new":
            p = self._pick(
                "new",
                pred=lambda q: [x.deleted for x in (q.crm, q.cb) if x is not None] == [False],
            )
            if p is None:
                return False
            side = CRM if p.crm is not None else CB
            s = p.side(side)
            assert s is not None and s.id is not None
            self.history.append(f"round {self.round}: {p.pid} new {side} {s.id} delete")
            (self.api.crm_delete if side == CRM else self.api.cb_delete)(s.id)
            self.cb_deletes += side == CB
            s.deleted = True
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
    def settle(self, out: RunOutcome) -> None:
        """Apply the policies to every person the run synced; keep the others' windows open."""
        self.report.runs += 1
        if not out.finished:
            self.report.runs_not_synced += 1
        self.expected_conflicts = []
        crm, cb = self.api.all_crm(), self.api.all_cb()
        unlinks: list[Person] = []
        for p in self.persons.values():
            if p.status == "gone":
                continue
            if p.status == "detached":
                p.dirty = False  # a survivor is not synced any more: nothing to wait for
                continue
            if not (p.dirty or p.status == "new"):
                continue
            if not out.finished or p.ids() & out.bad_ids:
                p.uncertain = True
                continue
            if p.status == "new":
                self._settle_new(p)
            elif p.status == "linked":
                if (p.crm and p.crm.deleted) or (p.cb and p.cb.deleted):
                    both = bool(p.crm and p.crm.deleted and p.cb and p.cb.deleted)
                    p.status = "gone" if both else "detached"
                    p.deleted_side = CRM if p.crm and p.crm.deleted else CB
                    if not p.uncertain:
                        unlinks.append(p)
                else:
                    self._settle_linked(p)
            p.dirty = False
        self._resolve_ids(crm, cb)
        self.check(out, crm, cb, unlinks)

    def _settle_new(self, p: Person) -> None:
        live = [s for s in (p.crm, p.cb) if s is not None and not s.deleted]
        if not live:
            p.status = "gone"
            return
        if len(live) == 2:
            assert p.crm and p.cb
            self._merge(p, {f.name: None for f in FIELDS})
        else:
            src = live[0]
            values = dict(src.values)
            other = SideState(None, values)
            if src is p.crm:
                p.cb = other
            else:
                p.crm = other
            p.base = dict(values)
        p.status = "linked"

    def _settle_linked(self, p: Person) -> None:
        assert p.base is not None
        self._merge(p, p.base)

    def _merge(self, p: Person, base: dict[str, Any]) -> None:
        assert p.crm and p.cb
        merged: dict[str, Any] = {}
        for f in FIELDS:
            b, c, k = base.get(f.name), p.crm.values[f.name], p.cb.values[f.name]
            if c != k and c != b and k != b:
                p.contested.add(f.name)
            m, c, k, winner = merge_field(b, c, k, p.crm.ts, p.cb.ts)
            merged[f.name], p.crm.values[f.name], p.cb.values[f.name] = m, c, k
            if winner and not p.uncertain:
                self.expected_conflicts.append(Expected(p.pid, f.name, winner))
        p.base = merged

    def _resolve_ids(self, crm: dict[str, Any], cb: dict[str, Any]) -> None:
        """A record the sync created is found by the email it must carry."""
        need = [
            p
            for p in self.persons.values()
            if p.status == "linked" and not (p.crm and p.crm.id and p.cb and p.cb.id)
        ]
        if not need:
            return
        crm_by = _by_email({i: crm_values(r) for i, r in crm.items() if not r["Deleted"]})
        cb_by = _by_email({i: cb_values(r) for i, r in cb.items() if not r.get("deleted")})
        for p in need:
            for side, by in ((CRM, crm_by), (CB, cb_by)):
                s = p.side(side)
                assert s is not None
                if s.id:
                    continue
                email = s.values["email"]
                found = by.get(email, [])
                if len(found) == 1:
                    s.id = found[0]
                elif not found:
                    self.report.fail(
                        "lost_edit", f"{p.pid}: no {side} record with {email} after a sync (create lost)"
                    )
                    p.status = "gone"
                # several: counted by the duplicate check

    # -- checks ------------------------------------------------------------------------------
    def check(self, out: RunOutcome, crm: dict[str, Any], cb: dict[str, Any], unlinks: list[Person]) -> None:
        from crmsync.store.schema import audit, link, quarantine
        from sqlalchemy import select

        r = self.report
        rnd = f"round {self.round} run {out.run_id}"
        was_uncertain = {p.pid for p in self.persons.values() if p.uncertain}
        # 1. duplicates by email, per side, among live records
        for side, recs, vals in ((CRM, crm, crm_values), (CB, cb, cb_values)):
            live = {i: vals(x) for i, x in recs.items() if not (x.get("Deleted") or x.get("deleted"))}
            for email, ids in _by_email(live).items():
                if len(ids) > 1 and email not in self._dup_seen:
                    self._dup_seen.add(email)
                    r.fail("duplicate", f"{rnd}: {side} has {len(ids)} live records with {email}: {ids}")
        # 2. values of every person the run synced
        for p in self.persons.values():
            if p.dirty:
                continue  # window still open
            self._check_person(p, crm, cb, rnd)
        # 3. links: unique, and one per linked person
        with self.store.connect() as conn:
            links = conn.execute(select(link.c.crm_id, link.c.cb_id).where(link.c.flow == FLOW)).all()
            audits = conn.execute(
                select(audit.c.kind, audit.c.crm_id, audit.c.cb_id, audit.c.field, audit.c.detail).where(
                    audit.c.flow == FLOW, audit.c.run_id == out.run_id
                )
            ).all()
            held = conn.execute(
                select(
                    quarantine.c.side, quarantine.c.record_id, quarantine.c.reason, quarantine.c.kind
                ).where(quarantine.c.flow == FLOW)
            ).all()
        crm_links = Counter(c for c, _ in links)
        cb_links = Counter(k for _, k in links)
        for ident, n in (crm_links + cb_links).items():
            if n > 1:
                r.fail("link", f"{rnd}: {ident} is in {n} links")
        pairs = set(links)
        for p in self.persons.values():
            synced = p.status == "linked" and not p.dirty and p.crm and p.cb and p.crm.id and p.cb.id
            if synced and (p.crm.id, p.cb.id) not in pairs:  # type: ignore[union-attr]
                r.fail("link", f"{rnd}: {p.pid} ({p.crm.id}, {p.cb.id}) is not linked")
        # 4. conflicts: every one the model expects is audited in this run, with its winner
        audited = {}
        for kind, crm_id, cb_id, fname, detail in audits:
            if kind == "conflict":
                audited[(crm_id, cb_id, fname)] = json.loads(detail).get("winner")
        r.conflicts_audited += len(audited)
        for e in self.expected_conflicts:
            p = self.persons[e.pid]
            assert p.crm and p.cb
            r.conflicts_expected += 1
            hit = [
                w
                for (ci, ki, fn), w in audited.items()
                if fn == e.field and (ci == p.crm.id or ki == p.cb.id)
            ]
            if not hit:
                r.fail(
                    "conflict_not_audited",
                    f"{rnd}: {e.pid} field {e.field} (winner {e.winner}) not in crmsync_audit",
                )
            elif hit[0] != e.winner:
                r.fail(
                    "lost_edit",
                    f"{rnd}: {e.pid} field {e.field}: audited winner {hit[0]}, policy says {e.winner}",
                )
        certain = {
            i: p
            for p in self.persons.values()
            if p.status == "linked" and not p.dirty and p.pid not in was_uncertain
            for i in p.ids()
        }
        wanted = {(e.pid, e.field) for e in self.expected_conflicts}
        for crm_id, cb_id, fname in audited:
            p = certain.get(crm_id) or certain.get(cb_id)  # type: ignore[arg-type]
            if p is not None and fname in BY_NAME and (p.pid, fname) not in wanted:
                r.fail(
                    "unexpected_conflict",
                    f"{rnd}: {p.pid} field {fname} audited as a conflict; the policy sees none",
                )
        for p in unlinks:
            if not any(k == "unlink" and (ci in p.ids() or ki in p.ids()) for k, ci, ki, _, _ in audits):
                r.fail("conflict_not_audited", f"{rnd}: unlink of {p.pid} {sorted(p.ids())} not audited")
        # 5. quarantine: every held record says why
        r.quarantined = len(held)
        r.quarantined_kinds = Counter(kind for *_, kind in held)
        for side, rid, reason, _kind in held:
            if not (reason or "").strip():
                r.fail("quarantine", f"{rnd}: {side} {rid} is held with no reason")

    def _check_person(self, p: Person, crm: dict[str, Any], cb: dict[str, Any], rnd: str) -> None:
        r = self.report
        if p.status == "gone":
            return
        if p.status == "detached":
            # the deleted side stays deleted; the survivor keeps exactly its own values
            dead, alive = (p.crm, p.cb) if p.deleted_side == CRM else (p.cb, p.crm)
            assert dead and alive
            recs_dead = crm if p.deleted_side == CRM else cb
            recs_alive = cb if p.deleted_side == CRM else crm
            if dead.id and dead.id in recs_dead:
                x = recs_dead[dead.id]
                if not (x.get("Deleted") or x.get("deleted")):
                    r.fail(
                        "lost_edit",
                        f"{rnd}: {p.pid}: deleted {p.deleted_side} record {dead.id} is live again",
                    )
            if (
                alive.id not in recs_alive
                or recs_alive[alive.id].get("Deleted")
                or recs_alive[alive.id].get("deleted")
            ):
                r.fail("lost_edit", f"{rnd}: {p.pid}: survivor {alive.id} is gone")
                return
            actual = (cb_values if p.deleted_side == CRM else crm_values)(recs_alive[alive.id])
            dead_values = crm_values if p.deleted_side == CRM else cb_values
            twins = [
                i
                for i, x in recs_dead.items()
                if not (x.get("Deleted") or x.get("deleted")) and dead_values(x)["email"] == actual["email"]
            ]
            if twins and (p.pid, tuple(twins)) not in self._twins_seen:
                self._twins_seen.add((p.pid, tuple(twins)))
                r.fail(
                    "lost_edit",
                    f"{rnd}: {p.pid}: deleted in {p.deleted_side} (policy unlink), re-created there: {twins}",
                )
            if p.uncertain:
                alive.values = actual
            else:
                for name, want in alive.values.items():
                    if actual[name] != want:
                        r.fail(
                            "lost_edit",
                            f"{rnd}: {p.pid} survivor {alive.id} {name}={actual[name]!r}, expected {want!r}",
                        )
                        alive.values[name] = actual[name]
            p.uncertain = False
            p.seen = {}
            p.contested = set()
            return
        if p.status != "linked":
            return
        assert p.crm and p.cb and p.base is not None
        if not (p.crm.id and p.cb.id) or p.crm.id not in crm or p.cb.id not in cb:
            return
        ac, ak = crm_values(crm[p.crm.id]), cb_values(cb[p.cb.id])
        for f in FIELDS:
            n = f.name
            want_c, want_k = p.crm.values[n], p.cb.values[n]
            got_c, got_k = ac[n], ak[n]
            if (got_c, got_k) == (want_c, want_k):
                continue
            if p.uncertain and self._plausible(p, n, got_c, got_k):
                continue
            r.fail(
                "lost_edit",
                f"{rnd}: {p.pid} ({p.crm.id} ⇄ {p.cb.id}) {n}: customcrm={got_c!r} chargebee={got_k!r}, "
                f"expected customcrm={want_c!r} chargebee={want_k!r}"
                + (" (window spanned a failed run)" if p.uncertain else ""),
            )
        # adopt what the systems hold (a failure is reported once, not on every later round)
        p.crm.values, p.cb.values = ac, ak
        p.crm.ts, p.cb.ts = crm_ts(crm[p.crm.id]), cb_ts(cb[p.cb.id])
        p.base = {n: (ac[n] if ac[n] == ak[n] else (ac[n] if ak[n] is None else ak[n])) for n in ac}
        p.uncertain = False
        p.seen = {}
        p.contested = set()

    def _plausible(self, p: Person, name: str, got_c: Any, got_k: Any) -> bool:
        """Weaker invariant for a window that spanned a failed run."""
        assert p.crm and p.cb and p.base is not None
        want_c, want_k = p.crm.values[name], p.cb.values[name]
        if name not in p.contested and want_c == want_k and want_c is not None:
            return False  # a one-sided edit must have arrived, failed runs or not
        seen = p.seen.get(name, set()) | {p.base.get(name), want_c, want_k}
        if got_c == got_k:
            return got_c in seen
        return (got_c is None and got_k in seen) or (got_k is None and got_c in seen)

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

    def all_settled(self) -> bool:
        return not any(p.dirty or p.uncertain or p.status == "new" for p in self.persons.values())


def _by_email(values: dict[str, dict[str, Any]]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for rid, v in sorted(values.items()):
        if v.get("email"):
            out.setdefault(v["email"], []).append(rid)
    return out


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
    world = World(api, store, cfg, report)
    world.adopt_baseline()
    log(f"baseline: {len(world.persons)} linked people")
    rng = random.Random(cfg.seed * 7919)
    for i in range(1, cfg.rounds + 1):
        world.edit_round()
        if world.cb_deletes:
            api.purge_cb()  # the round's Chargebee deletes have happened when the run reads
        kill = i in cfg.kill_rounds
        faults = {"seed": cfg.seed * 1000 + i, **cfg.faults}
        if kill:
            faults["latency_ms"] = max(int(faults.get("latency_ms", 0)), cfg.kill_latency_ms)
        api.set_faults(faults)
        try:
            if kill:
                out = run_with_kill(api, store, f"manual__chaos_{cfg.seed}_{i}", rng, conf, report)
            else:
                fr = run_flow(dag, conf)
                out = run_outcome(store, fr.run_id, fr.summary)
        finally:
            report.faults.update(api.injected())
            api.set_faults(None)
        report.rounds += 1
        world.settle(out)
        log(
            f"round {i}: {'KILL ' if out.killed else ''}finished={out.finished} "
            f"held={len(out.bad_ids)} violations={len(report.violations)}"
        )
    started = time.monotonic()
    for j in range(1, cfg.clean_runs + 1):
        fr = run_flow(dag, conf)
        world.settle(run_outcome(store, fr.run_id, fr.summary))
        report.converge_runs = j
        if world.all_settled():
            report.converge_seconds = time.monotonic() - started
            break
    unsettled = [p for p in world.persons.values() if p.dirty or p.uncertain or p.status == "new"]
    for p in unsettled[:5]:
        report.fail("lost_edit", f"not converged after {cfg.clean_runs} clean runs: {world.explain(p)}")
    before = api.writes(CRM) + api.writes(CB)
    run_flow(dag, conf)
    report.idle_writes = api.writes(CRM) + api.writes(CB) - before
    report.seen_429 = api.status_count("429")
    return report


def table(reports: Iterable[Report]) -> str:
    """One table, one row per flow and seed."""
    cols = [
        ("flow", lambda r: r.flow),
        ("seed", lambda r: r.seed),
        ("rounds", lambda r: r.rounds),
        ("edits", lambda r: sum(r.edits.values())),
        ("faults: 5xx", lambda r: r.faults.get("error", 0)),
        ("429", lambda r: r.faults.get("rate_429", 0)),
        ("drop", lambda r: r.faults.get("drop", 0)),
        ("lost resp", lambda r: r.faults.get("lost_response", 0)),
        ("kills", lambda r: f"{r.kills}/{r.kill_attempts}"),
        ("duplicates", lambda r: r.duplicates),
        ("lost edits", lambda r: r.lost_edits),
        ("quarantined", lambda r: r.quarantined),
        ("conflicts", lambda r: f"{r.conflicts_expected - r.conflicts_missing}/{r.conflicts_expected}"),
        ("429s seen", lambda r: r.seen_429),
        (
            "converge",
            lambda r: (
                "no" if r.converge_seconds is None else f"{r.converge_seconds:.1f}s/{r.converge_runs}run"
            ),
        ),
        ("idle writes", lambda r: r.idle_writes),
    ]
    rows = [[str(get(r)) for _, get in cols] for r in reports]
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, (h, _) in enumerate(cols)]
    line = " | ".join(h.rjust(w) for (h, _), w in zip(cols, widths, strict=True))
    sep = "-+-".join("-" * w for w in widths)
    body = [" | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join([line, sep, *body])
