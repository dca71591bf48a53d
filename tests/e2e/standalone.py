"""A real Airflow (``airflow standalone``: api-server, scheduler + LocalExecutor, dag-processor,
triggerer) in its own AIRFLOW_HOME, driven through the public REST API.

Unlike ``dag.test()``, tasks here run in worker subprocesses under the Task SDK, where
Airflow 3 forbids the metadata ORM in task code: this is how production runs the flows.

The execution API (what task processes call: ``/run``, heartbeats, states) is served by
a second ``airflow api-server --apps execution`` process, not by the standalone's
api-server, as a deployment with separate API servers does. On SQLite this matters
(issue 11): Airflow 3.3's api-server writes the audit row of an action-logged REST call
(trigger, clear, pause) with a synchronous session inside an ``async`` dependency, so
its event loop blocks while it waits for the database's single write lock; if an
execution-API request of the same process holds that lock, its commit needs the
blocked event loop, and both wait for the 5 s busy timeout, after which the REST call
answers HTTP 500 "Database error". Served from another process, the lock holder
commits on its own event loop.

Every port is a free ephemeral one, so parallel test sessions do not clash. The whole
process tree is stopped on exit: the standalone runs in its own session, and task
processes (which get their own process group) stay in that session, so everything in
the session is signalled, by pid.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

ROOT = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent

TERMINAL_RUN_STATES = {"success", "failed"}
ACTIVE_RUN_STATES = {"queued", "running"}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports (held open together so they differ)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [int(s.getsockname()[1]) for s in socks]
    finally:
        for s in socks:
            s.close()


def metadata_db(home: Path) -> tuple[str, str]:
    """(SQLAlchemy URL, AIRFLOW_CONN_CRMSYNC_STORE) as tests/conftest.py builds them.

    SQLite: a fresh file in ``home``. PostgreSQL (CRMSYNC_TEST_DB=postgres): the session's
    database (a fresh one is not possible there).
    """
    if os.environ.get("CRMSYNC_TEST_DB") == "postgres":
        return os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"], os.environ["AIRFLOW_CONN_CRMSYNC_STORE"]
    db = home / "airflow.db"
    return f"sqlite:///{db}", json.dumps({"conn_type": "sqlite", "host": str(db)})


class Standalone:
    """``airflow standalone`` in ``home``; use as a context manager (always stopped on exit)."""

    def __init__(self, home: Path, extra_env: Mapping[str, str] | None = None) -> None:
        self.home = Path(home)
        self.home.mkdir(parents=True, exist_ok=True)
        self.api_port, worker_log_port, trigger_log_port, self.execution_port = free_ports(4)
        self.base_url = f"http://127.0.0.1:{self.api_port}"
        self.execution_url = f"http://127.0.0.1:{self.execution_port}/execution/"
        self.db_url, store_conn = metadata_db(self.home)
        self.output_path = self.home / "standalone.out"
        # Same file as the standalone's: every check of its output (secrets, database errors)
        # covers the execution API too. Both append (O_APPEND), so neither overwrites the other.
        self.execution_output_path = self.output_path
        self.env = os.environ.copy()
        self.env.update(
            {
                "PATH": f"{VENV_BIN}{os.pathsep}{self.env.get('PATH', '')}",  # it spawns `airflow ...`
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.db_url,
                "AIRFLOW_CONN_CRMSYNC_STORE": store_conn,
                "AIRFLOW__DATABASE__EXTERNAL_DB_MANAGERS": "crmsync.store.db_manager.LinkStoreDBManager",
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
                "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__PARALLELISM": "4",
                "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
                # Tasks talk to the execution API of its own process (see the module docstring).
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": self.execution_url,
                # One signing key for both API servers (each would generate its own).
                "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(self.api_port),
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(worker_log_port),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(trigger_log_port),
                "AIRFLOW__LOGGING__LOGGING_LEVEL": "INFO",
                "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
                # A worker that cannot load the DAG fails the task at once (default: reschedule
                # it 3 times, 60 s apart, which looks like a hang).
                "AIRFLOW__WORKERS__MISSING_DAG_RETRIES": "0",
                # No cron runs: an unpaused @hourly DAG would otherwise get a scheduled run for
                # the latest interval at once (catchup=False still creates that one), racing
                # the runs a test triggers. Triggered runs still run.
                "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
                "CRMSYNC_TASK_RETRIES": "0",
                "PYTHONUNBUFFERED": "1",
            }
        )
        self.env.update(extra_env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.execution_proc: subprocess.Popen[bytes] | None = None
        self._out: Any = None
        self._execution_out: Any = None
        self._session = requests.Session()

    # -- lifecycle ------------------------------------------------------------------
    def __enter__(self) -> Standalone:
        try:
            self.start()
            self.wait_healthy()
            self.login()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self.output_path.write_bytes(b"")
        self._out = open(self.output_path, "ab")  # noqa: SIM115 (closed in stop())
        self.proc = subprocess.Popen(
            [str(VENV_BIN / "airflow"), "standalone"],
            cwd=self.home,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def start_execution_api(self) -> None:
        """The execution API's own server, once the standalone has migrated the database
        (started before, it exits with "Database migration required")."""
        self._execution_out = open(self.execution_output_path, "ab")  # noqa: SIM115 (closed in stop())
        self.execution_proc = subprocess.Popen(
            [
                str(VENV_BIN / "airflow"),
                "api-server",
                "--apps",
                "execution",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.execution_port),
            ],
            cwd=self.home,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._execution_out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def session_pids(self) -> list[int]:
        """Every live process of the standalone's session (api-server, scheduler, tasks, ...)
        and of the execution API server's."""
        sids = {p.pid for p in (self.proc, self.execution_proc) if p is not None}
        if not sids:
            return []
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            with contextlib.suppress(OSError):
                if os.getsid(pid) in sids and not _is_zombie(pid):
                    pids.append(pid)
        return pids

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM the whole session, SIGKILL what is left after ``grace`` seconds.

        The scheduler takes ~5 s to stop cleanly on an idle machine, 15 s+ on a loaded one; a
        clean stop buys nothing here (the test is over), so the grace is short.
        """
        if self.proc is None:
            return
        try:
            for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
                pids = self.session_pids()
                if not pids:
                    break
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, sig)
                deadline = time.monotonic() + wait
                while time.monotonic() < deadline:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        self.proc.wait(timeout=0.2)
                    if not self.session_pids():
                        break
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)
            if self.execution_proc is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.execution_proc.wait(timeout=5)
            left = self.session_pids()
            assert not left, f"airflow processes left behind: {left}"
        finally:
            self._session.close()
            for out in (self._out, self._execution_out):
                if out is not None:
                    out.close()

    def output_tail(self, n: int = 6000) -> str:
        try:
            return self.output_path.read_bytes()[-n:].decode(errors="replace")
        except OSError:
            return ""

    def wait_healthy(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"airflow standalone exited ({self.proc.returncode}):\n{self.output_tail()}"
                )
            if self.execution_proc is not None and self.execution_proc.poll() is not None:
                raise AssertionError(
                    f"the execution API server exited ({self.execution_proc.returncode}):\n"
                    + self.execution_output_path.read_bytes()[-6000:].decode(errors="replace")
                )
            with contextlib.suppress(requests.RequestException):
                if self.execution_proc is None:
                    r = self._session.get(f"{self.base_url}/api/v2/monitor/health", timeout=5)
                    if r.ok and _healthy(r.json()):
                        self.start_execution_api()
                elif self._session.get(f"{self.execution_url}health", timeout=5).ok:
                    return
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"airflow standalone not healthy after {timeout:.0f}s:\n{self.output_tail()}"
                )
            time.sleep(0.5)

    def login(self, timeout: float = 60.0) -> None:
        """Token for the simple auth manager's generated ``admin`` user."""
        pw_file = self.home / "simple_auth_manager_passwords.json.generated"
        deadline = time.monotonic() + timeout
        while not pw_file.exists():
            assert time.monotonic() < deadline, f"no {pw_file.name}:\n{self.output_tail()}"
            time.sleep(0.2)
        password = json.loads(pw_file.read_text())["admin"]
        r = self._session.post(
            f"{self.base_url}/auth/token", json={"username": "admin", "password": password}, timeout=30
        )
        assert r.status_code in (200, 201), (r.status_code, r.text)
        self._session.headers["Authorization"] = f"Bearer {r.json()['access_token']}"

    # -- REST API -------------------------------------------------------------------
    def api(self, method: str, path: str, *, ok: tuple[int, ...] = (200,), **kw: Any) -> Any:
        r = self._session.request(method, f"{self.base_url}/api/v2/{path}", timeout=30, **kw)
        if r.status_code not in ok and r.status_code >= 500:
            # A 500 only says "Database error": the cause is in the api-server's output.
            raise AssertionError(
                f"{method} {path}: {r.status_code} {r.text[:2000]}\n"
                f"api-server errors:\n{self.server_errors()}"
            )
        assert r.status_code in ok, f"{method} {path}: {r.status_code} {r.text[:2000]}"
        return r.json() if r.content else None

    def server_errors(self, limit: int = 40) -> str:
        """The last error lines of the standalone's output (exceptions, SQL errors, 5xx)."""
        lines = []
        for path in dict.fromkeys((self.output_path, self.execution_output_path)):
            with contextlib.suppress(OSError):
                lines += path.read_text(errors="replace").splitlines()
        marks = ("Error", "error", "Traceback", "locked", "status_code=5")
        hits = [line[:600] for line in lines if any(m in line for m in marks)]
        return "\n".join(hits[-limit:]) or "(none)"

    def wait_for_dag(self, dag_id: str, timeout: float = 90.0) -> dict[str, Any]:
        """The DAG once the dag-processor has serialized it (fails early on an import error)."""
        deadline = time.monotonic() + timeout
        while True:
            r = self._session.get(f"{self.base_url}/api/v2/dags/{dag_id}", timeout=30)
            if r.status_code == 200:
                return dict(r.json())
            errors = self._session.get(f"{self.base_url}/api/v2/importErrors", timeout=30)
            if errors.ok and errors.json().get("total_entries"):
                raise AssertionError(f"DAG import errors: {json.dumps(errors.json(), indent=1)[:5000]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{dag_id} not parsed after {timeout:.0f}s:\n{self.output_tail()}")
            time.sleep(1)

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        body = {"logical_date": None, "conf": conf or {}}
        return str(self.api("POST", f"dags/{dag_id}/dagRuns", json=body)["dag_run_id"])

    def run_state(self, dag_id: str, run_id: str) -> str:
        return str(self.api("GET", f"dags/{dag_id}/dagRuns/{quote(run_id, safe='')}")["state"])

    def task_instances(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        """{task_id: state}"""
        body = self.api("GET", f"dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances")
        return {ti["task_id"]: ti["state"] for ti in body["task_instances"]}

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 240.0) -> str:
        deadline = time.monotonic() + timeout
        while True:
            state = self.run_state(dag_id, run_id)
            if state in TERMINAL_RUN_STATES:
                return state
            if time.monotonic() > deadline:
                tis = self.task_instances(dag_id, run_id)
                raise AssertionError(
                    f"{dag_id} {run_id} still {state} after {timeout:.0f}s; tasks {tis}\n"
                    f"{self.task_logs(dag_id, run_id)}\n{self.output_tail()}"
                )
            time.sleep(1)

    def dag_runs(self, dag_id: str) -> dict[str, str]:
        """{run_id: state} of the DAG's 100 newest runs.

        Newest first: on a shared PostgreSQL metadata DB earlier sessions leave many runs,
        and the API caps a page at 100.
        """
        body = self.api("GET", f"dags/{dag_id}/dagRuns", params={"limit": 100, "order_by": "-run_after"})
        return {r["dag_run_id"]: r["state"] for r in body["dag_runs"]}

    def xcom_entries(self, dag_id: str, run_id: str, task_id: str) -> list[dict[str, Any]]:
        path = f"dags/{dag_id}/dagRuns/{quote(run_id, safe='')}/taskInstances/{task_id}/xcomEntries"
        body = self.api("GET", path)
        return list(body["xcom_entries"])

    # -- logs -----------------------------------------------------------------------
    def log_files(self, dag_id: str | None = None, run_id: str | None = None) -> list[Path]:
        """Task log files, of one DAG/run if given (``logs/dag_id=.../run_id=.../task_id=...``)."""
        base = self.home / "logs"
        if dag_id:
            base = base / f"dag_id={dag_id}"
            if run_id:
                base = base / f"run_id={run_id}"
        return sorted(p for p in base.rglob("*") if p.is_file()) if base.exists() else []

    def task_logs(self, dag_id: str, run_id: str, limit: int = 8000) -> str:
        """The tail of every task log of a run, for failure messages."""
        parts = []
        for path in self.log_files(dag_id, run_id):
            text = path.read_text(errors="replace")
            parts.append(f"----- {path.relative_to(self.home / 'logs')} -----\n{text[-limit:]}")
        return "\n".join(parts) or f"(no task logs under {self.home / 'logs'})"


