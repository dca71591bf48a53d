"""All six flows at once through a real scheduler + LocalExecutor (issue 4, items 4 and 5).

One ``airflow standalone`` runs every flow DAG against a Chargebee sandbox that enforces a
test site's limit of 150 requests per minute the way Chargebee does (past the limit, the
whole site answers 429 for a minute). Extra Customcrm contacts give the flows more
Chargebee work than fits in one minute, so the budget is what paces the run.

1. **The shared budget**: every task of every flow, each in its own worker process, leases
   from one budget in the metadata database. The sandbox's limiter must never fire (zero
   429), and the busiest minute must use most of the limit (the budget keeps a 5 % margin).
2. **Concurrency and the database**: then every DAG is triggered twice more while a rerun
   of each first run's ``upsert_chargebee`` and ``update_links`` is forced from the REST API
   ("Clear", as at 3 a.m.), all at once. No run may fail, no task log may show a deadlock or
   an integrity error, no record may be duplicated on either side, and the link store's
   uniqueness is shown to be enforced by the database itself (a duplicate insert fails).
3. **Airflow keeps its database** (SQLite): the link store and the budget write to
   Airflow's own file, whose connections wait only sqlite3's 5 s for its write lock
   (then the REST API answers HTTP 500 "Database error"; issue 11). No write transaction
   of ours may hold the lock that long (each one over a second names itself in its task
   log), and throughout, a connection takes the write lock every quarter second
   (:class:`WriteLockProbe`) and must never fail; its longest wait and the waits over
   5 s are printed (Airflow's own scheduler and api-server hold the lock longest). The
   REST calls above are the other check: they fail if Airflow's api-server deadlocks on
   the lock (see ``tests/e2e/standalone.py`` for why its execution API runs apart).

On PostgreSQL this is the configuration production runs; the SQLite pass runs the same
test (LocalExecutor works on SQLite in Airflow 3) as a smaller check of the same promises.
"""

from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa_
from crmsync.store.engine import AIRFLOW_SQLITE_TIMEOUT_SECONDS
from crmsync.store.schema import link
from sqlalchemy import create_engine, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.pool import NullPool

from scripts.runner import ORDER
from tests.e2e.conftest import CB_KEY, CRM_TOKEN, SEEDS, Sandboxes
from tests.e2e.standalone import Standalone
from tests.e2e.test_contact_customer import writes
from tests.e2e.test_scheduler import link_store_ready

pytestmark = [pytest.mark.e2e, pytest.mark.scheduler]

#: Every flow, in dependency order (they are triggered together; the order is irrelevant).
FLOWS = ORDER
#: Chargebee's limit on test sites and the Starter plan.
LIMIT = 150
#: Contacts added in Customcrm: each needs one Chargebee create, so the run needs well over
#: a minute of budget (≈ 150 writes + reads), enough to measure a saturated minute.
EXTRA_CONTACTS = 170
#: Log lines that would mean the database lost a race (PostgreSQL and SQLite wordings).
DB_TROUBLE = re.compile(
    r"deadlock detected|IntegrityError|UniqueViolation|could not serialize|database is locked",
    re.IGNORECASE,
)
#: The warning our engine logs for a write transaction that held SQLite's write lock long.
SLOW_WRITE = re.compile(r"held SQLite's write lock for ([0-9.]+) s \(first statement: ([^)]*)\)")


