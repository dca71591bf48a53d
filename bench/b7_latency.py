"""Benchmark 7 (issue 15 item 3): how long an edit takes to reach the other side, and what
change detection costs while nothing changes.

Real parts only: both sandboxes at 150 requests/minute, a real Airflow (scheduler with
LocalExecutor, dag-processor, triggerer, api-server; SQLite) in its own AIRFLOW_HOME on
free ports, change detection on at the connections' default poll interval.

1. Three flows are unpaused (``customer_business_entity`` and ``product_item`` start on
   their clock, ``contact_customer`` on the first one's links Asset) and sync the seed.
2. **Idle cost**: nothing changes for two minutes; the API requests each sandbox answered
   (``GET /_sandbox/stats``, diff of totals; admin requests are not counted) per minute.
   Target: Chargebee detection within its 4-requests-a-minute share at 150/min.
3. **Latency**: 20 edits at random moments (seeded RNG, gaps 0-20 s), on both sides, across
   the three flows, each one mapped field set to a unique value through the sandbox's admin
   API (as a person's UI edit: versions and events move); the other side is read every
   0.5 s (admin API) until it shows the value. Target: p95 <= 60 s. Each edit is matched
   to the DAG run that was running when the value appeared, which splits the latency into
   detection (edit -> run queued), queueing and the run itself (target: a run carrying
   one edit takes <= 15 s of wall time).

Everything it starts is stopped on the way out (Ctrl-C included).
"""

from __future__ import annotations

import math
import os
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench._latency_stack import (
    Run,
    airflow,
    all_runs,
    busy_seconds,
    call_diff,
    links,
    start_sandboxes,
    task_times,
    unpause_and_settle,
    wait_idle,
)
from bench.common import BenchEnv, Result
from bench.sandboxes import Pair

TITLE = "Edit latency and idle detection cost (real scheduler + triggerer, 150/min sandboxes)"
FLOWS = ["customer_business_entity", "contact_customer", "product_item"]
ROOTS = ["customer_business_entity", "product_item"]
IDLE_SECONDS = 120.0
EDITS = 20
MAX_GAP = 20.0
RNG_SEED = 15
GIVE_UP = 180.0  # seconds after which an edit counts as never shown
POLL = 0.5


@dataclass(frozen=True)
class Kind:
    """An edit: ``field`` of ``resource`` on ``side``, shown as ``other_field`` of ``other_resource``."""

    flow: str
    side: str  # the edited side: "customcrm" or "chargebee"
    resource: str
    field: str
    other_resource: str
    other_field: str


KINDS = [
    Kind("contact_customer", "customcrm", "contacts", "Phone", "customers", "phone"),
    Kind("contact_customer", "chargebee", "customers", "phone", "contacts", "Phone"),
    Kind("product_item", "customcrm", "products", "Description", "items", "description"),
    Kind("product_item", "chargebee", "items", "description", "products", "Description"),
    # business entities are Chargebee -> Customcrm only (no API writes them)
    Kind("customer_business_entity", "chargebee", "business_entities", "name", "customers", "Name"),
]


@dataclass
class Edit:
    n: int
    kind: Kind
    crm_id: str
    cb_id: str
    value: str
    at: float = 0.0  # epoch seconds, just before the edit was sent
    seen: float | None = None  # epoch seconds the other side first showed it
    gave_up: bool = False

    @property
    def latency(self) -> float | None:
        return None if self.seen is None else self.seen - self.at


# --------------------------------------------------------------------------- edits


def _write(sb: Pair, e: Edit) -> None:
    if e.kind.side == "customcrm":
        sb.crm.admin("POST", f"records/{e.kind.resource}", {"Id": e.crm_id, e.kind.field: e.value})
    else:
        sb.cb.admin("POST", f"records/{e.kind.resource}", {"id": e.cb_id, e.kind.field: e.value})


def _shown(sb: Pair, e: Edit) -> bool:
    if e.kind.side == "customcrm":
        rec = sb.cb.admin("GET", f"records/{e.kind.other_resource}/{e.cb_id}")["record"]
    else:
        rec = sb.crm.admin("GET", f"records/{e.kind.other_resource}/{e.crm_id}")["record"]
    return bool(rec.get(e.kind.other_field) == e.value)