def _healthy(body: dict[str, Any]) -> bool:
    """metadatabase, scheduler, triggerer and dag_processor all report healthy."""
    parts = [v for v in body.values() if isinstance(v, dict) and "status" in v]
    return bool(parts) and all(p["status"] == "healthy" for p in parts)


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


@contextlib.contextmanager
def standalone(home: Path, extra_env: Mapping[str, str] | None = None) -> Iterator[Standalone]:
    with Standalone(home, extra_env) as sa:
        yield sa


# -- a standalone whose scheduler runs the clocks and Assets (the scheduler tests) -----------


@dataclass(frozen=True)
class Scheduling:
    """A :func:`scheduling_standalone`: the stack, the DAGs as parsed (before they were
    unpaused) and the runs each had before (runs of earlier tests on a shared database)."""

    sa: Standalone
    dags: dict[str, dict[str, Any]]
    before: dict[str, set[str]]


@contextlib.contextmanager
def scheduling_standalone(
    home: Path, dag_ids: Sequence[str], extra_env: Mapping[str, str] | None = None
) -> Iterator[Scheduling]:
    """A standalone as ``make up`` runs one: DAGs created paused and the scheduler's own
    clocks and Asset scheduling on; the link store emptied, ``dag_ids`` parsed, their
    earlier runs noted, then all of them unpaused at once.

    Shared by the scheduler tests that start flows by their clocks and Assets
    (test_dependency_order, test_event_driven): the setup was the same in each.
    """
    from tests.e2e.test_scheduler import link_store_ready  # it imports this module

    env = {
        **(extra_env or {}),
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        # Asset-triggered runs (and the clocks) need the scheduler's job schedule
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "True",
    }
    reset_scheduling(metadata_db(home)[0])
    with Standalone(home, extra_env=env) as sa:
        link_store_ready(sa.db_url)
        dags = {dag_id: sa.wait_for_dag(dag_id) for dag_id in dag_ids}
        before = {dag_id: set(sa.dag_runs(dag_id)) for dag_id in dag_ids}
        for dag_id in dag_ids:
            sa.api("PATCH", f"dags/{dag_id}", json={"is_paused": False})
        yield Scheduling(sa, dags, before)