class WriteLockProbe:
    """Airflow's side of the shared SQLite file, measured while the flows run.

    A thread takes the write lock (``BEGIN IMMEDIATE``, then ``COMMIT``) every
    ``interval`` seconds and records how long each attempt waited: a wait of 5 s or more
    is what would have failed a write of Airflow's (sqlite3's default busy timeout) at
    that moment. Its own timeout is longer (30 s), so it measures instead of failing;
    failing even then means the lock was stuck. On PostgreSQL (row locks, no file lock)
    it does nothing.
    """

    def __init__(self, db_url: str, interval: float = 0.25, timeout: float = 30.0) -> None:
        self.path = db_url.split(":///", 1)[1] if db_url.startswith("sqlite:///") else None
        self.interval = interval
        self.timeout = timeout
        self.waits: list[float] = []
        self.failures: list[str] = []
        self.journal_mode = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="write-lock-probe", daemon=True)

    def __enter__(self) -> WriteLockProbe:
        if self.path is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.timeout + 5)

    def _run(self) -> None:
        assert self.path is not None
        con = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        try:
            self.journal_mode = str(con.execute("PRAGMA journal_mode").fetchone()[0])
            while not self._stop.wait(self.interval):
                t0 = time.monotonic()
                try:
                    con.execute("BEGIN IMMEDIATE")
                    self.waits.append(time.monotonic() - t0)
                    con.execute("COMMIT")
                except sqlite3.OperationalError as exc:
                    self.failures.append(
                        f"{time.strftime('%H:%M:%S')} after {time.monotonic() - t0:.1f} s: {exc}"
                    )
        finally:
            con.close()

    def figures(self) -> dict[str, Any]:
        waits = sorted(self.waits)
        return {
            "probe_writes": len(waits),
            "probe_failures": len(self.failures),
            "probe_longest_wait_s": round(waits[-1], 2) if waits else None,
            "probe_p99_wait_s": round(waits[int(0.99 * (len(waits) - 1))], 2) if waits else None,
            "probe_waits_over_5s": sum(1 for w in waits if w >= AIRFLOW_SQLITE_TIMEOUT_SECONDS),
            "journal_mode": self.journal_mode,
        }

    def check(self) -> None:
        """Airflow could always write within the busy timeout its connections have."""
        if self.path is None:
            return
        assert self.waits, "the write-lock probe never ran"
        assert not self.failures, (
            f"a writer ({self.timeout:.0f} s busy timeout) could not write: "
            f"{self.failures[:5]}; {self.figures()}"
        )


def longest_write_locks(log_files: list[Path]) -> list[tuple[float, str]]:
    """Our slow write transactions named in the task logs, longest first: (seconds, statement)."""
    found = [
        (float(m.group(1)), m.group(2))
        for path in log_files
        for m in SLOW_WRITE.finditer(path.read_text(errors="replace"))
    ]
    return sorted(found, reverse=True)


@pytest.fixture
def limited_sandboxes(tmp_path: Path) -> Iterator[tuple[Sandboxes, Any]]:
    """Both sandboxes on loopback; Chargebee limited to ``LIMIT``/min with a 60 s site block."""
    from sandbox.chargebee.server import serve_in_thread as serve_cb
    from sandbox.customcrm.server import serve_in_thread as serve_crm

    with ExitStack() as stack:
        cb_server, cb_url = stack.enter_context(
            serve_cb(
                tmp_path / "cb.json",
                port=0,
                seed_path=SEEDS / "chargebee.json",
                rate_limit_per_minute=LIMIT,
                block_seconds=60,
            )
        )
        _, crm_url = stack.enter_context(
            serve_crm(tmp_path / "crm.json", port=0, seed_path=SEEDS / "customcrm.json")
        )
        yield Sandboxes(cb_url.rstrip("/"), crm_url.rstrip("/")), cb_server


def connections(sb: Sandboxes) -> dict[str, str]:
    return {
        "AIRFLOW_CONN_CHARGEBEE_DEFAULT": json.dumps(
            {
                "conn_type": "chargebee",
                "host": "sandbox",
                "password": CB_KEY,
                "extra": {"base_url": f"{sb.cb_url}/api/v2", "rate_limit_per_minute": LIMIT},
            }
        ),
        "AIRFLOW_CONN_CUSTOMCRM_DEFAULT": json.dumps(
            {"conn_type": "customcrm", "host": sb.crm_url, "password": CRM_TOKEN}
        ),
    }


def add_contacts(sb: Sandboxes, n: int) -> None:
    for i in range(n):
        sb.crm(
            "POST",
            "contacts",
            json={
                "FirstName": f"Load{i:04d}",
                "LastName": "Tester",
                "Email": f"load{i:04d}@budget.example",
                "Country": "DE",
                # Contacts of a company linked to a business entity (the seed's Fjordlys AS):
                # without one, the customers Chargebee puts under its default entity while
                # that entity is not linked yet fill in the contacts' company a run later.
                "Company": "Fjordlys AS",
                "CustomerId": "CUS-000001",
            },
        )


