"""``python -m sandbox.chargebee`` - run the Chargebee sandbox in the foreground.

Options fall back to environment variables so docker-compose / CI can configure the
server without a command line: ``CB_SANDBOX_HOST``, ``CB_SANDBOX_PORT``,
``CB_SANDBOX_STATE``, ``CB_SANDBOX_SEED``, ``CB_SANDBOX_API_KEY``,
``CB_SANDBOX_RATE_LIMIT``, ``CB_SANDBOX_BLOCK_SECONDS``, ``CB_SANDBOX_LIST_LAG``,
``CB_SANDBOX_IDEMPOTENCY_TTL``, ``CB_SANDBOX_API_KEY_NAME``, ``CB_SANDBOX_ORDER_MANAGEMENT``,
``CB_SANDBOX_CUSTOMER_PURGE_SECONDS``, ``CB_SANDBOX_FAULTS`` (JSON, same shape as ``POST /_sandbox/faults``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sandbox.chargebee.server import (
    DEFAULT_API_KEY,
    DEFAULT_API_KEY_NAME,
    DEFAULT_HOST,
    DEFAULT_IDEMPOTENCY_TTL,
    DEFAULT_PORT,
    DEFAULT_SEED,
    DEFAULT_STATE,
    ChargebeeSandboxServer,
    create_server,
)
from sandbox.common.faults import FaultConfig


def _env(name: str, default: Any) -> Any:
    value = os.environ.get(name)
    return default if value in (None, "") else value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox.chargebee",
        description="Local Chargebee API v2 sandbox (see docs/contracts.md section 1).",
    )
    parser.add_argument("--host", default=_env("CB_SANDBOX_HOST", DEFAULT_HOST))
    parser.add_argument("--port", type=int, default=int(_env("CB_SANDBOX_PORT", DEFAULT_PORT)))
    parser.add_argument(
        "--state",
        default=_env("CB_SANDBOX_STATE", DEFAULT_STATE),
        help="JSON state file (created if missing)",
    )
    parser.add_argument(
        "--seed",
        default=_env("CB_SANDBOX_SEED", None),
        help=f"seed JSON loaded only when the state file does not exist (default: {DEFAULT_SEED} if present)",
    )
    parser.add_argument("--api-key", default=_env("CB_SANDBOX_API_KEY", DEFAULT_API_KEY))
    parser.add_argument(
        "--api-key-name",
        default=_env("CB_SANDBOX_API_KEY_NAME", DEFAULT_API_KEY_NAME),
        help=f"API key name: created_by of orders made through the API (default: {DEFAULT_API_KEY_NAME})",
    )
    parser.add_argument(
        "--idempotency-ttl",
        type=float,
        default=float(_env("CB_SANDBOX_IDEMPOTENCY_TTL", DEFAULT_IDEMPOTENCY_TTL)),
        help="seconds an idempotency key is remembered (default: 1800, Chargebee's documented 30 minutes)",
    )
    parser.add_argument(
        "--rate-limit-per-minute",
        type=int,
        default=int(_env("CB_SANDBOX_RATE_LIMIT", 0)),
        help="requests per minute before 429 (0 = off; Chargebee test sites allow 150)",
    )
    parser.add_argument("--block-seconds", type=float, default=float(_env("CB_SANDBOX_BLOCK_SECONDS", 60.0)))
    parser.add_argument(
        "--list-lag-seconds",
        type=float,
        default=float(_env("CB_SANDBOX_LIST_LAG", 0.0)),
        help="hide records changed in the last N seconds from list calls (Chargebee list lag)",
    )
    parser.add_argument(
        "--persist-interval",
        type=float,
        default=_env("CB_SANDBOX_PERSIST_INTERVAL", None),
        help="0 = save the state file after every write, N = at most every N s (default: by size)",
    )
    parser.add_argument(
        "--order-management",
        choices=["current", "legacy"],
        default=_env("CB_SANDBOX_ORDER_MANAGEMENT", "current"),
        help="current (default; POST /orders refused, paid invoices get their orders) or legacy",
    )
    parser.add_argument(
        "--customer-purge-seconds",
        type=float,
        default=float(_env("CB_SANDBOX_CUSTOMER_PURGE_SECONDS", 300.0)),
        help="seconds from a customer delete to its purge (Chargebee: 'a few minutes'; default 300)",
    )
    parser.add_argument("--faults", default=_env("CB_SANDBOX_FAULTS", ""), help="fault JSON")
    parser.add_argument("--quiet", action="store_true", help="no access log")
    return parser.parse_args(argv)


def build(args: argparse.Namespace) -> ChargebeeSandboxServer:
    """Create the server described by ``args`` (not started)."""
    seed = args.seed
    if seed is None and Path(DEFAULT_SEED).exists():
        seed = DEFAULT_SEED
    faults = FaultConfig.from_dict(json.loads(args.faults)) if args.faults else None
    return create_server(
        args.state,
        host=args.host,
        port=args.port,
        seed=seed,
        api_key=args.api_key,
        api_key_name=args.api_key_name,
        idempotency_ttl=args.idempotency_ttl,
        rate_limit_per_minute=args.rate_limit_per_minute,
        block_seconds=args.block_seconds,
        faults=faults,
        list_lag_seconds=args.list_lag_seconds,
        persist_interval=None if args.persist_interval is None else float(args.persist_interval),
        access_log=not args.quiet,
        order_management=args.order_management,
        customer_purge_seconds=args.customer_purge_seconds,
    )


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    args = parse_args(argv)
    server = build(args)

    def _stop(signum: int, _frame: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    key_note = "default key" if args.api_key == DEFAULT_API_KEY else "custom key"
    logging.getLogger("sandbox.chargebee").info(
        "Chargebee sandbox on %s (state %s, %s, rate limit %s)",
        server.api_url,
        args.state,
        key_note,
        f"{args.rate_limit_per_minute}/min" if args.rate_limit_per_minute else "off",
    )
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.stopping.set()
        server.server_close()
        server.state.close()
        logging.getLogger("sandbox.chargebee").info("Chargebee sandbox stopped; state saved")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
