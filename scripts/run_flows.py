#!/usr/bin/env python
"""Run sync flows once through Airflow and print their summaries (``make run`` / ``make sync``).

    python scripts/run_flows.py --all            # every flow, in dependency order
    python scripts/run_flows.py --flow contact_customer [--dry-run] [--full-resync]

The last line of ``--flow`` output is the run summary as one JSON object. Exits 1 if
any DAG run failed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


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
    parser.add_argument("--quiet", action="store_true", help="hide Airflow's task logs")
    args = parser.parse_args()

    if args.quiet:
        # Airflow reads its log level when first imported (below): its in-process API
        # server's per-task INFO lines are then left out too.
        os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "WARNING"
        logging.disable(logging.WARNING)
    from crmsync.flows.runner import load_dags, ordered, run_flow
    from crmsync.flows.summary import render_summary

    dags = load_dags(os.environ.get("AIRFLOW__CORE__DAGS_FOLDER", ROOT / "dags"))
    if args.flow and args.flow not in dags:
        print(f"unknown flow {args.flow!r}; known: {', '.join(sorted(dags))}", file=sys.stderr)
        return 2
    conf = {
        "dry_run": args.dry_run,
        "full_resync": args.full_resync,
        "approve_large_change": args.approve_large_change,
    }
    results = []
    for dag_id in [args.flow] if args.flow else ordered(list(dags)):
        results.append(run_flow(dags[dag_id], conf))
    logging.disable(logging.NOTSET)
    print()
    print("=" * 78)
    for r in results:
        status = "OK" if r.ok else f"FAILED ({', '.join(r.failed_tasks)})"
        print(f"{r.dag_id}: {status}")
        if r.summary:
            print(render_summary(r.summary))
        print("-" * 78)
    if args.flow:
        r = results[0]
        print(
            json.dumps(r.summary or {"flow": r.dag_id, "run_id": r.run_id, "state": r.state}, sort_keys=True)
        )
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