def busiest_window(per_second: dict[int, int], width: int = 60) -> int:
    """Most requests accepted in any ``width`` consecutive seconds."""
    if not per_second:
        return 0
    lo, hi = min(per_second), max(per_second)
    counts = [per_second.get(t, 0) for t in range(lo, hi + 1)]
    best = running = sum(counts[:width])
    for i in range(width, len(counts)):
        running += counts[i] - counts[i - width]
        best = max(best, running)
    return best


def accepted_per_second(sb: Sandboxes) -> dict[int, int]:
    stats = sb.stats("chargebee")
    return {int(k): int(v) for k, v in stats["rate_limit"]["accepted_per_second"].items()}


def wait_all(sa: Standalone, runs: dict[str, list[str]], timeout: float) -> dict[tuple[str, str], str]:
    """Wait for every run; {(dag_id, run_id): state}."""
    deadline = time.monotonic() + timeout
    states: dict[tuple[str, str], str] = {}
    for dag_id, run_ids in runs.items():
        for run_id in run_ids:
            left = max(30.0, deadline - time.monotonic())
            states[(dag_id, run_id)] = sa.wait_for_run(dag_id, run_id, timeout=left)
    return states


def assert_all_succeeded(sa: Standalone, states: dict[tuple[str, str], str]) -> None:
    failed = {k: v for k, v in states.items() if v != "success"}
    if failed:
        dag_id, run_id = next(iter(failed))
        pytest.fail(f"runs not successful: {failed}\n{sa.task_logs(dag_id, run_id)}")


def no_duplicates(sb: Sandboxes) -> None:
    """Each email once per side (the seed's emails are unique; so are the added ones)."""
    cb_emails = Counter(
        (c.get("email") or "").lower() for c in sb.cb_customers() if not c.get("deleted") and c.get("email")
    )
    crm_emails = Counter(
        (c.get("Email") or "").lower() for c in sb.crm_contacts() if not c.get("Deleted") and c.get("Email")
    )
    assert not {e: n for e, n in cb_emails.items() if n > 1}, "duplicate Chargebee customers"
    assert not {e: n for e, n in crm_emails.items() if n > 1}, "duplicate Customcrm contacts"
    assert sum(1 for e in cb_emails if e.endswith("@budget.example")) == EXTRA_CONTACTS