def plan_edits(rng: random.Random, pairs: dict[str, list[tuple[str, str]]]) -> list[Edit]:
    """``EDITS`` edits over the kinds (each kind at least 3 times), linked records in turn per
    flow so that edits close in time touch different records."""
    kinds = [KINDS[i % len(KINDS)] for i in range(EDITS)]
    rng.shuffle(kinds)
    turn: Counter[str] = Counter()
    out = []
    for n, kind in enumerate(kinds, 1):
        linked = pairs[kind.flow]
        if not linked:
            raise RuntimeError(f"{kind.flow} linked nothing in the initial sync")
        crm_id, cb_id = linked[turn[kind.flow] % len(linked)]
        turn[kind.flow] += 1
        token = f"{rng.randrange(16**6):06x}"
        value = {
            "Phone": f"+47 9{n:02d} {rng.randrange(10**5):05d}",
            "phone": f"+47 8{n:02d} {rng.randrange(10**5):05d}",
            "name": f"Bench Entity {n} {token}",
        }.get(kind.field, f"bench latency edit {n} {token}")
        out.append(Edit(n, kind, crm_id, cb_id, value))
    return out


class Watcher:
    """Reads the other side of every pending edit every ``POLL`` s (a thread)."""

    def __init__(self, sb: Pair) -> None:
        self.sb = sb
        self.pending: list[Edit] = []
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.done.is_set():
            with self.lock:
                pending = list(self.pending)
            for e in pending:
                now = time.time()
                if _shown(self.sb, e):
                    e.seen = now
                    print(f"bench latency: edit {e.n:2} shown after {now - e.at:.1f} s", flush=True)
                elif now - e.at > GIVE_UP:
                    e.gave_up = True
                if e.seen is not None or e.gave_up:
                    with self.lock:
                        self.pending.remove(e)
            self.done.wait(POLL)

    def add(self, e: Edit) -> None:
        with self.lock:
            self.pending.append(e)

    def busy(self) -> bool:
        with self.lock:
            return bool(self.pending)


def make_edits(sb: Pair, edits: list[Edit], rng: random.Random) -> None:
    """The edits at random moments; returns when each was shown or given up on."""
    watcher = Watcher(sb)
    watcher.thread.start()
    try:
        for e in edits:
            time.sleep(rng.uniform(0.0, MAX_GAP))
            e.at = time.time()
            _write(sb, e)
            watcher.add(e)
            print(f"bench latency: edit {e.n:2} {e.kind.flow} in {e.kind.side}", flush=True)
        while watcher.busy():
            time.sleep(POLL)
    finally:
        watcher.done.set()
        watcher.thread.join(timeout=10)


# --------------------------------------------------------------------------- phases


def measure_idle(sa: Any, sb: Pair) -> dict[str, Any]:
    """Requests per side over ``IDLE_SECONDS`` with nothing changing, and runs started meanwhile."""
    before = {"chargebee": sb.cb.stats(), "customcrm": sb.crm.stats()}
    t0 = time.time()
    time.sleep(IDLE_SECONDS)
    after = {"chargebee": sb.cb.stats(), "customcrm": sb.crm.stats()}
    minutes = (time.time() - t0) / 60
    started = [r for r in all_runs(sa, FLOWS) if (r.queued or 0) >= t0]
    calls = {side: call_diff(before[side], after[side]) for side in before}
    return {"minutes": minutes, "calls": calls, "runs": [f"{r.dag_id} {r.run_id}" for r in started]}


def carrier(e: Edit, runs: list[Run]) -> Run | None:
    """The run of the edit's flow that was running when the other side showed the value."""
    if e.seen is None:
        return None
    hits = [
        r
        for r in runs
        if r.dag_id == e.kind.flow
        and r.start is not None
        and r.start - 0.5 <= e.seen <= (r.end or math.inf) + 1
    ]
    return max(hits, key=lambda r: r.start or 0.0) if hits else None


def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile (inf for a missing value sorts last)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _other_jobs() -> str:
    """Other heavy processes on the machine at the start (airflow, pytest), for the notes."""
    mine = os.getsid(0)
    seen: Counter[str] = Counter()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if os.getsid(int(entry.name)) == mine:
                continue
        except OSError:
            continue
        for word in ("pytest", "airflow scheduler", "airflow standalone", "airflow triggerer"):
            if word in cmd:
                seen[word] += 1
    return ", ".join(f"{n} x {w}" for w, n in sorted(seen.items())) or "none"


# --------------------------------------------------------------------------- report


def report_idle(result: Result, idle: dict[str, Any]) -> None:
    minutes = idle["minutes"]
    rows = [
        [side, endpoint, n, n / minutes]
        for side, calls in idle["calls"].items()
        for endpoint, n in sorted(calls.items())
    ]
    result.table(
        f"Idle: API requests over {minutes:.1f} min with nothing changing",
        ["side", "endpoint", "requests", "per minute"],
        rows,
    )
    per_min = {side: sum(c.values()) / minutes for side, c in idle["calls"].items()}
    result.data["idle"] = {
        "minutes": minutes,
        "per_minute": per_min,
        "calls": idle["calls"],
        "runs": idle["runs"],
    }
    runs_note = (
        f"; runs started while idle: {idle['runs']}" if idle["runs"] else "; no run started while idle"
    )
    result.verdict(
        "Chargebee change detection when idle <= 4 requests/minute (its share of 150/min)",
        per_min["chargebee"] <= 4.0,
        f"{per_min['chargebee']:.2f}/min",
        "every request the Chargebee sandbox answered" + runs_note,
    )
    result.verdict(
        "Customcrm change detection when idle (no target)",
        None,
        f"{per_min['customcrm']:.2f}/min",
        f"one list poll per flow per interval, {len(FLOWS)} flows unpaused",
    )