def reset_scheduling(db_url: str) -> None:
    """Before a standalone with its clocks on starts: on PostgreSQL it shares the session's
    database, where earlier tests left DAGs unpaused (they would start on their clocks at
    once) and links Asset events queued (they would start downstream flows). SQLite gets a
    fresh database per standalone: nothing to do."""
    if not db_url.startswith("postgresql"):
        return
    engine = create_engine(db_url, poolclass=NullPool)
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE dag SET is_paused = true"))
            conn.execute(text("DELETE FROM asset_dag_run_queue"))
    finally:
        engine.dispose()


def wait_quiet(sa: Standalone, dag_ids: list[str], before: dict[str, set[str]], timeout: float) -> None:
    """Until every DAG has a run the test did not see before, none of those is active, and
    that stays so for three polls (an Asset-triggered run is created a scheduler loop after
    its upstream run). Runs of earlier tests (a shared PostgreSQL database) are ignored."""
    deadline = time.monotonic() + timeout
    quiet = 0
    while quiet < 3:
        runs = {d: sa.dag_runs(d) for d in dag_ids}
        new = {d: {r: st for r, st in rs.items() if r not in before.get(d, set())} for d, rs in runs.items()}
        active = {d: st for d, rs in new.items() for st in rs.values() if st in ACTIVE_RUN_STATES}
        quiet = quiet + 1 if all(new.values()) and not active else 0
        if time.monotonic() > deadline:
            raise AssertionError(f"not settled after {timeout:.0f}s: new runs {new}, active {active}")
        time.sleep(3)
    failed = {(d, r): st for d, rs in new.items() for r, st in rs.items() if st == "failed"}
    if failed:
        import pytest  # only here: bench/ imports this module outside pytest

        (dag_id, run_id), _ = next(iter(failed.items()))
        pytest.fail(f"failed runs {failed}\n{sa.task_logs(dag_id, run_id)}")
