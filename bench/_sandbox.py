"""``python -m bench._sandbox chargebee|customcrm --seed FILE``: one sandbox for a benchmark.

The sandbox runs in its own process (so it does not share a GIL with the code being
measured), keeps its state in memory only (no per-write JSON save, which at 100,000
records would dominate every timing), binds a free port and prints ``READY <url>``.

It reads commands from stdin, one JSON object per line, and answers one line:

* ``{"cmd": "shift", "seconds": S}`` moves every record's timestamps S seconds into the
  past, as if the last writes had happened S seconds ago (models the hour between two
  scheduled runs without waiting for it);
* ``{"cmd": "count", "resource": R}`` answers the number of records.

End of stdin (the benchmark exited) stops the server.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from datetime import timedelta
from typing import Any


def _chargebee(args: argparse.Namespace) -> tuple[Any, Any]:
    from sandbox.chargebee.server import create_server

    server = create_server(
        None,
        host="127.0.0.1",
        port=0,
        seed=args.seed,
        rate_limit_per_minute=args.rate_limit,
        block_seconds=args.block_seconds,
    )

    def shift(seconds: float) -> int:
        n = 0
        with server.state.lock:
            for table in server.state.data["resources"].values():
                for rec in table.values():
                    for key in ("updated_at", "created_at", "occurred_at"):
                        if isinstance(rec.get(key), int):
                            rec[key] = rec[key] - int(seconds)
                    n += 1
        return n

    def count(resource: str) -> int:
        with server.state.lock:
            return sum(1 for r in server.state.table(resource).values() if not r.get("deleted"))

    return server, {"shift": shift, "count": count}


def _customcrm(args: argparse.Namespace) -> tuple[Any, Any]:
    from sandbox.customcrm.server import make_server
    from sandbox.customcrm.store import format_ts, parse_ts

    server = make_server(
        None, host="127.0.0.1", port=0, seed_path=args.seed, rate_limit_per_minute=args.rate_limit
    )
    store = server.app.store

    def shift(seconds: float) -> int:
        n = 0
        delta = timedelta(seconds=seconds)
        with store.lock:
            for resource, records in store._records.items():
                for rec in records.values():
                    for key in ("UpdatedAt", "CreatedAt"):
                        if rec.get(key):
                            rec[key] = format_ts(parse_ts(rec[key]) - delta)
                    n += 1
                store._index[resource] = sorted((r["UpdatedAt"], r["Id"]) for r in records.values())
        return n

    def count(resource: str) -> int:
        with store.lock:
            return sum(1 for r in store._records[resource].values() if not r["Deleted"])

    return server, {"shift": shift, "count": count}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench._sandbox")
    parser.add_argument("kind", choices=["chargebee", "customcrm"])
    parser.add_argument("--seed", default=None)
    parser.add_argument("--rate-limit", type=int, default=0)
    parser.add_argument("--block-seconds", type=float, default=60.0)
    args = parser.parse_args()
    server, commands = (_chargebee if args.kind == "chargebee" else _customcrm)(args)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)
    thread.start()
    print(f"READY {server.base_url}", flush=True)
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            msg = json.loads(line)
            if msg["cmd"] == "shift":
                answer: Any = {"ok": True, "records": commands["shift"](float(msg["seconds"]))}
            elif msg["cmd"] == "count":
                answer = {"ok": True, "count": commands["count"](msg["resource"])}
            else:
                answer = {"ok": False, "error": f"unknown command {msg['cmd']!r}"}
        except Exception as exc:  # answer, never die: the benchmark reads one line per command
            answer = {"ok": False, "error": repr(exc)}
        print(json.dumps(answer), flush=True)
    server.shutdown()


if __name__ == "__main__":
    main()
