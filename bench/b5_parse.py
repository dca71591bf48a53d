"""Benchmark 5: DAG parse time, and no network or database access at parse time.

* ``airflow dags report -o json`` on ``dags/`` (the per-file parse duration Airflow
  itself measures), for the mapping files in ``include/mappings`` and for a folder of
  six flows (the product's six; flows without a mapping file yet are copies of existing
  ones under other names);
* a ``DagBag`` load of ``dags/`` in a fresh process with every socket, ``sqlite3``,
  ``psycopg2`` and SQLAlchemy connection wrapped (:mod:`bench._parse_probe`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import MAPPINGS, ROOT, BenchEnv, Result
from bench.flows import Flow

NAME = "parse"
TITLE = "DAG parse time, and no network/DB at parse"
PRODUCT_FLOWS = (
    "contact_customer",
    "customer_business_entity",
    "quote_order",
    "user_order",
    "order_order",
    "product_item",
)


def _duration(text: str) -> float:
    """``0:00:00.150502`` → seconds."""
    h, m, s = text.split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)


def _report(mappings: Path) -> tuple[list[dict[str, Any]], float]:
    env = {**os.environ, "CRMSYNC_MAPPINGS_DIR": str(mappings)}
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "airflow", "dags", "report", "-o", "json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
    )
    wall = time.perf_counter() - started
    match = re.search(r"^\[.*\]$", out.stdout, re.MULTILINE)
    if out.returncode != 0 or not match:
        raise RuntimeError(f"airflow dags report failed:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}")
    return json.loads(match.group(0)), wall


def _probe(mappings: Path) -> dict[str, Any]:
    env = {**os.environ, "CRMSYNC_MAPPINGS_DIR": str(mappings)}
    out = subprocess.run(
        [sys.executable, "-m", "bench._parse_probe", str(ROOT / "dags")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
    )
    for line in out.stdout.splitlines():
        if line.startswith("BENCH_PARSE "):
            return dict(json.loads(line[len("BENCH_PARSE ") :]))
    raise RuntimeError(f"parse probe failed:\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")


def _six_flows(env: BenchEnv) -> Path:
    """A mapping folder with the product's six flows; missing ones are renamed copies."""
    import yaml

    folder = env.path("parse", "six", "x").parent
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    existing = sorted(MAPPINGS.glob("*.yaml"))
    for i, flow in enumerate(PRODUCT_FLOWS):
        src = MAPPINGS / f"{flow}.yaml"
        if src.exists():
            shutil.copyfile(src, folder / src.name)
            continue
        data = yaml.safe_load(existing[i % len(existing)].read_text(encoding="utf-8"))
        data["flow"] = flow
        (folder / f"{flow}.yaml").write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return folder


def run(env: BenchEnv, flow: Flow) -> Result:
    res = Result(NAME, TITLE)
    six = _six_flows(env)
    rows = []
    totals: dict[str, float] = {}
    for label, folder in (("include/mappings", MAPPINGS), ("six flows", six)):
        report, wall = _report(folder)
        for entry in report:
            seconds = _duration(entry["duration"])
            totals[label] = totals.get(label, 0.0) + seconds
            rows.append([label, entry["file"], int(entry["dag_num"]), int(entry["task_num"]), seconds, wall])
    res.table(
        "airflow dags report (duration = Airflow's own measure of the file's parse)",
        ["mappings", "file", "DAGs", "tasks", "parse s", "CLI process s"],
        rows,
    )
    probes = {label: _probe(folder) for label, folder in (("include/mappings", MAPPINGS), ("six flows", six))}
    res.table(
        "DagBag load in a fresh process (Airflow already imported), with network/DB watched",
        [
            "mappings",
            "DAGs",
            "DagBag load s",
            "import errors",
            "network accesses",
            "DB accesses",
            "from DAG code",
        ],
        [
            [
                label,
                len(p["dags"]),
                p["dagbag_s"],
                len(p["import_errors"]),
                sum(a["kind"] == "network" for a in p["accesses"]),
                sum(a["kind"] == "database" for a in p["accesses"]),
                sum(a["from_dag_code"] for a in p["accesses"]),
            ]
            for label, p in probes.items()
        ],
    )
    accesses = [a for p in probes.values() for a in p["accesses"]]
    if accesses:
        res.table(
            "Accesses seen while parsing",
            ["kind", "detail", "from DAG/crmsync code", "where"],
            [
                [a["kind"], a["detail"], a["from_dag_code"], " <- ".join(reversed(a["stack"][-3:]))]
                for a in accesses[:20]
            ],
        )
    errors = {k: v for p in probes.values() for k, v in p["import_errors"].items()}
    for k, v in errors.items():
        res.notes.append(f"import error in {k}: {v[-300:]}")
    n_real = len(probes["include/mappings"]["dags"])
    res.verdict(
        "all flows' DAGs parse in under one second in total",
        totals["include/mappings"] < 1.0 and totals["six flows"] < 1.0 and not errors,
        f"{n_real} flow(s) of include/mappings: {totals['include/mappings']:.2f} s; six flows: "
        f"{totals['six flows']:.2f} s (airflow dags report)",
    )
    res.verdict(
        "no network or database access at parse time",
        not accesses and all(p["watch_works"] for p in probes.values()),
        f"{len(accesses)} access(es) seen (the watch saw its canary connections: "
        f"{all(p['watch_works'] for p in probes.values())})"
        + (f", {sum(a['from_dag_code'] for a in accesses)} from DAG/crmsync code" if accesses else ""),
    )
    res.data.update({"totals": totals, "probes": probes})
    return res
