"""``python -m bench [NAME ...] [--large] [--flow FLOW]``: run the benchmarks of issue 5.

Names: calls, budget, overhead, memory, parse, linkstore, latency (default: all, in that
order). ``latency`` (issue 15) runs a real Airflow stack (scheduler, triggerer, ...) against
the sandboxes for about 9 minutes: edit-to-other-side latency and idle detection cost.
``--large`` uses the issue's full sizes (hours, not minutes); the default sizes finish in
about 25 minutes on a 2-core machine. Each benchmark prints its tables and targets, and
saves them as JSON under ``var/bench/`` (``python -m bench --markdown`` prints the last
results as Markdown, for ``bench/RESULTS.md``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path

from bench.common import RESULTS_DIR, Result, markdown_table, print_result, save_result, setup_env

ORDER = ("calls", "budget", "overhead", "memory", "parse", "linkstore", "latency")


def _module(name: str):  # type: ignore[no-untyped-def]
    import importlib

    return importlib.import_module(
        {
            "calls": "bench.b1_calls",
            "budget": "bench.b2_budget",
            "overhead": "bench.b3_overhead",
            "memory": "bench.b4_memory",
            "parse": "bench.b5_parse",
            "linkstore": "bench.b6_linkstore",
            "latency": "bench.b7_latency",
        }[name]
    )


def markdown(tag: str) -> str:
    out = []
    for name in ORDER:
        path = RESULTS_DIR / f"{name}{tag}.json"
        if not path.exists():
            continue
        r = json.loads(path.read_text(encoding="utf-8"))
        out.append(f"### {r['name']}: {r['title']} ({r['seconds']:.0f} s)\n")
        for t in r["tables"]:
            out.append(f"{t['title']}\n")
            out.append(markdown_table(t["header"], t["rows"]) + "\n")
        for v in r["verdicts"]:
            mark = {True: "MET", False: "MISSED", None: "n/a"}[v["met"]]
            out.append(
                f"- **{mark}** {v['target']}: {v['measured']}" + (f" ({v['note']})" if v["note"] else "")
            )
        for n in r["notes"]:
            out.append(f"- note: {n}")
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help=f"benchmarks to run: {', '.join(ORDER)} (default: all)"
    )
    parser.add_argument("--large", action="store_true", help="the issue's full sizes (slow)")
    parser.add_argument("--flow", default="contact_customer", help="flow (mapping file name) to benchmark")
    parser.add_argument("--workdir", default=None, help="keep temp files here (default: a new temp dir)")
    parser.add_argument("--keep", action="store_true", help="do not delete the work dir")
    parser.add_argument("--markdown", action="store_true", help="print the last saved results as Markdown")
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("CRMSYNC_BENCH_PG_URL"),
        help="linkstore: a scratch PostgreSQL database (SQLAlchemy URL) also to measure; its link-store "
        "tables are dropped and re-created (default: $CRMSYNC_BENCH_PG_URL)",
    )
    args = parser.parse_args(argv)
    tag = "-large" if args.large else ""
    if args.markdown:
        print(markdown(tag))
        return 0
    names = args.names or list(ORDER)
    unknown = [n for n in names if n not in ORDER]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(ORDER)}")
    if args.pg_url:
        os.environ["CRMSYNC_BENCH_PG_URL"] = args.pg_url
    env = setup_env(args.flow, args.large, args.workdir, args.keep)
    from bench.flows import Flow

    flow = Flow.load(args.flow, env.mapping_file)
    failed = []
    started = time.monotonic()
    try:
        for name in names:
            t0 = time.monotonic()
            load_before = os.getloadavg()
            print(
                f"\nbench: running {name} ({'large' if args.large else 'default'} sizes, flow {args.flow})",
                flush=True,
            )
            try:
                result: Result = _module(name).run(env, flow)
            except Exception:
                traceback.print_exc()
                failed.append(name)
                continue
            result.seconds = time.monotonic() - t0
            load_after = os.getloadavg()
            result.data["loadavg"] = {"before": load_before, "after": load_after, "cpus": os.cpu_count()}
            result.notes.append(
                f"load average (1 min) {load_before[0]:.2f} before, {load_after[0]:.2f} after, on "
                f"{os.cpu_count()} CPUs (it counts this benchmark's own processes too; see RESULTS.md "
                "for other jobs on the machine)"
            )
            print_result(result)
            save_result(result, tag)
    finally:
        env.cleanup()
    print(f"\nbench: done in {time.monotonic() - started:.0f} s; results in {Path(RESULTS_DIR)}")
    if failed:
        print(f"bench: FAILED: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
