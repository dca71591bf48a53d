#!/usr/bin/env python
"""Chaos run for the six flows: faults, crashes, conflicts; prints one table.

    .venv/bin/python scripts/chaos.py                       # every flow, 2 seeds, a few minutes
    .venv/bin/python scripts/chaos.py --flow contact_customer --seeds 7 --rounds 12 --edits 40
    .venv/bin/python scripts/chaos.py --flow order_order --flow quote_order --kill-every 2

Per flow and seed: fresh sandboxes (seed data) on loopback and a fresh link store in a
throwaway Airflow home (SQLite; PostgreSQL with CRMSYNC_TEST_DB=postgres and
CRMSYNC_PG_URL, as the test suite), the flows it depends on and one clean baseline sync,
then ``--rounds`` rounds of seeded random edits on both sides followed by one sync run
with faults on (5xx, 429, dropped connections, lost responses, latency); every
``--kill-every``-th round a task is SIGKILLed in a subprocess (an upsert at a random
write; user_order, which writes nothing through the APIs: update_links) and rerun.
Then faults off and clean runs until the systems match the expected state computed by
``tests/chaos/harness.py`` (contact_customer) or ``tests/chaos/flows.py`` (the other
five, from their mapping files; their docstrings say how), and one idle run whose
writes are counted.

Columns: faults are what the sandboxes injected, by kind; kills = killed/attempted;
conflicts = audited/expected by the policy; converge = time and clean runs from faults
off to the expected state; idle writes = writes of a run after that (must be 0).
Task logs go to var/chaos/chaos-<time>.log; violations, if any, to stderr. Exit 1 when
any figure that must be zero is not.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("CRMSYNC_TEST_LOG_LEVEL", "WARNING")  # into the log file
import tests.conftest  # noqa: E402,F401  - the suite's hermetic Airflow environment (before Airflow)


@contextlib.contextmanager
def quiet(log_path: Path) -> Iterator[None]:
    """Send fds 1 and 2 (Airflow's task logs, structlog) to ``log_path`` meanwhile."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log_path, "a") as fh:
        os.dup2(fh.fileno(), 1)
        os.dup2(fh.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


#: the terminal's stderr, kept while fds 1 and 2 go to the log file
_TTY_ERR = os.fdopen(os.dup(2), "w", buffering=1)


def say(message: str) -> None:
    print(message, file=_TTY_ERR, flush=True)


#: contact_customer first (its deep model in harness.py), then the five of flows.py
FLOWS = (
    "contact_customer",
    "product_item",
    "customer_business_entity",
    "order_order",
    "quote_order",
    "user_order",
)


def run_one(
    args: argparse.Namespace, flow: str, seed: int, dags: dict[str, Any], store: Any, log_path: Path
) -> Any:
    """One flow, one seed: fresh sandboxes and an empty link store."""
    from crmsync.store.schema import TABLES
    from sqlalchemy import delete

    from sandbox.chargebee.server import serve_in_thread as serve_cb
    from sandbox.customcrm.server import serve_in_thread as serve_crm
    from tests.chaos.flows import run_flow_chaos
    from tests.chaos.harness import Api, Config, run_chaos
    from tests.e2e.conftest import CB_KEY, CRM_TOKEN, SEEDS, Sandboxes

    with tempfile.TemporaryDirectory(prefix="crmsync-chaos-") as tmp, contextlib.ExitStack() as stack:
        _, cb_url = stack.enter_context(
            serve_cb(Path(tmp) / "cb.json", port=0, seed_path=SEEDS / "chargebee.json")
        )
        _, crm_url = stack.enter_context(
            serve_crm(Path(tmp) / "crm.json", port=0, seed_path=SEEDS / "customcrm.json")
        )
        os.environ["AIRFLOW_CONN_CHARGEBEE_DEFAULT"] = json.dumps(
            {
                "conn_type": "chargebee",
                "host": "sandbox",
                "password": CB_KEY,
                "extra": {"base_url": f"{cb_url}/api/v2", "rate_limit_per_minute": 100000},
            }
        )
        os.environ["AIRFLOW_CONN_CUSTOMCRM_DEFAULT"] = json.dumps(
            {"conn_type": "customcrm", "host": crm_url, "password": CRM_TOKEN}
        )
        with store.begin() as conn:
            for t in TABLES:
                conn.execute(delete(t))
        kills = tuple(range(args.kill_every, args.rounds + 1, args.kill_every)) if args.kill_every else ()
        cfg = Config(
            seed=seed,
            rounds=args.rounds,
            edits_per_round=args.edits if flow == "contact_customer" else args.flow_edits,
            kill_rounds=kills,
            clean_runs=args.clean_runs,
        )
        if args.faults is not None:
            cfg.faults = args.faults
        t0 = time.monotonic()
        api = Api(Sandboxes(cb_url.rstrip("/"), crm_url.rstrip("/")))

        def log(s: str) -> None:
            say(f"  {flow} seed {seed} {time.monotonic() - t0:6.1f}s {s}")

        with quiet(log_path):
            if flow == "contact_customer":
                return run_chaos(api, store, dags[flow], cfg, log=log)
            return run_flow_chaos(api, store, dags, flow, cfg, log=log)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--flow", action="append", choices=FLOWS, help="a flow to run (repeatable; default: all six)"
    )
    parser.add_argument("--all-flows", action="store_true", help="every flow (the default)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--edits", type=int, default=25, help="edits per round (contact_customer)")
    parser.add_argument(
        "--flow-edits", type=int, default=12, help="edits per round for the other flows (less seed data)"
    )
    parser.add_argument(
        "--kill-every", type=int, default=3, help="SIGKILL a task every N-th round (0: never)"
    )
    parser.add_argument("--clean-runs", type=int, default=3, help="clean runs allowed to converge")
    parser.add_argument(
        "--faults", type=json.loads, default=None, help="JSON fault settings (see sandbox/common/faults.py)"
    )
    args = parser.parse_args()
    flows = list(FLOWS) if args.all_flows or not args.flow else list(dict.fromkeys(args.flow))

    out = subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], capture_output=True, text=True)
    if out.returncode:
        say(out.stdout[-3000:] + out.stderr[-3000:])
        return 2

    from tests.chaos.harness import table

    log_path = ROOT / "var" / "chaos" / f"chaos-{time.strftime('%Y%m%d-%H%M%S')}.log"
    say(f"chaos: Airflow home {os.environ['AIRFLOW_HOME']}, task logs in {log_path}")
    with quiet(log_path):
        from crmsync.flows.runner import load_dags
        from crmsync.store.engine import store_engine

        dags = load_dags(ROOT / "dags")
        store = store_engine()

    reports = []
    started = time.monotonic()
    for flow in flows:
        for seed in args.seeds:
            reports.append(run_one(args, flow, seed, dags, store, log_path))
    elapsed = time.monotonic() - started

    print(table(reports))
    kinds: Counter[str] = Counter()
    for r in reports:
        kinds.update(r.edits)
    print(
        f"({elapsed:.0f} s; edits by kind: " + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())) + ")"
    )
    bad = [v for r in reports for v in r.violations]
    for v in bad:
        say(v)
    failed = bad or any(r.idle_writes for r in reports)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
