"""``python -m bench._parse_probe DAGS_FOLDER``: parse the DAG folder and watch for I/O.

Airflow is imported first (its own start-up is not the DAG files' business); then every
way out of the process is wrapped: sockets (connect, DNS), ``sqlite3.connect``,
``psycopg2.connect`` and SQLAlchemy pool connections and statements. A ``DagBag`` then
loads the folder. Prints one JSON line: the parse time, DagBag's per-file stats, and
every network or database access seen during the parse with the code that made it.
"""

from __future__ import annotations

import contextlib
import json
import socket
import sqlite3
import sys
import time
import traceback
from typing import Any

ACCESSES: list[dict[str, Any]] = []


def _record(kind: str, detail: str) -> None:
    frames = traceback.extract_stack()[:-2]
    mine = [
        f"{f.filename}:{f.lineno} {f.name}"
        for f in frames
        if "/dags/" in f.filename or "crmsync" in f.filename
    ]
    ACCESSES.append(
        {
            "kind": kind,
            "detail": detail[:200],
            "from_dag_code": bool(mine),
            "stack": mine[-6:] or [f"{f.filename}:{f.lineno} {f.name}" for f in frames[-6:]],
        }
    )


def _install() -> None:
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_create = socket.create_connection
    real_getaddrinfo = socket.getaddrinfo
    real_sqlite = sqlite3.connect

    def connect(self: socket.socket, address: Any) -> Any:
        if self.family != socket.AF_UNIX:
            _record("network", f"socket connect {address}")
        return real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> Any:
        if self.family != socket.AF_UNIX:
            _record("network", f"socket connect_ex {address}")
        return real_connect_ex(self, address)

    def create_connection(address: Any, *a: Any, **kw: Any) -> Any:
        _record("network", f"create_connection {address}")
        return real_create(address, *a, **kw)

    def getaddrinfo(host: Any, *a: Any, **kw: Any) -> Any:
        _record("network", f"getaddrinfo {host}")
        return real_getaddrinfo(host, *a, **kw)

    def sqlite_connect(*a: Any, **kw: Any) -> Any:
        _record("database", f"sqlite3.connect {a[:1]}")
        return real_sqlite(*a, **kw)

    socket.socket.connect = connect  # type: ignore[method-assign]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign]
    socket.create_connection = create_connection  # type: ignore[assignment]
    socket.getaddrinfo = getaddrinfo  # type: ignore[assignment]
    sqlite3.connect = sqlite_connect  # type: ignore[assignment]
    try:
        import psycopg2

        real_pg = psycopg2.connect

        def pg_connect(*a: Any, **kw: Any) -> Any:
            _record("database", "psycopg2.connect")
            return real_pg(*a, **kw)

        psycopg2.connect = pg_connect
    except ImportError:
        pass
    from sqlalchemy import event
    from sqlalchemy.engine import Engine
    from sqlalchemy.pool import Pool

    event.listen(Pool, "checkout", lambda *a: _record("database", "SQLAlchemy pool checkout"))
    event.listen(
        Engine, "before_cursor_execute", lambda conn, cur, stmt, *a: _record("database", f"SQL: {stmt[:120]}")
    )


def main() -> None:
    folder = sys.argv[1]
    t0 = time.perf_counter()
    import airflow  # noqa: F401
    from airflow.dag_processing.dagbag import DagBag

    t1 = time.perf_counter()
    _install()
    # Canary: the watch must see a connection made now, or its silence means nothing.
    sqlite3.connect(":memory:").close()
    with contextlib.suppress(OSError):
        socket.create_connection(("127.0.0.1", 9), timeout=0.2).close()
    watch_works = {a["kind"] for a in ACCESSES} == {"database", "network"}
    ACCESSES.clear()
    t2 = time.perf_counter()
    bag = DagBag(dag_folder=folder)
    t3 = time.perf_counter()
    stats = [
        {
            "file": s.file,
            "duration": s.duration.total_seconds()
            if hasattr(s.duration, "total_seconds")
            else float(s.duration),
            "dag_num": s.dag_num,
            "task_num": s.task_num,
        }
        for s in bag.dagbag_stats
    ]
    print(
        "BENCH_PARSE "
        + json.dumps(
            {
                "airflow_import_s": t1 - t0,
                "dagbag_s": t3 - t2,
                "stats": stats,
                "dags": sorted(bag.dag_ids),
                "import_errors": {k: str(v)[-500:] for k, v in bag.import_errors.items()},
                "accesses": ACCESSES,
                "watch_works": watch_works,
            },
            default=str,
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