def short_run(run_id: str) -> str:
    """``asset_triggered__2026-12-03T17:03:40.178569+00:00_qx14Cmoh`` -> ``asset 17:03:40``."""
    kind, _, rest = run_id.partition("__")
    return f"{kind.split('_')[0]} {rest[11:19]}" if rest else run_id


def parts(e: Edit, r: Run | None) -> dict[str, float | None]:
    """Where one edit's time went: detect (edit -> run queued), queue (queued -> started),
    shown (run start -> other side shows it), run (the run's wall time)."""
    if r is None or e.seen is None:
        return {"detect": None, "queue": None, "shown": None, "run": None}
    return {
        "detect": (r.queued - e.at) if r.queued else None,
        "queue": (r.start - r.queued) if r.start and r.queued else None,
        "shown": (e.seen - r.start) if r.start else None,
        "run": r.seconds,
    }


def edit_rows(edits: list[Edit], runs: list[Run], t0: float) -> list[list[Any]]:
    rows = []
    for e in edits:
        r = carrier(e, runs)
        p = parts(e, r)
        latency: Any = e.latency if e.latency is not None else "never"
        head = [e.n, e.at - t0, e.kind.flow, f"{e.kind.side} {e.kind.field}", latency]
        rows.append(
            [*head, short_run(r.run_id) if r else "-", *(p[k] for k in ("detect", "queue", "shown", "run"))]
        )
    return rows


def breakdown_rows(edits: list[Edit], runs: list[Run]) -> list[list[Any]]:
    """p50 / p95 / max of each part of the edits' latency."""
    split = [parts(e, carrier(e, runs)) for e in edits]
    labels = {
        "detect": "edit -> run queued (poll interval + trigger + scheduler)",
        "queue": "run queued -> started",
        "shown": "run started -> other side shows it",
        "run": "the carrying run's wall time",
    }
    rows: list[list[Any]] = []
    for key, label in labels.items():
        vals = [v for p in split if (v := p[key]) is not None]
        rows.append([label, pct(vals, 0.5), pct(vals, 0.95), max(vals) if vals else None])
    lat = [e.latency if e.latency is not None else math.inf for e in edits]
    rows.append(["edit -> other side shows it (latency)", pct(lat, 0.5), pct(lat, 0.95), max(lat)])
    return rows


def report_edits(result: Result, edits: list[Edit], runs: list[Run], t0: float) -> None:
    header = ["#", "at s", "flow", "edited", "latency s", "run", "detect s", "queue s", "shown at s", "run s"]
    result.table(
        "Edits: seconds until the other side showed the value (detect: edit -> run queued; queue: "
        "queued -> started; shown at: into the run; run: the run's wall time)",
        header,
        edit_rows(edits, runs, t0),
    )
    result.table("Where an edit's time went (s)", ["part", "p50", "p95", "max"], breakdown_rows(edits, runs))
    lat = [e.latency if e.latency is not None else math.inf for e in edits]
    p50, p95, worst = pct(lat, 0.5), pct(lat, 0.95), max(lat)
    missed = sum(1 for e in edits if e.latency is None)
    result.data["latency"] = {"p50": p50, "p95": p95, "max": worst, "never": missed, "n": len(edits)}
    result.data["edits"] = [
        {
            "n": e.n,
            "flow": e.kind.flow,
            "side": e.kind.side,
            "latency": e.latency,
            **parts(e, carrier(e, runs)),
        }
        for e in edits
    ]
    result.verdict(
        "An edit reaches the other side: p95 <= 60 s",
        p95 <= 60.0,
        f"p50 {p50:.1f} s, p95 {p95:.1f} s, max {worst:.1f} s over {len(edits)} edits",
        f"{missed} never shown within {GIVE_UP:.0f} s" if missed else "",
    )
    report_runs(result, edits, runs, t0)


