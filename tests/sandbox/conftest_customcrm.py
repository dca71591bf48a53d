"""Helpers to run the Customcrm reference server in-process for tests.

Plain helpers rather than fixtures (``tests/sandbox/conftest.py`` belongs to the
Chargebee sandbox); each test module wraps ``running_customcrm`` in its own fixture.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # `sandbox` is imported from the repo root, not installed
    sys.path.insert(0, str(REPO_ROOT))

from sandbox.customcrm.server import CustomcrmServer, serve_in_thread  # noqa: E402

CRM_TOKEN = "sandbox_token"
SEED_PATH = REPO_ROOT / "sandbox" / "seed" / "customcrm.json"


@dataclass
class CrmSandbox:
    """A running Customcrm server plus clients for its API and admin endpoints."""

    server: CustomcrmServer
    base_url: str
    state_path: Path
    api: httpx.Client
    admin: httpx.Client

    def faults(self, **cfg: Any) -> dict[str, Any]:
        resp = self.admin.post("/faults", json=cfg)
        resp.raise_for_status()
        return resp.json()  # type: ignore[no-any-return]

    def records(self, resource: str) -> list[dict[str, Any]]:
        resp = self.admin.get(f"/records/{resource}")
        resp.raise_for_status()
        return resp.json()["records"]  # type: ignore[no-any-return]

    def put_records(self, resource: str, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        resp = self.admin.post(f"/records/{resource}", json={"records": records})
        resp.raise_for_status()
        return resp.json()["records"]  # type: ignore[no-any-return]

    def stats(self) -> dict[str, Any]:
        return self.admin.get("/stats").json()  # type: ignore[no-any-return]

    def feed(self, resource: str, **params: Any) -> list[list[dict[str, Any]]]:
        """Every page of a list call, following ``next_cursor`` to the end."""
        pages: list[list[dict[str, Any]]] = []
        cursor: str | None = None
        while True:
            query = dict(params, **({"cursor": cursor} if cursor else {}))
            resp = self.api.get(f"/{resource}", params=query)
            resp.raise_for_status()
            body = resp.json()
            pages.append(body["items"])
            cursor = body["next_cursor"]
            if cursor is None:
                return pages


@contextmanager
def running_customcrm(state_path: Path, **opts: Any) -> Iterator[CrmSandbox]:
    """Start a server on an ephemeral port (``serve_in_thread`` options pass through)."""
    token = opts.get("token", CRM_TOKEN)
    with serve_in_thread(state_path, **opts) as (server, base_url):
        api = httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {token}"}, timeout=10)
        admin = httpx.Client(base_url=base_url + "/_sandbox", timeout=10)
        try:
            yield CrmSandbox(server, base_url, state_path, api, admin)
        finally:
            api.close()
            admin.close()
