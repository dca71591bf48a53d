"""``python -m sandbox.customcrm``: run the Customcrm reference server in the foreground.

Defaults come from the contract (127.0.0.1:8601, token ``sandbox_token``, state in
``var/sandbox/customcrm.json``, seeded from ``sandbox/seed/customcrm.json`` the first
time), each overridable by a flag or a ``CUSTOMCRM_SANDBOX_*`` environment variable so
docker-compose can configure it without a command line.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path
from types import FrameType

from sandbox.customcrm.server import DEFAULT_HOST, DEFAULT_PORT, DEFAULT_TOKEN, make_server

DEFAULT_SEED = Path(__file__).resolve().parent.parent / "seed" / "customcrm.json"
DEFAULT_STATE = Path("var/sandbox/customcrm.json")


def _env(name: str, default: str) -> str:
    return os.environ.get(f"CUSTOMCRM_SANDBOX_{name}", default)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m sandbox.customcrm", description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=_env("HOST", DEFAULT_HOST))
    parser.add_argument("--port", type=int, default=int(_env("PORT", str(DEFAULT_PORT))))
    parser.add_argument(
        "--state",
        type=Path,
        default=Path(_env("STATE", str(DEFAULT_STATE))),
        help="state file (created on first start)",
    )
    parser.add_argument(
        "--seed",
        default=_env("SEED", str(DEFAULT_SEED)),
        help="seed file loaded when the state file does not exist; 'none' starts empty",
    )
    parser.add_argument("--token", default=_env("TOKEN", DEFAULT_TOKEN), help="accepted bearer token")
    parser.add_argument(
        "--rate-limit-per-minute",
        type=int,
        default=int(_env("RATE_LIMIT", "0")),
        help="API requests allowed per sliding minute (0 = unlimited)",
    )
    parser.add_argument(
        "--flush-interval",
        type=float,
        default=float(_env("FLUSH_INTERVAL", "0")),
        help="seconds between state-file writes (0 = write after every change)",
    )
    parser.add_argument("--log-level", default=_env("LOG_LEVEL", "INFO"))
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    seed = None if str(args.seed).lower() in ("", "none") else Path(args.seed)
    server = make_server(
        args.state,
        host=args.host,
        port=args.port,
        seed_path=seed,
        token=args.token,
        rate_limit_per_minute=args.rate_limit_per_minute,
        flush_interval=args.flush_interval,
    )

    def _stop(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)  # docker stop: flush and exit cleanly
    logging.getLogger("sandbox.customcrm").info(
        "Customcrm sandbox on %s (state %s, seed %s)", server.base_url, args.state, seed
    )
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.app.stopping.set()
        server.server_close()
        server.app.store.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