def report_runs(result: Result, edits: list[Edit], runs: list[Run], t0: float) -> None:
    carried: Counter[str] = Counter()
    for e in edits:
        r = carrier(e, runs)
        if r:
            carried[r.run_id] += 1
    phase = sorted((r for r in runs if (r.queued or 0) >= t0), key=lambda r: r.queued or 0)
    rows = [
        [
            r.dag_id,
            short_run(r.run_id),
            r.run_type,
            r.state,
            carried[r.run_id],
            r.queued - t0 if r.queued else None,
            (r.start - r.queued) if r.start and r.queued else None,
            r.seconds,
        ]
        for r in phase
    ]
    result.table(
        "DAG runs during the edits",
        ["flow", "run", "type", "state", "edits", "queued at s", "queue s", "wall s"],
        rows,
    )
    one = [r.seconds for r in phase if carried[r.run_id] == 1 and r.seconds is not None]
    carriers = [r.seconds for r in phase if carried[r.run_id] and r.seconds is not None]
    result.data["runs"] = {"one_edit": one, "carriers": carriers, "all": [r.seconds for r in phase]}
    result.verdict(
        "A run carrying one edit finishes in <= 15 s wall time (every such run)",
        bool(one) and max(one) <= 15.0 if one else None,
        f"p50 {pct(one, 0.5):.1f} s, max {max(one):.1f} s over {len(one)} runs" if one else "no one-edit run",
        f"all runs carrying edits: p50 {pct(carriers, 0.5):.1f} s, max {max(carriers):.1f} s"
        if carriers
        else "",
    )


def report_tasks(result: Result, sa: Any, edits: list[Edit], runs: list[Run]) -> None:
    """Where a carrying run's wall time went: each task's start and duration, and the time in
    which no task ran (scheduling, task start-up)."""
    carriers = {r.run_id: r for e in edits if (r := carrier(e, runs)) and r.start and r.end}
    offsets: dict[str, list[float]] = {}
    durations: dict[str, list[float]] = {}
    busy, idle, wall = [], [], []
    for r in carriers.values():
        spans = task_times(sa, r)
        for task, start, end in spans:
            offsets.setdefault(task, []).append(start - (r.start or start))
            durations.setdefault(task, []).append(end - start)
        b = busy_seconds(spans)
        busy.append(b)
        wall.append(r.seconds or 0.0)
        idle.append((r.seconds or 0.0) - b)
    rows: list[list[Any]] = [
        [task, pct(offsets[task], 0.5), pct(durations[task], 0.5), max(durations[task])]
        for task in sorted(offsets, key=lambda t: pct(offsets[t], 0.5))
    ]
    rows.append(["(some task running)", None, pct(busy, 0.5), max(busy, default=None)])
    rows.append(["(no task running: scheduling, start-up)", None, pct(idle, 0.5), max(idle, default=None)])
    rows.append(["(run wall time)", None, pct(wall, 0.5), max(wall, default=None)])
    result.table(
        f"Inside the {len(carriers)} runs that carried edits (s; parallel tasks overlap)",
        ["task", "p50 starts at", "p50 takes", "max takes"],
        rows,
    )
    result.data["tasks"] = {"durations": durations, "offsets": offsets, "busy": busy, "no_task": idle}


# --------------------------------------------------------------------------- entry


def run(env: BenchEnv, flow: Any = None) -> Result:
    """The whole benchmark (``flow`` is ignored: it uses its three flows)."""
    result = Result("latency", TITLE)
    result.notes.append(f"other jobs on the machine at the start: {_other_jobs()}")
    rng = random.Random(RNG_SEED)
    sb = start_sandboxes()
    try:
        t0 = time.monotonic()
        with airflow(env.workdir / "latency-airflow", sb) as sa:
            result.data["startup_s"] = time.monotonic() - t0
            print(f"bench latency: Airflow up in {result.data['startup_s']:.0f} s; initial sync", flush=True)
            result.data["initial_sync_s"] = unpause_and_settle(sa, FLOWS, ROOTS)
            pairs = links(sa.db_url, FLOWS)
            result.data["links"] = {f: len(p) for f, p in pairs.items()}
            time.sleep(15)  # one poll interval: the triggers see the sync's own writes and drop them
            print(f"bench latency: idle for {IDLE_SECONDS:.0f} s", flush=True)
            report_idle(result, measure_idle(sa, sb))
            edits = plan_edits(rng, pairs)
            phase_start = time.time()
            make_edits(sb, edits, rng)
            wait_idle(sa, FLOWS, timeout=300)
            runs = all_runs(sa, FLOWS)
            report_edits(result, edits, runs, phase_start)
            report_tasks(result, sa, edits, runs)
    finally:
        sb.stop()
    result.notes.append(
        f"startup {result.data['startup_s']:.0f} s, initial sync {result.data['initial_sync_s']:.0f} s, "
        f"links {result.data['links']}; RNG seed {RNG_SEED}, gaps 0-{MAX_GAP:.0f} s, other side read "
        f"every {POLL} s through the admin API (not counted)"
    )
    return result
