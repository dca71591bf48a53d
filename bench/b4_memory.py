"""Benchmark 4: flat memory. Peak RSS of each task of an initial sync at several sizes.

Each task runs in a process of its own (``python -m bench._step``, the task callable
``run_step`` as a worker calls it); its peak RSS is the child's ``VmHWM``, read by the
child at its end (``ru_maxrss`` is not used: on Linux a child started by ``vfork``/``exec``
inherits its parent's high-water mark in it). ``baseline`` is a process that does
everything a task does before its work (imports, mapping, link store check,
connections) and nothing else. The data:
N records per side, half matching by email (the initial sync writes about N records
to each side).
"""

from __future__ import annotations

from typing import Any

from bench.common import BenchEnv, Result, set_connections
from bench.flows import Flow, generate
from bench.sandboxes import start_pair
from bench.steps import TASKS, StepRun, run_subprocess

NAME = "memory"
TITLE = "Flat memory: peak RSS per task"
GROWTH_MB = 25.0  # "a small constant": what a few pages/batches of records may cost
LIMIT_MB = 300.0


def _one_size(env: BenchEnv, flow: Flow, n: int) -> dict[str, StepRun]:
    env.fresh_db()
    ds = generate(flow, n)
    cb_seed, crm_seed = ds.write_seeds(env.path("memory", str(n)))
    runs: dict[str, StepRun] = {}
    run_id = f"bench__memory_{n}"
    params = {"approve_large_change": True}
    with start_pair(cb_seed, crm_seed) as sb:
        set_connections(sb.cb.url, sb.crm.url)
        runs["baseline"] = run_subprocess("baseline", "baseline", None, flow.mapping_file, run_id, params)
        for task_id, step, side in TASKS:
            r = run_subprocess(task_id, step, side, flow.mapping_file, run_id, params)
            runs[task_id] = r
            if not r.ok:
                raise RuntimeError(f"N={n}: {task_id} failed: {r.error}")
            print(f"bench: memory N={n:,} {task_id}: {r.maxrss_mb:.0f} MB, {r.seconds:.1f} s", flush=True)
    return runs


def run(env: BenchEnv, flow: Flow) -> Result:
    sizes = [1_000, 10_000, 100_000] if env.large else [1_000, 10_000]
    res = Result(NAME, TITLE)
    by_size: dict[int, dict[str, StepRun]] = {n: _one_size(env, flow, n) for n in sizes}
    names = ["baseline", *[t for t, _, _ in TASKS]]
    header = ["task", *[f"RSS MB N={n:,}" for n in sizes], f"growth {sizes[0]:,}→{sizes[-1]:,}"]
    header += [f"seconds N={n:,}" for n in sizes]
    rows: list[list[Any]] = []
    worst_growth = 0.0
    worst_task = ""
    peak = 0.0
    for name in names:
        rss = [by_size[n][name].maxrss_mb for n in sizes]
        growth = rss[-1] - rss[0]
        if name != "baseline" and growth > worst_growth:
            worst_growth, worst_task = growth, name
        peak = max(peak, rss[-1])
        rows.append([name, *rss, growth, *[by_size[n][name].seconds for n in sizes]])
    res.table("Peak RSS per task (initial sync; N records per side, half matching)", header, rows)
    # "A small constant" over the whole range 1,000 → 100,000: measured with --large,
    # else the growth seen between the sizes run, extrapolated linearly to that range.
    span = 100_000 - sizes[0]
    growth_full = worst_growth * span / (sizes[-1] - sizes[0])
    measured = sizes[-1] >= 100_000
    res.verdict(
        f"no growth with N beyond a small constant (<= {GROWTH_MB:.0f} MB from 1,000 to 100,000)",
        growth_full <= GROWTH_MB,
        f"largest growth {worst_growth:.1f} MB from {sizes[0]:,} to {sizes[-1]:,} ({worst_task or 'none'}, "
        f"{1024 * worst_growth / (sizes[-1] - sizes[0]):.2f} KB per record)"
        + ("" if measured else f"; {growth_full:.0f} MB over 1,000 → 100,000 if it stays linear"),
    )
    if sizes[-1] >= 100_000:
        res.verdict(f"<= {LIMIT_MB:.0f} MB at 100,000", peak <= LIMIT_MB, f"largest peak {peak:.0f} MB")
    else:
        per_record = worst_growth / (sizes[-1] - sizes[0])
        projected = peak + per_record * (100_000 - sizes[-1])
        res.verdict(
            f"<= {LIMIT_MB:.0f} MB at 100,000",
            None,
            f"not measured at default sizes (run with --large); largest peak {peak:.0f} MB at {sizes[-1]:,}, "
            f"linear projection {projected:.0f} MB",
        )
    res.data["rss_mb"] = {n: {k: v.maxrss_mb for k, v in r.items()} for n, r in by_size.items()}
    res.data["seconds"] = {n: {k: v.seconds for k, v in r.items()} for n, r in by_size.items()}
    return res
