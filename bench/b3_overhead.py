"""Benchmark 3: the overhead of the package and Airflow over the floor of the HTTP calls.

Two identical pairs of sandboxes (no rate limit, no latency) hold N records per side,
half of them matching by email. On one, :func:`bench.tightloop.tight_loop` makes the
calls a sync needs, one after the other. On the other, the flow's DAG runs through
Airflow (``dag.test()`` in a process of its own: a DagRun in the metadata DB, all six
tasks). Ratio = the DAG run's wall time ÷ the loop's; also with the process start-up
(Python, Airflow imports, DAG parse) counted, and per task.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from typing import Any

from bench.common import ROOT, BenchEnv, Result, ratio, set_connections
from bench.flows import Flow, generate
from bench.sandboxes import CallCounts, start_pair
from bench.steps import TASKS
from bench.tightloop import tight_loop

NAME = "overhead"
TITLE = "Overhead over the floor (full DAG run through Airflow vs a tight loop of the same calls)"


def _dag_run(env: BenchEnv, flow: Flow, conf: dict[str, Any]) -> tuple[dict[str, Any], float]:
    mappings = env.path("overhead", "mappings", "x").parent
    shutil.rmtree(mappings, ignore_errors=True)
    mappings.mkdir(parents=True)
    shutil.copyfile(flow.mapping_file, mappings / flow.mapping_file.name)
    penv = {**os.environ, "CRMSYNC_MAPPINGS_DIR": str(mappings)}
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "bench._dagrun", str(ROOT / "dags"), flow.name, "--conf", json.dumps(conf)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=penv,
    )
    wall = time.perf_counter() - started
    for line in out.stdout.splitlines():
        if line.startswith("BENCH_DAGRUN "):
            return json.loads(line[len("BENCH_DAGRUN ") :]), wall
    raise RuntimeError(f"dag run failed (exit {out.returncode}):\n{out.stdout[-2000:]}\n{out.stderr[-3000:]}")


def run(env: BenchEnv, flow: Flow) -> Result:
    n = 10_000  # the size, also the default (about two minutes)
    res = Result(NAME, TITLE)
    ds = generate(flow, n)
    cb_seed, crm_seed = ds.write_seeds(env.path("overhead", "seed"))

    def loop() -> tuple[float, dict[str, int], dict[str, CallCounts]]:
        with start_pair(cb_seed, crm_seed) as sb:
            started = time.perf_counter()
            calls = tight_loop(flow, sb.cb.url, sb.crm.url)
            seconds = time.perf_counter() - started
            stats = {"chargebee": CallCounts.of(sb.cb.stats()), "customcrm": CallCounts.of(sb.crm.stats())}
        return seconds, calls, stats

    # The floor is measured before and after the DAG run, and averaged: the machine's load
    # (other jobs) drifts, and this keeps the ratio from depending on when it was sampled.
    loop_before, loop_calls, loop_stats = loop()
    env.fresh_db()
    with start_pair(cb_seed, crm_seed) as sb:
        set_connections(sb.cb.url, sb.crm.url)
        report, wall = _dag_run(env, flow, {"approve_large_change": True})
        flow_stats = {"chargebee": CallCounts.of(sb.cb.stats()), "customcrm": CallCounts.of(sb.crm.stats())}
    if report["state"] != "success":
        raise RuntimeError(f"the DAG run ended {report['state']}: {report['tasks']}")
    loop_after, _, _ = loop()
    loop_s = (loop_before + loop_after) / 2

    calls_loop = sum(c.total() for c in loop_stats.values())
    calls_flow = sum(c.total() for c in flow_stats.values())
    task_sum = sum(float(t["seconds"] or 0) for t in report["tasks"].values())
    res.table(
        f"N = {n:,} records per side ({len(ds.pairs):,} matching pairs), sandboxes without limit or latency",
        ["what", "seconds", "HTTP calls", "calls/s", "÷ loop"],
        [
            ["tight loop (floor), mean of 2", loop_s, calls_loop, calls_loop / loop_s, 1.0],
            ["  before the DAG run", loop_before, None, None, ratio(loop_before, loop_s)],
            ["  after the DAG run", loop_after, None, None, ratio(loop_after, loop_s)],
            [
                "DAG run: dag.test() (six tasks)",
                report["run_s"],
                calls_flow,
                calls_flow / report["run_s"],
                ratio(report["run_s"], loop_s),
            ],
            ["  sum of the task durations", task_sum, None, None, ratio(task_sum, loop_s)],
            ["  + process start, imports, DAG parse", wall, None, None, ratio(wall, loop_s)],
        ],
    )
    res.table(
        "DAG run per task",
        ["task", "state", "seconds", "share of the run"],
        [
            [
                t,
                report["tasks"].get(t, {}).get("state"),
                report["tasks"].get(t, {}).get("seconds"),
                f"{100 * ratio(float(report['tasks'].get(t, {}).get('seconds') or 0), report['run_s']):.0f}%",
            ]
            for t, _, _ in TASKS
        ],
    )
    res.table(
        "Calls by side and kind (loop vs DAG run)",
        ["side", "kind", "loop", "DAG run"],
        [
            [side, kind, loop_stats[side].kinds().get(kind, 0), flow_stats[side].kinds().get(kind, 0)]
            for side in ("chargebee", "customcrm")
            for kind in sorted(set(loop_stats[side].kinds()) | set(flow_stats[side].kinds()))
        ],
    )
    r = ratio(report["run_s"], loop_s)
    res.verdict(
        "DAG run ÷ tight loop <= 1.5",
        r <= 1.5,
        f"{report['run_s']:.1f} s ÷ {loop_s:.1f} s = {r:.2f} "
        f"(with process start and parse: {ratio(wall, loop_s):.2f})",
    )
    if calls_flow != calls_loop:
        res.notes.append(
            f"the DAG run made {calls_flow} calls, the loop {calls_loop}: the ratio compares unequal work"
        )
    res.data.update(
        {
            "n": n,
            "loop_s": loop_s,
            "loop_before_s": loop_before,
            "loop_after_s": loop_after,
            "dag": report,
            "wall": wall,
            "loop_calls": loop_calls,
            "flow_calls": calls_flow,
        }
    )
    return res
