"""docker-compose.yaml's topology without Docker: Airflow on CeleryExecutor, in processes.

PostgreSQL (a scratch database of its own on the test server, dropped afterwards), Redis
(Debian's ``redis-server`` on a free loopback port, in its own directory, no persistence),
``airflow db migrate`` (Airflow's tables and, through the DB manager, the link store's),
then api-server (REST and the Execution API), scheduler, dag-processor, triggerer and N
``airflow celery worker`` processes, each in its own session and output file.

:class:`CeleryStack` extends :class:`tests.e2e.standalone.Standalone`, so the REST helpers
(trigger, wait_for_run, task_logs, ...) and the stop-the-whole-tree logic are the same;
only the processes differ (``airflow standalone`` forces LocalExecutor, so it cannot be
used here).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO

import requests
from sqlalchemy.engine import make_url

from tests.e2e.standalone import VENV_BIN, Standalone, _healthy, _is_zombie, free_port

#: The suite's PostgreSQL server (CI: scripts/ci_postgres.sh prints this URL).
DEFAULT_PG_URL = "postgresql+psycopg2://crmsync:crmsync@127.0.0.1:5432/crmsync"


def pg_server_url() -> str:
    return os.environ.get("CRMSYNC_PG_URL") or DEFAULT_PG_URL


def pg_reachable(url: str) -> bool:
    import psycopg2

    u = make_url(url)
    try:
        psycopg2.connect(
            host=u.host,
            port=u.port or 5432,
            user=u.username,
            password=u.password,
            dbname=u.database,
            connect_timeout=3,
        ).close()
    except psycopg2.OperationalError:
        return False
    return True


@contextlib.contextmanager
def scratch_pg_database(server_url: str) -> Iterator[str]:
    """A new empty database on the server of ``server_url`` (its role needs CREATEDB, as
    scripts/ci_postgres.sh grants); yields its SQLAlchemy URL, drops it on exit."""
    import psycopg2

    u = make_url(server_url)
    name = f"crmsync_celery_{secrets.token_hex(4)}"
    admin = dict(host=u.host, port=u.port or 5432, user=u.username, password=u.password, dbname="postgres")

    def execute(sql: str) -> None:
        con = psycopg2.connect(**admin)
        try:
            con.autocommit = True  # CREATE/DROP DATABASE refuse to run in a transaction
            with con.cursor() as cur:
                cur.execute(sql)
        finally:
            con.close()

    execute(f"CREATE DATABASE \"{name}\" TEMPLATE template0 ENCODING 'UTF8'")
    try:
        yield u.set(database=name).render_as_string(hide_password=False)
    finally:
        execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    """Debian's redis-server on a free loopback port (no RDB/AOF files); yields its URL."""
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    args = [
        binary,
        "--bind",
        "127.0.0.1",
        "--port",
        str(port),
        "--dir",
        str(workdir),
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
        "--protected-mode",
        "yes",
    ]
    with open(workdir / "redis.out", "wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        import redis

        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=2)
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(redis.RedisError):
                if client.ping():
                    break
            assert proc.poll() is None, (workdir / "redis.out").read_text(errors="replace")[-2000:]
            assert time.monotonic() < deadline, "redis-server did not answer in 30 s"
            time.sleep(0.2)
        client.close()
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def _store_conn(db_url: str) -> str:
    """AIRFLOW_CONN_CRMSYNC_STORE for ``db_url``, as tests/conftest.py builds it."""
    u = make_url(db_url)
    fields = {
        "conn_type": "postgres",
        "host": u.host,
        "port": u.port or 5432,
        "login": u.username,
        "password": u.password,
        "schema": u.database,
    }
    return json.dumps(fields)