def uniqueness_is_enforced_by_the_database(db_url: str) -> dict[str, int]:
    """Every link is unique per flow on both sides, and a duplicate insert fails in the DB."""
    engine = create_engine(db_url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            per_flow = dict(
                conn.execute(select(link.c.flow, func.count()).group_by(link.c.flow)).all()  # type: ignore[arg-type]
            )
            for cols in ((link.c.flow, link.c.cb_id), (link.c.flow, link.c.crm_id, link.c.crm_slot)):
                dupes = conn.execute(select(*cols).group_by(*cols).having(func.count() > 1)).all()
                assert not dupes, f"duplicate links on {[c.name for c in cols]}: {dupes[:5]}"
            row = (
                conn.execute(select(link).where(link.c.flow == "contact_customer").limit(1)).mappings().one()
            )
        for changed in ({"crm_id": row["crm_id"] + "-other"}, {"cb_id": row["cb_id"] + "-other"}):
            copy = {k: v for k, v in row.items() if k != "id"} | changed
            with pytest.raises(IntegrityError), engine.begin() as conn:
                conn.execute(sa_.insert(link).values(**copy))
    finally:
        engine.dispose()
    return {str(k): int(v) for k, v in per_flow.items()}


def clear_tasks(sa: Standalone, dag_id: str, run_id: str, task_ids: list[str]) -> None:
    """The UI's "Clear" on finished tasks: they run again in the same DAG run."""
    sa.api(
        "POST",
        f"dags/{dag_id}/clearTaskInstances",
        json={
            "dry_run": False,
            "dag_run_id": run_id,
            "task_ids": task_ids,
            "only_failed": False,
            "reset_dag_runs": True,
        },
    )


def test_all_flows_at_once_share_the_rate_budget_and_the_database(
    limited_sandboxes: tuple[Sandboxes, Any], tmp_path: Path
) -> None:
    sb, cb_server = limited_sandboxes
    add_contacts(sb, EXTRA_CONTACTS)
    figures: dict[str, Any] = {}
    with (
        Standalone(tmp_path / "airflow", extra_env=connections(sb)) as sa,
        WriteLockProbe(sa.db_url) as probe,
    ):
        link_store_ready(sa.db_url)
        for dag_id in FLOWS:
            if sa.wait_for_dag(dag_id)["is_paused"]:
                sa.api("PATCH", f"dags/{dag_id}", json={"is_paused": False})
        cb_server.limiter.reset()  # count only what the flows send

        # -- 1. every flow at once, one shared budget ---------------------------------
        t0 = time.monotonic()
        first = {dag_id: sa.trigger(dag_id) for dag_id in FLOWS}
        assert_all_succeeded(sa, wait_all(sa, {d: [r] for d, r in first.items()}, timeout=900))
        figures["first_round_s"] = round(time.monotonic() - t0, 1)
        per_second = accepted_per_second(sb)
        stats = sb.stats("chargebee")
        busiest = busiest_window(per_second)
        figures |= {
            "chargebee_requests": sum(per_second.values()),
            "busiest_minute": busiest,
            "busiest_minute_of_limit": round(busiest / LIMIT, 3),
            "sandbox_429": stats["rate_limited"],
            "site_blocks": stats["rate_limit"]["breaches"],
        }
        print("all flows at once:", json.dumps(figures))
        assert stats["rate_limited"] == 0 and stats["rate_limit"]["breaches"] == 0, figures
        # More work than one minute's budget was waiting, so the busiest minute shows how
        # much of the limit the budget let the flows use: 95 % minus the edges of leases.
        assert figures["chargebee_requests"] > LIMIT, figures
        assert busiest >= 0.8 * LIMIT, figures
        no_duplicates(sb)

        # -- 2. repeated manual reruns, all at once -----------------------------------
        cb_requests_before = sb.stats("chargebee")["total"]
        t1 = time.monotonic()
        queued = {dag_id: [sa.trigger(dag_id), sa.trigger(dag_id)] for dag_id in FLOWS}
        for dag_id, run_id in first.items():
            clear_tasks(sa, dag_id, run_id, ["upsert_chargebee", "update_links"])
            # the clear puts the run back in the queue at once (reset_dag_runs)
            assert sa.run_state(dag_id, run_id) not in ("success", "failed"), dag_id
        states = wait_all(sa, {d: [first[d], *queued[d]] for d in FLOWS}, timeout=900)
        assert_all_succeeded(sa, states)
        figures["rerun_round_s"] = round(time.monotonic() - t1, 1)
        figures["rerun_round_chargebee_requests"] = sb.stats("chargebee")["total"] - cb_requests_before
        stats = sb.stats("chargebee")
        assert stats["rate_limited"] == 0 and stats["rate_limit"]["breaches"] == 0, stats["rate_limit"]

        trouble = [
            f"{path}: {m.group(0)}"
            for path in [*sa.log_files(), sa.output_path]  # the execution API's output too
            for m in [DB_TROUBLE.search(path.read_text(errors="replace"))]
            if m
        ]
        assert not trouble, trouble[:10]
        no_duplicates(sb)
        figures["links"] = uniqueness_is_enforced_by_the_database(sa.db_url)
        slow = longest_write_locks(sa.log_files())
        figures["our_slow_write_locks"] = len(slow)
        figures["our_longest_write_lock_s"] = slow[0][0] if slow else None
        figures |= probe.figures()
        print("all flows at once, SQLite write lock:", json.dumps(figures))
        probe.check()
        assert not slow or slow[0][0] < AIRFLOW_SQLITE_TIMEOUT_SECONDS, (
            f"a write transaction of ours held SQLite's write lock past Airflow's timeout: {slow[:5]}"
        )

        # -- 3. converged: one more run of every flow, all at once, writes nothing -------
        before = writes(sb)
        last = {dag_id: sa.trigger(dag_id) for dag_id in FLOWS}
        assert_all_succeeded(sa, wait_all(sa, {d: [r] for d, r in last.items()}, timeout=600))
        assert writes(sb) == before, "a run after convergence wrote (an echo or a lost race)"
        probe.check()
        figures |= probe.figures()
    print("all flows at once + reruns:", json.dumps(figures))
