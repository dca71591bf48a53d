#!/usr/bin/env python
"""Run sync flows once through Airflow and print their summaries (``make run`` / ``make sync``).

    python scripts/run_flows.py --all            # every flow, in dependency order
    python scripts/run_flows.py --flow contact_customer [--dry-run] [--full-resync]
    python scripts/run_flows.py --all --verbose  # with Airflow's full task logs
    python scripts/run_flows.py --all --reconcile  # write nothing; report where the sides disagree

Quiet by default: one progress line per task as it runs (records done of total, writes per
minute, seconds waited for the rate budget), then the summaries; a failed run says which
task failed, why, and the fix. The last line of ``--flow`` output is the run summary as one
JSON object (with ``state``, ``failed_tasks`` and ``failures``). Exits 1 if any DAG run failed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _quiet() -> None:
    """Airflow's logs at WARNING; the crmsync progress lines (and failures) still printed."""
    # Airflow reads its log level when first imported (below): its in-process API
    # server's per-task INFO lines are then left out too.
    os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "WARNING"
    logging.getLogger().setLevel(logging.WARNING)


class _Progress(logging.Handler):
    """Prints each crmsync progress line once, whatever Airflow does with the root logger."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            print(f"  {record.getMessage()}", flush=True)
        except Exception:  # a broken pipe must not fail the run
            self.handleError(record)


def _sandbox_connections() -> None:
    """The sandbox connections in the metadata DB when absent (never overwritten), also when
    this script is run without ``make``; ``CRMSYNC_SANDBOX_CONNECTIONS=0`` skips it."""
    if os.environ.get("CRMSYNC_SANDBOX_CONNECTIONS", "1") == "0":
        return
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from sandbox_connections import ensure
    finally:
        sys.path.pop(0)
    try:
        ensure(quiet=True)
    except Exception as exc:  # e.g. a database not migrated yet: the runs below say more
        print(f"connections: sandbox connections not checked ({type(exc).__name__}); run `make migrate`")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--all", action="store_true")
    group.add_argument("--flow")
    parser.add_argument("--dry-run", action="store_true")
    parser.add_argument("--full-resync", action="store_true")
    parser.add_argument("--approve-large-change", action="store_true")
    parser.add_argument(
        "--reconcile",
        action="store_true",
        help="write nothing: read both sides in full and report differences, unlinked records and "
        "duplicates (a JSON file per flow, see --report-dir)",
    )
    parser.add_argument(
        "--report-dir",
        default=os.environ.get("CRMSYNC_REPORT_DIR", str(ROOT / "var" / "reconcile")),
        help="where --reconcile writes its JSON reports (default var/reconcile)",
    )
    parser.add_argument("--verbose", action="store_true", help="show Airflow's full task logs")
    parser.add_argument("--quiet", action="store_true", help="(the default; kept for old scripts)")
    args = parser.parse_args()

    if not args.verbose:
        _quiet()
    from crmsync.flows.summary import render_failures, render_summary
    from runner import load_dags, ordered, run_flow, run_record

    if not args.verbose:
        progress = logging.getLogger("crmsync.progress")
        progress.setLevel(logging.INFO)
        progress.propagate = False
        progress.addHandler(_Progress())

    _sandbox_connections()
    dags = load_dags(os.environ.get("AIRFLOW__CORE__DAGS_FOLDER", ROOT / "dags"))
    if args.flow and args.flow not in dags:
        print(f"unknown flow {args.flow!r}; known: {', '.join(sorted(dags))}", file=sys.stderr)
        return 2
    conf = {
        "dry_run": args.dry_run,
        "full_resync": args.full_resync,
        "approve_large_change": args.approve_large_change,
        "reconcile": args.reconcile,
    }
    results = []
    for dag_id in [args.flow] if args.flow else ordered(list(dags)):
        print(f"{dag_id}: running", flush=True)
        r = run_flow(dags[dag_id], conf)
        print(f"{dag_id}: {'OK' if r.ok else 'FAILED'}", flush=True)
        results.append(r)
    print()
    print("=" * 78)
    for r in results:
        status = "OK" if r.ok else f"FAILED ({', '.join(r.failed_tasks)})"
        print(f"{r.dag_id}: {status}")
        if r.summary:
            print(render_summary({**r.summary, "failures": r.failures}))
        elif r.failures:
            print(render_failures(r.failures))
        elif not r.ok:
            print("  no task recorded why; run again with --verbose (make run ARGS=--verbose)")
        if args.reconcile and r.summary and "reconciliation" in r.summary:
            _print_reconciliation(r, Path(args.report_dir))
        print("-" * 78)
    if args.flow:
        print(json.dumps(run_record(results[0]), sort_keys=True))
    return 0 if all(r.ok for r in results) else 1


#: lines of a reconciliation report printed per flow (the JSON file and the task log hold more)
RECONCILE_SHOWN = 30


def _print_reconciliation(r: Any, folder: Path) -> None:
    """The flow's reconciliation report: its first lines, and the JSON file it is written to."""
    from crmsync.engine.reconcile import report_lines

    report = r.summary["reconciliation"]
    folder.mkdir(parents=True, exist_ok=True)
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in r.run_id)
    path = folder / f"{r.dag_id}-{safe}.json"
    path.write_text(
        json.dumps(
            {"flow": r.dag_id, "run_id": r.run_id, "state": r.state, **report}, indent=2, sort_keys=True
        )
    )
    lines = report_lines(report)
    print("reconciliation (nothing was written):")
    for line in lines[:RECONCILE_SHOWN]:
        print(f"  {line}")
    if len(lines) > RECONCILE_SHOWN:
        print(f"  ... {len(lines) - RECONCILE_SHOWN} more lines in the file")
    print(f"reconciliation report: {path}")


if __name__ == "__main__":
    sys.exit(main())
