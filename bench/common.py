"""Shared plumbing of the benchmarks: the Airflow environment, sizes, tables, results.

``setup_env`` must run before anything imports Airflow: like ``tests/conftest.py`` it
gives the run its own AIRFLOW_HOME and SQLite metadata database (migrated once by
``airflow db migrate``, which also creates the link store's tables through the
crmsync DB manager), and points the ``crmsync_store`` connection at that database.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MAPPINGS = ROOT / "include" / "mappings"
RESULTS_DIR = ROOT / "var" / "bench"


@dataclass
class Verdict:
    """One target of issue 5: met or not, and by how much."""

    target: str
    met: bool | None  # None: not measured at this size
    measured: str
    note: str = ""

    def line(self) -> str:
        mark = {True: "MET", False: "MISSED", None: "n/a"}[self.met]
        return f"[{mark:6}] {self.target}: {self.measured}" + (f" ({self.note})" if self.note else "")


@dataclass
class Result:
    """What one benchmark measured: tables (printed), verdicts, free-form notes."""

    name: str
    title: str
    tables: list[tuple[str, list[str], list[list[Any]]]] = field(default_factory=list)
    verdicts: list[Verdict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def table(self, title: str, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        self.tables.append((title, list(header), [list(r) for r in rows]))

    def verdict(self, target: str, met: bool | None, measured: str, note: str = "") -> None:
        self.verdicts.append(Verdict(target, met, measured, note))

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "seconds": round(self.seconds, 1),
            "tables": [{"title": t, "header": h, "rows": r} for t, h, r in self.tables],
            "verdicts": [v.__dict__ for v in self.verdicts],
            "notes": self.notes,
            "data": self.data,
        }


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.3f}" if abs(value) < 1 else f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def render_table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[fmt(c) for c in row] for row in rows]
    widths = [len(h) for h in header]
    for row in cells:
        for i, c in enumerate(row):
            widths[i] = max(widths[i], len(c))
    sep = "  "
    lines = [title, sep.join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append(sep.join("-" * w for w in widths))
    for row in cells:
        lines.append(
            sep.join(c.rjust(w) if _numeric(c) else c.ljust(w) for c, w in zip(row, widths, strict=True))
        )
    return "\n".join(lines)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(fmt(c).replace("|", "\\|") for c in row) + " |")
    return "\n".join(lines)


def _numeric(text: str) -> bool:
    t = text.replace(",", "").replace(".", "").replace("-", "").replace("%", "").replace("x", "")
    return t.isdigit()


def print_result(result: Result) -> None:
    print()
    print("=" * 100)
    print(f"{result.name}: {result.title}   ({result.seconds:.0f} s)")
    print("=" * 100)
    for title, header, rows in result.tables:
        print()
        print(render_table(title, header, rows))
    if result.verdicts:
        print()
        print("Targets:")
        for v in result.verdicts:
            print("  " + v.line())
    for n in result.notes:
        print("  note: " + n)
    sys.stdout.flush()


def save_result(result: Result, tag: str) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{result.name}{tag}.json"
    path.write_text(json.dumps(result.to_json(), indent=1, default=str), encoding="utf-8")
    return path


# --------------------------------------------------------------------------- environment


@dataclass
class BenchEnv:
    """A private Airflow home, its migrated SQLite DB and the flow under test."""

    workdir: Path
    flow: str
    large: bool
    keep: bool = False
    db_path: Path = field(init=False)
    template_db: Path = field(init=False)

    def __post_init__(self) -> None:
        self.db_path = self.workdir / "airflow" / "airflow.db"
        self.template_db = self.workdir / "airflow-template.db"

    @property
    def mapping_file(self) -> Path:
        return MAPPINGS / f"{self.flow}.yaml"

    def path(self, *parts: str) -> Path:
        p = self.workdir.joinpath(*parts)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def fresh_db(self) -> None:
        """Start a benchmark on an empty link store (a copy of the freshly migrated DB)."""
        from crmsync.store.engine import store_engine

        store_engine.cache_clear()
        for suffix in ("", "-wal", "-shm"):
            Path(str(self.db_path) + suffix).unlink(missing_ok=True)
        shutil.copyfile(self.template_db, self.db_path)

    def cleanup(self) -> None:
        if not self.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)


def setup_env(flow: str, large: bool, workdir: str | None = None, keep: bool = False) -> BenchEnv:
    """Set the Airflow environment (before Airflow is imported) and migrate the DB."""
    wd = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="crmsync-bench-"))
    wd.mkdir(parents=True, exist_ok=True)
    env = BenchEnv(wd.resolve(), flow, large, keep)
    home = wd / "airflow"
    home.mkdir(parents=True, exist_ok=True)
    os.environ.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__DATABASE__EXTERNAL_DB_MANAGERS": "crmsync.store.db_manager.LinkStoreDBManager",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{env.db_path}",
            "AIRFLOW__LOGGING__LOGGING_LEVEL": os.environ.get("CRMSYNC_BENCH_LOG_LEVEL", "WARNING"),
            "AIRFLOW_CONN_CRMSYNC_STORE": json.dumps({"conn_type": "sqlite", "host": str(env.db_path)}),
            "CRMSYNC_TASK_RETRIES": "0",
            "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p),
        }
    )
    for var in ("CRMSYNC_MAPPINGS_DIR", "AIRFLOW_CONN_CHARGEBEE_DEFAULT", "AIRFLOW_CONN_CUSTOMCRM_DEFAULT"):
        os.environ.pop(var, None)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    for stale in (env.db_path, env.template_db):  # a reused --workdir starts empty too
        for suffix in ("", "-wal", "-shm"):
            Path(str(stale) + suffix).unlink(missing_ok=True)
    started = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        cwd=ROOT,
    )
    if out.returncode != 0:
        raise RuntimeError("airflow db migrate failed:\n" + out.stdout[-3000:] + out.stderr[-3000:])
    shutil.copyfile(env.db_path, env.template_db)
    print(f"bench: AIRFLOW_HOME={home} (db migrated in {time.monotonic() - started:.1f} s)", flush=True)
    return env


def set_connections(
    cb_url: str,
    crm_url: str,
    *,
    cb_rate_per_minute: int = 0,
    cb_max_workers: int | None = None,
    conn_suffix: str = "DEFAULT",
) -> dict[str, str]:
    """Point the Chargebee / Customcrm connections at sandboxes (returns the env vars set).

    ``cb_rate_per_minute`` 0 turns the client-side budget off (sandbox without limit).
    """
    extra: dict[str, Any] = {"base_url": f"{cb_url}/api/v2", "rate_limit_per_minute": cb_rate_per_minute}
    if cb_max_workers is not None:
        extra["max_workers"] = cb_max_workers
    values = {
        f"AIRFLOW_CONN_CHARGEBEE_{conn_suffix}": json.dumps(
            {"conn_type": "chargebee", "host": "sandbox", "password": "sandbox_api_key", "extra": extra}
        ),
        f"AIRFLOW_CONN_CUSTOMCRM_{conn_suffix}": json.dumps(
            {"conn_type": "customcrm", "host": crm_url, "password": "sandbox_token"}
        ),
    }
    os.environ.update(values)
    return values


def pages(n: int, size: int = 100) -> int:
    """List calls needed to read ``n`` records (an empty result still costs one call)."""
    return max(1, math.ceil(n / size))


def ratio(a: float, b: float) -> float:
    return float("nan") if not b else a / b
