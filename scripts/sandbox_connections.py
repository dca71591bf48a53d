#!/usr/bin/env python
"""Create the sandbox connections in Airflow's metadata DB, only where none exists (issue 14, item 3).

``make migrate`` (so ``make run``, ``make sync`` and ``make up``), ``scripts/standalone.sh``
and ``scripts/run_flows.py`` call this after ``airflow db migrate``. It adds
``chargebee_default`` and ``customcrm_default`` pointing at the local sandboxes (ports
``SANDBOX_CHARGEBEE_PORT`` / ``SANDBOX_CUSTOMCRM_PORT``), the way ``airflow connections
add`` does, so Admin → Connections lists them and an operator edits them there.

It never overwrites: a connection that exists (saved in the UI, by the CLI, by an earlier
run) is left exactly as it is, whatever it holds. ``CRMSYNC_SANDBOX_CONNECTIONS=0`` skips
the step altogether. An ``AIRFLOW_CONN_<ID>`` environment variable still works and wins
over the metadata DB (Airflow reads environment variables first); this script says so when
it sees one, because then an edit in the UI has no effect.

This is a command-line script, not task code: it may use Airflow's ORM (as the CLI does).

    python scripts/sandbox_connections.py [--quiet]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

_NOTE = "(created by crmsync's make; edit freely: never overwritten)"


def sandbox_connections() -> dict[str, dict[str, Any]]:
    """The two sandbox connections, as ``airflow connections add --conn-json`` takes them."""
    cb_port = os.environ.get("SANDBOX_CHARGEBEE_PORT", "8602")
    crm_port = os.environ.get("SANDBOX_CUSTOMCRM_PORT", "8601")
    return {
        "chargebee_default": {
            "conn_type": "chargebee",
            "description": f"The local Chargebee sandbox {_NOTE}",
            "host": "sandbox",
            "password": "sandbox_api_key",
            "extra": {"base_url": f"http://127.0.0.1:{cb_port}/api/v2", "rate_limit_per_minute": 600},
        },
        "customcrm_default": {
            "conn_type": "customcrm",
            "description": f"The local Customcrm sandbox {_NOTE}",
            "host": f"http://127.0.0.1:{crm_port}",
            "password": "sandbox_token",
        },
    }


def ensure(quiet: bool = False) -> dict[str, str]:
    """Add each sandbox connection the metadata DB lacks; returns ``{conn_id: "created" | "kept"}``.

    One transaction per connection; a concurrent creator (two ``make`` at once) makes the
    insert fail on the unique conn_id, which counts as "kept" (it exists: not ours to change).
    """
    # The ORM model, as `airflow connections add` uses it: airflow.sdk.Connection cannot
    # write to the metadata DB (a script, not task code: tests/unit/test_no_airflow_orm.py).
    from airflow.models import Connection
    from airflow.utils.session import create_session
    from sqlalchemy import select
    from sqlalchemy.exc import IntegrityError

    done: dict[str, str] = {}
    for conn_id, spec in sandbox_connections().items():
        try:
            with create_session() as session:
                query = select(Connection.id).where(Connection.conn_id == conn_id)  # noqa: AIR311
                exists = session.scalar(query.limit(1))
                if exists is None:
                    extra = spec.get("extra")
                    fields = {k: v for k, v in spec.items() if k != "extra"}
                    extra_json = json.dumps(extra) if extra else None
                    session.add(Connection(conn_id=conn_id, extra=extra_json, **fields))  # noqa: AIR311
                    done[conn_id] = "created"
                else:
                    done[conn_id] = "kept"
        except IntegrityError:
            done[conn_id] = "kept"
        _report(conn_id, done[conn_id], spec, quiet)
    return done


def _report(conn_id: str, outcome: str, spec: dict[str, Any], quiet: bool) -> None:
    """One line per connection (host only, never the key or token)."""
    where = spec.get("extra", {}).get("base_url") or spec["host"]
    if outcome == "created":
        print(
            f"connections: {conn_id} created in the metadata DB (sandbox {where}); "
            "edit it in Admin → Connections"
        )
    elif not quiet:
        print(f"connections: {conn_id} already in the metadata DB, left as it is")
    env = f"AIRFLOW_CONN_{conn_id.upper()}"
    if os.environ.get(env) and not quiet:
        print(f"connections: {env} is set in this environment: it wins over the metadata DB's {conn_id}")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quiet", action="store_true", help="print only the connections created")
    args = parser.parse_args()
    if os.environ.get("CRMSYNC_SANDBOX_CONNECTIONS", "1") == "0":
        if not args.quiet:
            print("connections: CRMSYNC_SANDBOX_CONNECTIONS=0, no sandbox connection created")
        return 0
    ensure(quiet=args.quiet)
    return 0


if __name__ == "__main__":
    sys.exit(main())