class CeleryStack(Standalone):
    """Airflow on CeleryExecutor with ``workers`` Celery workers; a context manager."""

    def __init__(
        self,
        home: Path,
        db_url: str,
        broker_url: str,
        extra_env: Mapping[str, str] | None = None,
        workers: int = 2,
        concurrency: int = 2,
    ) -> None:
        super().__init__(home, extra_env)
        self.db_url = db_url
        self.worker_names = [f"worker{i + 1}" for i in range(workers)]
        self.env.update(
            {
                "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": db_url,
                "AIRFLOW_CONN_CRMSYNC_STORE": _store_conn(db_url),
                # One api-server serves both the REST API and the Execution API (PostgreSQL
                # has no file lock to deadlock on, see standalone.py), as in the compose file.
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base_url}/execution/",
                "AIRFLOW__CELERY__BROKER_URL": broker_url,
                # psycopg2 named: SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3.
                "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + db_url,
                "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(concurrency),
                "AIRFLOW__CORE__PARALLELISM": str(2 * workers * concurrency),
                **(extra_env or {}),
            }
        )
        self.out_dir = self.home / "out"
        self.output_path = self.out_dir / "scheduler.out"
        self.execution_output_path = self.out_dir / "api-server.out"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._files: list[IO[bytes]] = []

    def commands(self) -> dict[str, list[str]]:
        airflow = str(VENV_BIN / "airflow")
        cmds = {
            "api-server": [airflow, "api-server", "--host", "127.0.0.1", "--port", str(self.api_port)],
            "scheduler": [airflow, "scheduler"],
            "dag-processor": [airflow, "dag-processor"],
            "triggerer": [airflow, "triggerer"],
        }
        for name in self.worker_names:
            # Own Celery node name and pid file (both default to one per machine); no log
            # server (one port per machine; the logs are files in the shared AIRFLOW_HOME).
            cmds[name] = [
                airflow,
                "celery",
                "worker",
                "--celery-hostname",
                f"{name}@%h",
                "--pid",
                str(self.home / f"{name}.pid"),
                "--skip-serve-logs",
            ]
        return cmds

    def start(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        migrate = subprocess.run(
            [str(VENV_BIN / "airflow"), "db", "migrate"],
            cwd=self.home,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert migrate.returncode == 0, migrate.stdout[-3000:] + migrate.stderr[-3000:]
        for name, cmd in self.commands().items():
            out = open(self.out_dir / f"{name}.out", "ab")  # noqa: SIM115 (closed in stop())
            self._files.append(out)
            self.procs[name] = subprocess.Popen(
                cmd,
                cwd=self.home,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.proc = self.procs["scheduler"]  # what Standalone.stop() waits for

    def session_pids(self) -> list[int]:
        """Every live process of every component's session (task processes included)."""
        sids = {p.pid for p in self.procs.values()}
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    if os.getsid(int(entry.name)) in sids and not _is_zombie(int(entry.name)):
                        pids.append(int(entry.name))
        return pids

    def stop(self, grace: float = 5.0) -> None:
        try:
            super().stop(grace)
        finally:
            for out in self._files:
                out.close()

    def output(self, name: str) -> str:
        with contextlib.suppress(OSError):
            return (self.out_dir / f"{name}.out").read_text(errors="replace")
        return ""

    def wait_healthy(self, timeout: float = 240.0) -> None:
        """api-server, scheduler, triggerer, dag-processor healthy and every worker ready."""
        deadline = time.monotonic() + timeout
        while True:
            for name, proc in self.procs.items():
                assert proc.poll() is None, f"{name} exited ({proc.returncode}):\n{self.output(name)[-6000:]}"
            with contextlib.suppress(requests.RequestException):
                r = self._session.get(f"{self.base_url}/api/v2/monitor/health", timeout=5)
                ready = [n for n in self.worker_names if " ready." in self.output(n)]
                if r.ok and _healthy(r.json()) and len(ready) == len(self.worker_names):
                    return
            assert time.monotonic() < deadline, f"not healthy after {timeout:.0f}s:\n" + "\n".join(
                f"--- {n}\n{self.output(n)[-1500:]}" for n in self.procs
            )
            time.sleep(1)

    def tasks_received(self) -> dict[str, int]:
        """{worker: Celery tasks it received} from each worker's output."""

        def received(line: str) -> bool:
            return "execute_workload[" in line and "received" in line

        return {n: sum(map(received, self.output(n).splitlines())) for n in self.worker_names}
