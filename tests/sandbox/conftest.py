"""Fixtures for the sandbox tests.

``chargebee_sandbox`` starts a fresh Chargebee sandbox in-process on an ephemeral port
(state in a temp file, simulated clock) and stops it afterwards. Fixtures for other
sandboxes can live next to it; names are prefixed by the sandbox they start.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # `sandbox` is imported from the repo root, not installed
    sys.path.insert(0, str(REPO_ROOT))

from sandbox.chargebee.server import ChargebeeSandboxServer, running_sandbox  # noqa: E402
from sandbox.common.clock import Clock  # noqa: E402

CB_API_KEY = "sandbox_api_key"
T0 = 1_700_000_000.0


@dataclass
class CbSandbox:
    """A running Chargebee sandbox plus clients for its API and admin endpoints."""

    server: ChargebeeSandboxServer
    base_url: str
    state_path: Path
    clock: Clock
    api: httpx.Client
    admin: httpx.Client

    @property
    def api_url(self) -> str:
        return self.base_url + "/api/v2"

    def faults(self, **cfg: Any) -> dict[str, Any]:
        resp = self.admin.post("/faults", json=cfg)
        resp.raise_for_status()
        return resp.json()  # type: ignore[no-any-return]

    def records(self, resource: str) -> list[dict[str, Any]]:
        resp = self.admin.get(f"/records/{resource}")
        resp.raise_for_status()
        return resp.json()["records"]  # type: ignore[no-any-return]

    def put_records(self, resource: str, records: list[dict[str, Any]], **flags: Any) -> list[dict[str, Any]]:
        resp = self.admin.post(f"/records/{resource}", json={"records": records, **flags})
        resp.raise_for_status()
        return resp.json()["records"]  # type: ignore[no-any-return]

    def stats(self) -> dict[str, Any]:
        return self.admin.get("/stats").json()  # type: ignore[no-any-return]


@pytest.fixture
def chargebee_sandbox_factory(tmp_path: Path) -> Iterator[Any]:
    """Call ``factory(**create_server_kwargs)`` to start sandboxes; all are stopped at teardown.

    Defaults: state file in ``tmp_path``, simulated clock starting at ``T0`` (move it with
    ``sandbox.clock.advance(s)``).
    """
    stack: list[Any] = []

    def factory(**opts: Any) -> CbSandbox:
        state_path = Path(opts.pop("state_path", tmp_path / "chargebee.json"))
        clock = opts.pop("clock", None) or Clock(base=lambda: T0)
        cm = running_sandbox(state_path, clock=clock, **opts)
        server, base_url = cm.__enter__()
        api = httpx.Client(
            base_url=base_url + "/api/v2",
            auth=(opts.get("api_key", CB_API_KEY), ""),
            timeout=10,
            verify=False,
        )
        admin = httpx.Client(base_url=base_url + "/_sandbox", timeout=10, verify=False)
        stack.append((cm, api, admin))
        return CbSandbox(server, base_url, state_path, clock, api, admin)

    yield factory
    for cm, api, admin in reversed(stack):
        api.close()
        admin.close()
        cm.__exit__(None, None, None)


@pytest.fixture
def chargebee_sandbox(chargebee_sandbox_factory: Any) -> CbSandbox:
    """A fresh, empty Chargebee sandbox with no rate limit and no faults."""
    return chargebee_sandbox_factory()  # type: ignore[no-any-return]
