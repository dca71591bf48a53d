"""The expected-state model both chaos harnesses use (``harness.py``: contact_customer,
``flows.py``: every other flow), computed from the mappings' documented policies only.

What is shared lives here once: a record pair and its open *window* (edits since the
last sync point), the three-way merges a mapping's policies define, the weaker
invariant for a window that spanned an unsynced run, the checks against the link store
(links, audited conflicts and unlinks, held records), how a run is judged
(:func:`run_outcome`), the SIGKILL of a task in a subprocess, and the experiment's
loop (faulty rounds, clean runs until converged, an idle run). Each harness keeps only
its flow's specifics: how people edit records, how created records are found, and the
flow-only checks.
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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests
import yaml

ROOT = Path(__file__).resolve().parents[2]
CRM, CB = "customcrm", "chargebee"
SIDES = (CRM, CB)

MAPPINGS = ROOT / "include" / "mappings"


# -- raw records ---------------------------------------------------------------------------------


def _path(raw: dict[str, Any], path: str) -> Any:
    """A dotted path (``billing_address.city``) in a raw record, None where absent."""
    cur: Any = raw
    for part in path.split("."):
        if not isinstance(cur, dict):
            return None
        cur = cur.get(part)
    return cur


def ts_of(side: str, rec: dict[str, Any]) -> float:
    """A record's ``updated_at`` as its own system reports it (the conflict rule's clock)."""
    if side == CRM:
        return datetime.fromisoformat(str(rec["UpdatedAt"]).replace("Z", "+00:00")).timestamp()
    return float(rec.get("updated_at") or 0)


def is_live(rec: dict[str, Any]) -> bool:
    return not (rec.get("Deleted") or rec.get("deleted") or rec.get("status") == "deleted")


def other_side(side: str) -> str:
    return CB if side == CRM else CRM


# -- the mapping, read independently of the package ----------------------------------------


@dataclass(frozen=True)
class MField:
    name: str
    crm: str
    cb: str  # dotted path, e.g. billing_address.city
    transform: str
    direction: str  # both | to_customcrm | to_chargebee
    values: tuple[tuple[str, str], ...]  # canonical → Chargebee raw
    read_only_edits: str  # restore | keep (one-way fields)

    def source(self) -> str | None:
        return {"to_customcrm": CB, "to_chargebee": CRM}.get(self.direction)


@dataclass(frozen=True)
class Mapping:
    flow: str
    path: Path
    fields: tuple[MField, ...]
    policy: str
    tie: str
    on_delete: dict[str, str]
    can_create: dict[str, bool]  # side → the sync may create records there
    match_key: str
    one_to_many: bool
    create_id: str | None
    create_disabled_reason: str | None = None

    def f(self, name: str) -> MField:
        return next(x for x in self.fields if x.name == name)


def _key(v: Any) -> str:
    return str(v).lower() if isinstance(v, bool) else str(v)


def load_mapping(flow: str, path: Path | None = None, *, two_way_only: bool = False) -> Mapping:
    """The model's view of a mapping file (default: the shipped one of ``flow``);
    references (``ref:``, ids translated through another flow's links) are left out, and
    with ``two_way_only`` the one-way fields too."""
    path = path or MAPPINGS / f"{flow}.yaml"
    doc = yaml.safe_load(path.read_text())
    ro = doc.get("read_only_edits", "restore")
    fields = tuple(
        MField(
            f["name"],
            f["customcrm"],
            f["chargebee"],
            f.get("transform", "strip"),
            f.get("direction", "both"),
            tuple((_key(k), v) for k, v in (f.get("values") or {}).items()),
            f.get("read_only_edits", ro),
        )
        for f in doc["fields"]
        if not f.get("ref") and not (two_way_only and f.get("direction", "both") != "both")
    )
    conflict = doc.get("conflict") or {}
    delete = doc.get("delete") or {}
    return Mapping(
        flow,
        path,
        fields,
        conflict.get("policy", "newest_wins"),
        conflict.get("tie_breaker", CRM),
        {CRM: delete.get("on_customcrm_delete", "unlink"), CB: delete.get("on_chargebee_delete", "unlink")},
        # the sync creates on a side when that side's block does not say create: false
        {CRM: doc["customcrm"].get("create", True), CB: doc["chargebee"].get("create", True)},
        doc["match"]["keys"][0],
        doc.get("cardinality") == "one_to_many",
        doc["chargebee"].get("create_id"),
        doc["chargebee"].get("create_disabled_reason"),
    )


def canon_text(transform: str, value: Any) -> Any:
    """A text value in the canonical form both sides are compared in: NFC, trimmed,
    '' → None, email/lower lower-cased, country/upper upper-cased."""
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


def canon(f: MField, value: Any, side: str) -> Any:
    """A raw value of either side in the form both are compared in."""
    if value is None or value == "":
        return None
    if f.values and side == CB:
        back = {raw: k for k, raw in f.values}
        return back.get(str(value), f"?{value}")
    t = f.transform
    if t == "bool" or isinstance(value, bool):
        return "true" if value in (True, "true", "True", 1) else "false"
    if t == "int":
        return int(value)
    if t == "json":
        obj = json.loads(value) if isinstance(value, str) else value
        return json.dumps(obj, sort_keys=True) if obj else None
    if t == "date":
        if isinstance(value, int | float):
            return datetime.fromtimestamp(value, UTC).date().isoformat()
        return str(value)[:10]
    if t == "datetime":
        if isinstance(value, int | float):
            return int(value)
        return int(datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp())
    return canon_text(t, value)


def values_of(m: Mapping, side: str, rec: dict[str, Any]) -> dict[str, Any]:
    if side == CRM:
        return {f.name: canon(f, rec.get(f.crm), CRM) for f in m.fields}
    return {f.name: canon(f, _path(rec, f.cb), CB) for f in m.fields}


# -- the model -----------------------------------------------------------------------------------


@dataclass
class Rec:
    """One side's record as the model expects it."""

    side: str
    id: str | None
    values: dict[str, Any]
    ts: float = 0.0  # updated_at of the record as its system reported it at the last edit
    deleted: bool = False


@dataclass
class Pair:
    """Two records the sync must keep as one (a person, a product, an order, ...)."""

    pid: str
    crm: Rec | None
    cb: Rec | None
    #: new | linked | detached | gone | lonely (never to be created/linked) | waiting (a
    #: Customcrm order whose invoice has no order yet: held, linked once it is generated)
    status: str
    base: dict[str, Any] | None = None
    dirty: bool = False  # edited since its last sync point
    uncertain: bool = False  # the open window spans a run that did not sync this pair
    seen: dict[str, set[Any]] = field(default_factory=dict)  # every value of the open window
    contested: set[str] = field(default_factory=set)  # fields changed on both sides in the window
    deleted_side: str | None = None  # detached: which side deleted
    invoice: str | None = None  # waiting: the invoice whose order it waits for
    held_for: str | None = None  # waiting or lonely: a field its hold must name
    born: int = 0  # the round it was made in

    def rec(self, side: str) -> Rec | None:
        return self.crm if side == CRM else self.cb

    def ids(self) -> set[str]:
        return {r.id for r in (self.crm, self.cb) if r is not None and r.id}

    def note(self, name: str, value: Any) -> None:
        self.seen.setdefault(name, set()).add(value)

    def adopt(
        self, ac: dict[str, Any], ak: dict[str, Any], ts: tuple[float, float], base: dict[str, Any]
    ) -> None:
        """Take what the systems hold after a check (a failure is reported once, not on
        every later round) and close the window."""
        assert self.crm and self.cb
        self.crm.values, self.cb.values = ac, ak
        self.crm.ts, self.cb.ts = ts
        self.base = base
        self.close_window()

    def close_window(self) -> None:
        self.uncertain = False
        self.seen, self.contested = {}, set()


@dataclass(frozen=True)
class Expected:
    """A conflict the model expects the engine to audit in a given run."""

    pid: str
    field: str
    winner: str


def merge_two_way(
    policy: str, tie: str, b: Any, c: Any, k: Any, c_ts: float, k_ts: float
) -> tuple[Any, Any, Any, str | None]:
    """One two-way field by the mapping's policy: (merged, crm after, cb after, conflict winner)."""
    if c == k:
        return c, c, k, None
    c_changed, k_changed = c != b, k != b
    conflict = c_changed and k_changed
    if c_changed and not k_changed:
        winner = CRM
    elif k_changed and not c_changed:
        winner = CB
    elif policy == "customcrm_wins":  # a clear against an edit is a conflict like any other
        winner = CRM
    elif policy == "chargebee_wins":
        winner = CB
    elif c_ts != k_ts:
        winner = CRM if c_ts > k_ts else CB
    else:
        winner = tie
    value, other = (c, k) if winner == CRM else (k, c)
    if value is None and b is None:  # a blank never synced never overwrites
        return other, c, k, (winner if conflict else None)
    return value, value, value, (winner if conflict else None)


def merge_one_way(
    policy: str, tie: str, ro: str, src: str, b: Any, c: Any, k: Any, c_ts: float, k_ts: float
) -> tuple[Any, Any, Any, str | None]:
    """A one-way field (``src`` is its source side): the other side's edit is written back
    (``restore``) or kept (``keep``); a source edit reaches the other side unless it is a
    blank; both edited is a conflict, audited, decided as for a two-way field, and a win
    of the other side still yields to ``restore``."""
    if c == k:
        return c, c, k, None
    sv, ov = (k, c) if src == CB else (c, k)
    s_changed, o_changed = sv != b, ov != b
    conflict = s_changed and o_changed
    if s_changed and not o_changed:
        winner = src
    elif o_changed and not s_changed:
        winner = other_side(src)
    else:
        winner = merge_two_way(policy, tie, b, c, k, c_ts, k_ts)[3] or src
    if winner == src and sv is None and b is None:
        new_other, merged = ov, ov  # a blank source never synced fills nothing
    elif winner == src:
        new_other, merged = sv, sv  # a source edit flows, a clear of an agreed value too
    elif ro == "restore" and (sv is not None or b is not None):
        new_other, merged = sv, sv
    else:
        # keep (or a blank source never synced): the other side's edit stays, reported;
        # what the sides agree on stays the source's value
        new_other, merged = ov, sv
    c2, k2 = (new_other, sv) if src == CB else (sv, new_other)
    return merged, c2, k2, (winner if conflict else None)


def agreed_two_way(c: Any, k: Any) -> Any:
    """What both sides agree on for a two-way field: the value, or the one non-blank."""
    return c if c == k else (c if k is None else k)


def plausible(p: Pair, name: str, got_c: Any, got_k: Any) -> bool:
    """The weaker invariant for a window that spanned an unsynced run: a one-sided edit
    must have arrived; a contested field agrees on (or fills from) a value of the window."""
    assert p.crm and p.cb and p.base is not None
    want_c, want_k = p.crm.values[name], p.cb.values[name]
    if name not in p.contested and want_c == want_k and want_c is not None:
        return False  # a one-sided edit must have arrived, failed runs or not
    seen = p.seen.get(name, set()) | {p.base.get(name), want_c, want_k}
    if got_c == got_k:
        return got_c in seen
    return (got_c is None and got_k in seen) or (got_k is None and got_c in seen)


def settle_deleted(p: Pair, unlinks: list[Pair]) -> None:
    """``delete: unlink``: a pair with a deleted record is detached (both deleted: gone);
    a certain unlink must be audited in this run."""
    both = bool(p.crm and p.crm.deleted and p.cb and p.cb.deleted)
    p.status = "gone" if both else "detached"
    p.deleted_side = CRM if p.crm and p.crm.deleted else CB
    if not p.uncertain:
        unlinks.append(p)


def needs_settling(p: Pair, out: RunOutcome) -> bool:
    """Whether the run is a sync point for ``p``; marks its window uncertain when the run
    touched it without syncing it."""
    if not (p.dirty or p.status == "new"):
        return False
    if not out.finished or p.ids() & out.bad_ids:
        p.uncertain = True
        return False
    return True


# -- sandbox access (faults are off whenever the harness itself calls an API) -----------------


class Sandboxes:
    """The sandboxes' fault switches and counters (admin endpoints: never faulted, never counted)."""

    def __init__(self, sb: Any) -> None:
        self.sb = sb  # tests.e2e.conftest.Sandboxes

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


# -- report ------------------------------------------------------------------------------------


@dataclass
class Report:
    seed: int
    flow: str = "contact_customer"
    rounds: int = 0
    edits: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    kills: int = 0
    kill_attempts: int = 0
    conflicts_expected: int = 0
    conflicts_audited: int = 0
    quarantined: int = 0
    quarantined_kinds: Counter[str] = field(default_factory=Counter)
    seen_429: int = 0
    runs: int = 0
    runs_not_synced: int = 0
    converge_seconds: float | None = None
    converge_runs: int = 0
    idle_writes: int | None = None
    violations: list[str] = field(default_factory=list)
    #: violations per kind ("duplicate", "lost_edit", "conflict_not_audited", "link", "quarantine", ...)
    violated: Counter[str] = field(default_factory=Counter)

    def fail(self, kind: str, message: str) -> None:
        self.violations.append(f"[{kind}] {message}")
        self.violated[kind] += 1


def table(reports: Iterable[Report]) -> str:
    """One table, one row per flow and seed."""
    cols: list[tuple[str, Callable[[Report], Any]]] = [
        ("flow", lambda r: r.flow),
        ("seed", lambda r: r.seed),
        ("rounds", lambda r: r.rounds),
        ("edits", lambda r: sum(r.edits.values())),
        ("faults: 5xx", lambda r: r.faults.get("error", 0)),
        ("429", lambda r: r.faults.get("rate_429", 0)),
        ("drop", lambda r: r.faults.get("drop", 0)),
        ("lost resp", lambda r: r.faults.get("lost_response", 0)),
        ("kills", lambda r: f"{r.kills}/{r.kill_attempts}"),
        ("duplicates", lambda r: r.violated["duplicate"]),
        ("lost edits", lambda r: r.violated["lost_edit"]),
        ("quarantined", lambda r: r.quarantined),
        (
            "conflicts",
            lambda r: f"{r.conflicts_expected - r.violated['conflict_not_audited']}/{r.conflicts_expected}",
        ),
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


def assert_converged(report: Report, min_edits: int) -> None:
    """What every chaos experiment must show: no violation, a chaotic run (edits, faults,
    one kill attempt), convergence, and an idle run after it that writes nothing."""
    assert report.violations == [], "\n".join(report.violations)
    assert sum(report.edits.values()) >= min_edits
    assert sum(report.faults.values()) > 0, report.faults
    assert report.kill_attempts == 1
    assert report.converge_seconds is not None
    assert report.idle_writes == 0, "after convergence, a run with no edits must write nothing"


# -- runs --------------------------------------------------------------------------------------


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


@dataclass
class RunOutcome:
    run_id: str
    finished: bool  # the run's update_links completed (crmsync_run.status == finished)
    bad_ids: set[str]  # record ids with a failed/stale/held/unfinished write or hold in this run
    summary: dict[str, Any] | None
    killed: bool = False


def run_outcome(
    store: Any,
    run_id: str,
    summary: dict[str, Any] | None,
    killed: bool = False,
    flow: str = "contact_customer",
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


def step(mapping_file: Path, name: str, run_id: str, side: str | None, params: dict[str, Any]) -> None:
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


#: how a kill round picks its victim: (side, writes after which it is killed), or None to
#: kill update_links instead (a flow whose writes are the link store's)
PickVictim = Callable[[str], tuple[str, int] | None]


def run_with_kill(
    api: Sandboxes,
    store: Any,
    m: Mapping,
    run_id: str,
    rng: random.Random,
    params: dict[str, Any],
    report: Report,
    pick: PickVictim,
) -> RunOutcome:
    """The task callables in DAG order; one upsert is SIGKILLed in a subprocess after a
    number of its writes, then rerun in this process (what Airflow's task retry does)."""
    from scripts.runner import read_summary

    killed = False
    try:
        step(m.path, "extract", run_id, CRM, params)
        step(m.path, "extract", run_id, CB, params)
        step(m.path, "transform", run_id, None, params)
        ok = True
    except Exception:  # a failed task: its downstream tasks are upstream_failed, update_links runs
        ok = False
    victim = pick(run_id) if ok else None
    if victim is not None:
        killed = _kill_upsert(api, m, run_id, params, report, *victim)
    elif ok:
        killed = _kill_update_links(api, m, run_id, rng, params, report)
    with contextlib.suppress(Exception):
        step(m.path, "update_links", run_id, None, params)
    return run_outcome(store, run_id, read_summary(run_id, m.flow), killed, flow=m.flow)


def _kill_upsert(
    api: Sandboxes, m: Mapping, run_id: str, params: dict[str, Any], report: Report, victim: str, after: int
) -> bool:
    start = api.writes(victim)
    report.kill_attempts += 1
    killed = kill_task(
        f"run_step('upsert', {str(m.path)!r}, side={victim!r}, run_id={run_id!r}, params={params!r})",
        lambda _seconds: api.writes(victim) - start >= after,
    )
    report.kills += killed
    for side in (victim, other_side(victim)):
        # the retry of the victim, then the other side; a failure (error budget) is
        # a failed task, and update_links still runs (trigger rule all_done)
        with contextlib.suppress(Exception):
            step(m.path, "upsert", run_id, side, params)
    return killed


def _kill_update_links(
    api: Sandboxes, m: Mapping, run_id: str, rng: random.Random, params: dict[str, Any], report: Report
) -> bool:
    """A flow that writes nothing through the APIs (user_order): its writes are the link
    store's, so update_links is killed, a random moment after it started work."""
    for side in SIDES:
        with contextlib.suppress(Exception):
            step(m.path, "upsert", run_id, side, params)
    report.kill_attempts += 1
    delay = rng.uniform(0.0, 0.25)
    killed = kill_task(
        f"run_step('update_links', {str(m.path)!r}, run_id={run_id!r}, params={params!r})",
        lambda seconds: seconds >= delay,
    )
    report.kills += killed
    return killed


# -- the world: model transitions at a run, checks -------------------------------------------


@dataclass(frozen=True)
class RunView:
    """What the checks after a run read: its outcome, both sides' records, the held
    records and the linked ids."""

    out: RunOutcome
    rnd: str  # "round N run ID", the prefix of every violation of this check
    crm: dict[str, Any]
    cb: dict[str, Any]
    held: list[Any]
    linked: set[str]


class World:
    """The expected state of one flow's pairs and the checks after each run. A harness
    subclasses it with its flow's edits and three hooks: how a new pair settles
    (:meth:`_settle_new`), how records the sync created are found (:meth:`_resolve_ids`)
    and how all records of a side are read (:meth:`read_all`)."""

    #: a conflict audit row matches a pair by either id (contact_customer: a pair created
    #: on both sides in one window) rather than by both
    match_either = False
    #: the match key is unique among live Chargebee records
    cb_key_unique = True

    def __init__(
        self, api: Sandboxes, store: Any, cfg: Config, report: Report, m: Mapping, rng: random.Random
    ) -> None:
        self.api, self.store, self.cfg, self.report, self.m, self.rng = api, store, cfg, report, m, rng
        self.pairs: dict[str, Pair] = {}
        self.expected_conflicts: list[Expected] = []
        self.history: list[str] = []  # every edit made, for failure messages
        self.round = 0
        self._n = 0
        self._reported: set[str] = set()
        self.held_reasons: Counter[str] = Counter()
        self.prefix = ""  # before every violation: the flow, where a report mixes flows

    # -- hooks ------------------------------------------------------------------------------
    def edit_round(self) -> None:
        """One round of people's seeded edits through the sandboxes' APIs (faults off)."""
        raise NotImplementedError

    def _edit(self, kind: str) -> bool:
        """One edit of ``kind``; False when no record fits it this round."""
        raise NotImplementedError

    def make_edits(self, weights: dict[str, float]) -> None:
        """The round's ``cfg.edits_per_round`` edits, each of a kind drawn by ``weights``."""
        kinds = list(weights)
        for _ in range(self.cfg.edits_per_round):
            kind = self.rng.choices(kinds, [weights[k] for k in kinds])[0]
            try:
                done = self._edit(kind)
            except Exception as exc:
                raise RuntimeError(
                    f"{self.prefix}edit {kind} failed; last edits:\n" + "\n".join(self.history[-15:])
                ) from exc
            if done:
                self.report.edits[kind] += 1

    def before_run(self) -> None:
        """What must have happened when the round's run reads (e.g. a scheduled purge)."""

    def read_all(self) -> tuple[dict[str, Any], dict[str, Any]]:
        raise NotImplementedError

    def _settle_new(self, p: Pair) -> None:
        raise NotImplementedError

    def _resolve_ids(self, crm: dict[str, Any], cb: dict[str, Any]) -> None:
        raise NotImplementedError

    def _check_more(self, view: RunView) -> None:
        """The flow's own checks after the shared ones."""

    def _trailer(self, p: Pair) -> str:
        """What a lost-edit message adds about the pair (its edits)."""
        return ""

    def explain(self, p: Pair) -> str:
        return f"{p.pid} status={p.status} ids={sorted(p.ids())} uncertain={p.uncertain}\n  " + "\n  ".join(
            h for h in self.history if f" {p.pid} " in h
        )

    # -- shared -----------------------------------------------------------------------------
    def fail(self, kind: str, msg: str, once: str | None = None) -> None:
        if once is not None:
            if once in self._reported:
                return
            self._reported.add(once)
        self.report.fail(kind, f"{self.prefix}{msg}")

    def _agreed(self, c: dict[str, Any], k: dict[str, Any]) -> dict[str, Any]:
        """What both sides agree on: a two-way field's non-blank value, a one-way field's
        source value (a kept value on the other side is a difference, not agreed)."""
        out = {}
        for n in c:
            src = self.m.f(n).source()
            out[n] = agreed_two_way(c[n], k[n]) if src is None else (k[n] if src == CB else c[n])
        return out

    def unsettled(self) -> list[Pair]:
        return [p for p in self.pairs.values() if p.dirty or p.uncertain or p.status == "new"]

    def all_settled(self) -> bool:
        return not self.unsettled()

    def settle(self, out: RunOutcome) -> None:
        """Apply the policies to every pair the run synced; keep the others' windows open."""
        self.report.runs += 1
        if not out.finished:
            self.report.runs_not_synced += 1
        self.expected_conflicts = []
        unlinks: list[Pair] = []
        for p in self.pairs.values():
            if p.status in ("gone", "lonely", "detached", "waiting"):
                p.dirty = False  # not synced any more (or not yet): nothing to wait for
                continue
            if not needs_settling(p, out):
                continue
            if p.status == "new":
                self._settle_new(p)
            elif (p.crm and p.crm.deleted) or (p.cb and p.cb.deleted):
                settle_deleted(p, unlinks)
            else:
                self._merge(p)
            p.dirty = False
        crm, cb = self.read_all()
        self._resolve_ids(crm, cb)
        self.check(out, crm, cb, unlinks)

    def _merge(self, p: Pair) -> None:
        assert p.crm and p.cb and p.base is not None
        merged: dict[str, Any] = {}
        m = self.m
        for f in m.fields:
            n = f.name
            b, c, k = p.base.get(n), p.crm.values[n], p.cb.values[n]
            src = f.source()
            if src is None:
                if c != k and c != b and k != b:
                    p.contested.add(n)
                out = merge_two_way(m.policy, m.tie, b, c, k, p.crm.ts, p.cb.ts)
            else:
                out = merge_one_way(m.policy, m.tie, f.read_only_edits, src, b, c, k, p.crm.ts, p.cb.ts)
            merged[n], p.crm.values[n], p.cb.values[n], winner = out
            if winner and not p.uncertain:
                self.expected_conflicts.append(Expected(p.pid, n, winner))
        p.base = merged

    # -- checks -----------------------------------------------------------------------------
    def check(self, out: RunOutcome, crm: dict[str, Any], cb: dict[str, Any], unlinks: list[Pair]) -> None:
        rnd = f"round {self.round} run {out.run_id}"
        was_uncertain = {p.pid for p in self.pairs.values() if p.uncertain}
        self._check_duplicates(rnd, crm, cb)  # 1. one live record per match key and side
        for p in self.pairs.values():  # 2. values of every pair the run synced
            if not p.dirty:
                self._check_pair(p, crm, cb, rnd)
        links, audits, held = read_store(self.store, self.m.flow, out.run_id)
        linked = self._check_links(rnd, links)  # 3. links
        self._check_conflicts(rnd, audits, was_uncertain)  # 4. conflicts and unlinks audited
        for p in unlinks:
            if not any(k == "unlink" and (ci in p.ids() or ki in p.ids()) for k, ci, ki, _, _ in audits):
                self.fail("conflict_not_audited", f"{rnd}: unlink of {p.pid} {sorted(p.ids())} not audited")
        self._check_held(rnd, held)  # 5. every held record says why
        self._check_more(RunView(out, rnd, crm, cb, held, linked))

    def _check_duplicates(self, rnd: str, crm: dict[str, Any], cb: dict[str, Any]) -> None:
        m = self.m
        for side, recs in ((CRM, crm), (CB, cb)):
            if side == CB and not self.cb_key_unique:
                continue
            by: dict[Any, list[str]] = {}
            for i, x in sorted(recs.items()):
                v = values_of(m, side, x)[m.match_key]
                if is_live(x) and v is not None:
                    by.setdefault(v, []).append(i)
            for v, ids in by.items():
                if len(ids) > 1:
                    self.fail(
                        "duplicate",
                        f"{rnd}: {side} has {len(ids)} live records with {m.match_key}={v!r}: {ids}",
                        once=f"dup {side} {v}",
                    )

    def _check_links(self, rnd: str, links: list[tuple[str, str]]) -> set[str]:
        """No record in two links (Customcrm side exempt where one-to-many); every settled
        linked pair linked, no detached/gone pair still linked, no lonely record linked."""
        counts = Counter(k for _, k in links)
        if not self.m.one_to_many:
            counts += Counter(c for c, _ in links)
        for ident, n in counts.items():
            if n > 1:
                self.fail("link", f"{rnd}: {ident} is in {n} links", once=f"link {ident}")
        pairs = set(links)
        linked_ids = {x for pair in links for x in pair}
        for p in self.pairs.values():
            pair_ids = (p.crm.id if p.crm else None, p.cb.id if p.cb else None)
            if p.status == "linked" and not p.dirty and all(pair_ids) and pair_ids not in pairs:
                self.fail("link", f"{rnd}: {p.pid} {pair_ids} is not linked")
            if p.status in ("detached", "gone") and not p.dirty and all(pair_ids) and pair_ids in pairs:
                self.fail(
                    "link",
                    f"{rnd}: {p.pid} deleted on {p.deleted_side} but still linked",
                    once=f"unl {p.pid}",
                )
            if p.status == "lonely" and p.ids() & linked_ids:
                self.fail(
                    "link",
                    f"{rnd}: {p.pid} {sorted(p.ids())} names nothing yet is linked",
                    once=f"lonely {p.pid}",
                )
        return linked_ids

    def _audited_for(self, p: Pair, ci: Any, ki: Any) -> bool:
        assert p.crm and p.cb
        if self.match_either:
            return bool(ci == p.crm.id or ki == p.cb.id)
        return bool(ci == p.crm.id and ki == p.cb.id)

    def _check_conflicts(self, rnd: str, audits: list[Any], was_uncertain: set[str]) -> None:
        """Every conflict the model expects is audited in this run with the policy's winner;
        none is audited for a certain pair where the policy sees none."""
        r = self.report
        audited: dict[tuple[Any, Any, Any], Any] = {}
        for kind, crm_id, cb_id, fname, detail in audits:
            if kind == "conflict":
                audited[(crm_id, cb_id, fname)] = json.loads(detail).get("winner")
        r.conflicts_audited += len(audited)
        for e in self.expected_conflicts:
            p = self.pairs[e.pid]
            r.conflicts_expected += 1
            hit = [w for (ci, ki, fn), w in audited.items() if fn == e.field and self._audited_for(p, ci, ki)]
            if not hit:
                self.fail(
                    "conflict_not_audited",
                    f"{rnd}: {e.pid} field {e.field} (winner {e.winner}) not in crmsync_audit",
                )
            elif hit[0] != e.winner:
                self.fail(
                    "lost_edit",
                    f"{rnd}: {e.pid} field {e.field}: audited winner {hit[0]}, policy says {e.winner}",
                )
        wanted = {(e.pid, e.field) for e in self.expected_conflicts}
        certain = [
            p
            for p in self.pairs.values()
            if p.status == "linked" and not p.dirty and p.pid not in was_uncertain and p.crm and p.cb
        ]
        names = {f.name for f in self.m.fields}
        for ci, ki, fname in audited:
            q = next((p for p in certain if self._audited_for(p, ci, ki)), None)
            if q is not None and fname in names and (q.pid, fname) not in wanted:
                self.fail(
                    "unexpected_conflict",
                    f"{rnd}: {q.pid} field {fname} audited as a conflict; the policy sees none",
                )

    def _check_held(self, rnd: str, held: list[Any]) -> None:
        r = self.report
        r.quarantined = len(held)
        self.held_reasons = Counter(f"{kind}: {(reason or '')[:90]}" for *_, reason, kind in held)
        r.quarantined_kinds = Counter(kind for *_, kind in held)
        for side, rid, reason, _kind in held:
            if not (reason or "").strip():
                self.fail("quarantine", f"{rnd}: {side} {rid} is held with no reason")

    def _check_pair(self, p: Pair, crm: dict[str, Any], cb: dict[str, Any], rnd: str) -> None:
        if p.status == "detached":
            self._check_detached(p, crm, cb, rnd)
            return
        if p.status != "linked":
            return
        assert p.crm and p.cb and p.base is not None
        if not (p.crm.id and p.cb.id) or p.crm.id not in crm or p.cb.id not in cb:
            return
        ac, ak = values_of(self.m, CRM, crm[p.crm.id]), values_of(self.m, CB, cb[p.cb.id])
        for f in self.m.fields:
            n = f.name
            want_c, want_k = p.crm.values[n], p.cb.values[n]
            got_c, got_k = ac[n], ak[n]
            if (got_c, got_k) == (want_c, want_k):
                continue
            if p.uncertain and plausible(p, n, got_c, got_k):
                continue
            self.fail(
                "lost_edit",
                f"{rnd}: {p.pid} ({p.crm.id} ⇄ {p.cb.id}) {n}: customcrm={got_c!r} chargebee={got_k!r}, "
                f"expected customcrm={want_c!r} chargebee={want_k!r}"
                + (" (window spanned a failed run)" if p.uncertain else "")
                + self._trailer(p),
            )
        # adopt what the systems hold (a failure is reported once, not on every later round)
        p.adopt(ac, ak, (ts_of(CRM, crm[p.crm.id]), ts_of(CB, cb[p.cb.id])), self._agreed(ac, ak))

    def _check_detached(self, p: Pair, crm: dict[str, Any], cb: dict[str, Any], rnd: str) -> None:
        """``unlink``: the deleted side stays deleted, nothing is re-created there, the
        survivor keeps exactly its own values."""
        m = self.m
        dead_side = p.deleted_side or CRM
        alive_side = other_side(dead_side)
        dead, alive = p.rec(dead_side), p.rec(alive_side)
        assert dead and alive
        recs_dead, recs_alive = (crm, cb) if dead_side == CRM else (cb, crm)
        if dead.id and dead.id in recs_dead and is_live(recs_dead[dead.id]):
            self.fail(
                "lost_edit",
                f"{rnd}: {p.pid}: deleted {dead_side} record {dead.id} is live again",
                once=f"live {p.pid}",
            )
        if alive.id not in recs_alive:
            self.fail("lost_edit", f"{rnd}: {p.pid}: survivor {alive.id} is gone", once=f"gone {p.pid}")
            return
        actual = values_of(m, alive_side, recs_alive[alive.id])
        if not is_live(recs_alive[alive.id]):
            if not alive.deleted:
                self.fail(
                    "lost_edit", f"{rnd}: {p.pid}: survivor {alive.id} was deleted", once=f"gone {p.pid}"
                )
            return
        key = actual[m.match_key]
        twins = [
            i
            for i, x in recs_dead.items()
            if i != dead.id
            and is_live(x)
            and key is not None
            and values_of(m, dead_side, x)[m.match_key] == key
        ]
        if twins and (dead_side == CRM or self.cb_key_unique) and not m.one_to_many:
            self.fail(
                "lost_edit",
                f"{rnd}: {p.pid}: deleted in {dead_side} (policy unlink), re-created there: {twins}",
                once=f"tw {p.pid}",
            )
        if not p.uncertain:
            for n, want in alive.values.items():
                if actual[n] != want:
                    self.fail(
                        "lost_edit",
                        f"{rnd}: {p.pid} survivor {alive.id} {n}={actual[n]!r}, expected {want!r}",
                    )
        alive.values = actual
        p.close_window()


def read_store(store: Any, flow: str, run_id: str) -> tuple[list[tuple[str, str]], list[Any], list[Any]]:
    """The flow's links, this run's audit rows and the flow's held records."""
    from crmsync.store.schema import audit, link, quarantine
    from sqlalchemy import select

    with store.connect() as conn:
        links = conn.execute(select(link.c.crm_id, link.c.cb_id).where(link.c.flow == flow)).all()
        audits = conn.execute(
            select(audit.c.kind, audit.c.crm_id, audit.c.cb_id, audit.c.field, audit.c.detail).where(
                audit.c.flow == flow, audit.c.run_id == run_id
            )
        ).all()
        held = conn.execute(
            select(quarantine.c.side, quarantine.c.record_id, quarantine.c.reason, quarantine.c.kind).where(
                quarantine.c.flow == flow
            )
        ).all()
    return [(c, k) for c, k in links], list(audits), list(held)


# -- the whole experiment ----------------------------------------------------------------------


def run_dag(store: Any, dag: Any, conf: dict[str, Any], flow: str) -> RunOutcome:
    """One whole DAG run, as the scheduler runs it, judged by :func:`run_outcome`."""
    from scripts.runner import run_flow

    fr = run_flow(dag, conf)
    return run_outcome(store, fr.run_id, fr.summary, flow=flow)


def experiment(
    world: World,
    dag: Any,
    conf: dict[str, Any],
    rng: random.Random,
    pick: PickVictim,
    *,
    extra_faults: dict[str, Any] | None = None,
    label: str = "",
    log: Callable[[str], None] = lambda s: None,
) -> None:
    """``cfg.rounds`` faulty rounds (one of them with a SIGKILL), clean runs until
    converged, then an idle run that must write nothing."""
    api, cfg, report, flow = world.api, world.cfg, world.report, world.m.flow
    for i in range(1, cfg.rounds + 1):
        world.edit_round()
        world.before_run()
        kill = i in cfg.kill_rounds
        faults = {"seed": cfg.seed * 1000 + i, **cfg.faults, **(extra_faults or {})}
        if kill:
            faults["latency_ms"] = max(int(faults.get("latency_ms", 0)), cfg.kill_latency_ms)
        api.set_faults(faults)
        try:
            if kill:
                run_id = f"manual__chaos_{label.replace(' ', '_')}{cfg.seed}_{i}"
                out = run_with_kill(api, world.store, world.m, run_id, rng, conf, report, pick)
            else:
                out = run_dag(world.store, dag, conf, flow)
        finally:
            report.faults.update(api.injected())
            api.set_faults(None)
        report.rounds += 1
        world.settle(out)
        log(
            f"{label}round {i}: {'KILL ' if out.killed else ''}finished={out.finished} "
            f"held={len(out.bad_ids)} violations={len(report.violations)}"
        )
    _converge(world, dag, conf)


def _converge(world: World, dag: Any, conf: dict[str, Any]) -> None:
    from scripts.runner import run_flow

    cfg, report = world.cfg, world.report
    started = time.monotonic()
    for j in range(1, cfg.clean_runs + 1):
        world.settle(run_dag(world.store, dag, conf, world.m.flow))
        report.converge_runs = j
        if world.all_settled():
            report.converge_seconds = time.monotonic() - started
            break
    for p in world.unsettled()[:5]:
        world.fail("lost_edit", f"not converged after {cfg.clean_runs} clean runs: {world.explain(p)}")
    before = world.api.writes(CRM) + world.api.writes(CB)
    run_flow(dag, conf)
    report.idle_writes = world.api.writes(CRM) + world.api.writes(CB) - before
