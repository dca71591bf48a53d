"""Running a flow's six tasks: in this process, one subprocess per task, or through Airflow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.common import ROOT

#: (task id, step, side) in dependency order.
TASKS: tuple[tuple[str, str, str | None], ...] = (
    ("extract_customcrm", "extract", "customcrm"),
    ("extract_chargebee", "extract", "chargebee"),
    ("transform", "transform", None),
    ("upsert_chargebee", "upsert", "chargebee"),
    ("upsert_customcrm", "upsert", "customcrm"),
    ("update_links", "update_links", None),
)


class StepFailed(RuntimeError):
    pass


def run_inprocess(mapping_file: Path, run_id: str, params: dict[str, Any] | None = None) -> dict[str, float]:
    """All six task callables in order, in this process; seconds per task."""
    from crmsync.flows.tasks import run_step

    out: dict[str, float] = {}
    for task_id, step, side in TASKS:
        kwargs: dict[str, Any] = {"run_id": run_id, "params": dict(params or {})}
        if side:
            kwargs["side"] = side
        started = time.perf_counter()
        try:
            run_step(step, str(mapping_file), **kwargs)
        except Exception as exc:
            raise StepFailed(f"{task_id} of {run_id} failed: {type(exc).__name__}: {exc}") from exc
        out[task_id] = time.perf_counter() - started
    return out


@dataclass
class StepRun:
    task_id: str
    ok: bool
    seconds: float  # the task callable alone
    wall: float  # the whole process
    maxrss_mb: float  # peak RSS of the process (its VmHWM; see bench._step)
    error: str | None = None


def run_subprocess(
    task_id: str,
    step: str,
    side: str | None,
    mapping_file: Path,
    run_id: str,
    params: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
) -> StepRun:
    """One task in a process of its own, like a worker; its peak RSS (``VmHWM``)."""
    cmd = [sys.executable, "-m", "bench._step", step, str(mapping_file), "--run-id", run_id]
    cmd += ["--params", json.dumps(params or {})]
    if side:
        cmd += ["--side", side]
    started = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env or os.environ.copy()
    )
    out, err = _drain(proc)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    report: dict[str, Any] = {}
    for line in out.splitlines():
        if line.startswith("BENCH_STEP "):
            report = json.loads(line[len("BENCH_STEP ") :])
    ok = bool(report.get("ok")) and proc.returncode == 0
    error = report.get("error") or (None if ok else f"exit {proc.returncode}: {err[-2000:]}")
    # VmHWM from the child itself; ru_maxrss from wait4 only where /proc is missing (it
    # includes the parent's peak on Linux, see bench._step._vm_hwm_kb).
    peak_kb = report.get("hwm_kb") or usage.ru_maxrss
    return StepRun(task_id, ok, float(report.get("seconds", wall)), wall, peak_kb / 1024, error)


def _drain(proc: subprocess.Popen[str]) -> tuple[str, str]:
    """Read both pipes to the end without reaping the child (``wait4`` reaps it)."""
    import threading

    chunks: dict[str, list[str]] = {"out": [], "err": []}

    def pump(stream: Any, key: str) -> None:
        for line in stream:
            chunks[key].append(line)

    threads = [
        threading.Thread(target=pump, args=(proc.stdout, "out")),
        threading.Thread(target=pump, args=(proc.stderr, "err")),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return "".join(chunks["out"]), "".join(chunks["err"])


def run_all_subprocess(
    mapping_file: Path, run_id: str, params: dict[str, Any] | None = None, env: dict[str, str] | None = None
) -> list[StepRun]:
    runs = []
    for task_id, step, side in TASKS:
        r = run_subprocess(task_id, step, side, mapping_file, run_id, params, env)
        runs.append(r)
        if not r.ok:
            raise StepFailed(f"{task_id} of {run_id} failed: {r.error}")
    return runs


def summary(flow: str, run_id: str, store_conn: str = "crmsync_store") -> dict[str, Any] | None:
    from scripts.runner import read_summary

    return read_summary(run_id, flow, store_conn)
