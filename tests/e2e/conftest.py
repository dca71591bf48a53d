"""End-to-end fixtures: a migrated metadata DB, both sandboxes on loopback, a flow runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from sqlalchemy import delete

ROOT = Path(__file__).resolve().parents[2]
SEEDS = ROOT / "sandbox" / "seed"
CB_KEY = "sandbox_api_key"
CRM_TOKEN = "sandbox_token"


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """`airflow db migrate` once per session: Airflow's tables and, through our DB manager, ours."""
    out = subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]


@pytest.fixture
def store(airflow_db: None) -> Any:
    """The link store engine, emptied before each test."""
    from crmsync.store.engine import store_engine
    from crmsync.store.schema import TABLES

    engine = store_engine()
    with engine.begin() as conn:
        for table in TABLES:
            conn.execute(delete(table))
    return engine


@dataclass
class Sandboxes:
    cb_url: str
    crm_url: str

    # -- Chargebee ---------------------------------------------------------------
    def cb(self, method: str, path: str, **kw: Any) -> Any:
        r = requests.request(method, f"{self.cb_url}/api/v2/{path}", auth=(CB_KEY, ""), timeout=10, **kw)
        r.raise_for_status()
        return r.json()

    def cb_customers(self) -> list[dict[str, Any]]:
        out, offset = [], None
        while True:
            params: dict[str, Any] = {"limit": 100, "include_deleted": "true"}
            if offset:
                params["offset"] = offset
            page = self.cb("GET", "customers", params=params)
            out += [e["customer"] for e in page["list"]]
            offset = page.get("next_offset")
            if not offset:
                return out

    # -- Customcrm ---------------------------------------------------------------
    def crm(self, method: str, path: str, **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {CRM_TOKEN}", **kw.pop("headers", {})}
        r = requests.request(method, f"{self.crm_url}/{path}", headers=headers, timeout=10, **kw)
        r.raise_for_status()
        return r.json() if r.content else None

    def crm_contacts(self) -> list[dict[str, Any]]:
        out, cursor = [], None
        while True:
            params: dict[str, Any] = {"limit": 100, "include_deleted": "true"}
            if cursor:
                params["cursor"] = cursor
            page = self.crm("GET", "contacts", params=params)
            out += page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                return out

    def faults(self, which: str, **settings: Any) -> None:
        base = self.cb_url if which == "chargebee" else self.crm_url
        requests.post(f"{base}/_sandbox/faults", json=settings, timeout=10).raise_for_status()

    def set_order_management(self, setting: str) -> None:
        """The Chargebee site's order management (``current``, the default, or
        ``legacy``), then a reset: the seed is reloaded under it."""
        requests.post(
            f"{self.cb_url}/_sandbox/config", json={"order_management": setting}, timeout=10
        ).raise_for_status()
        requests.post(f"{self.cb_url}/_sandbox/reset", json={}, timeout=10).raise_for_status()

    def stats(self, which: str) -> Any:
        base = self.cb_url if which == "chargebee" else self.crm_url
        return requests.get(f"{base}/_sandbox/stats", timeout=10).json()


@pytest.fixture
def sandboxes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Sandboxes]:
    """Both sandboxes, freshly seeded, on ephemeral loopback ports; connections point at them."""
    from sandbox.chargebee.server import serve_in_thread as serve_cb
    from sandbox.customcrm.server import serve_in_thread as serve_crm

    with ExitStack() as stack:
        _, cb_url = stack.enter_context(
            serve_cb(tmp_path / "cb.json", port=0, seed_path=SEEDS / "chargebee.json")
        )
        _, crm_url = stack.enter_context(
            serve_crm(tmp_path / "crm.json", port=0, seed_path=SEEDS / "customcrm.json")
        )
        monkeypatch.setenv(
            "AIRFLOW_CONN_CHARGEBEE_DEFAULT",
            json.dumps(
                {
                    "conn_type": "chargebee",
                    "host": "sandbox",
                    "password": CB_KEY,
                    "extra": {"base_url": f"{cb_url}/api/v2", "rate_limit_per_minute": 100000},
                }
            ),
        )
        monkeypatch.setenv(
            "AIRFLOW_CONN_CUSTOMCRM_DEFAULT",
            json.dumps({"conn_type": "customcrm", "host": crm_url, "password": CRM_TOKEN}),
        )
        yield Sandboxes(cb_url.rstrip("/"), crm_url.rstrip("/"))


@pytest.fixture(scope="session")
def dags(airflow_db: None) -> dict[str, Any]:
    from scripts.runner import load_dags

    return load_dags(ROOT / "dags")


@pytest.fixture
def run_flow(dags: dict[str, Any], store: Any, sandboxes: Sandboxes) -> Any:
    from scripts.runner import run_flow as _run

    def run(dag_id: str = "contact_customer", **conf: Any) -> Any:
        return _run(dags[dag_id], conf)

    return run


@pytest.fixture
def legacy_orders(tmp_path: Path, store: Any, sandboxes: Sandboxes) -> Any:
    """order_order on a site with legacy order management, explicitly: the sandbox set to
    ``order_management: legacy`` and reset (its seed then has a paid invoice, INV-1011,
    without an order, as legacy sites could), and a DAG of the mapping with
    ``chargebee.create: legacy_order_management``. Returns ``run()`` for that DAG."""
    from crmsync.flows.factory import build_dag

    from scripts.runner import run_flow as _run
    from tests.legacy_orders import write_legacy_order_order

    sandboxes.set_order_management("legacy")
    dag = build_dag(write_legacy_order_order(tmp_path / "legacy_mappings"))

    def run(**conf: Any) -> Any:
        return _run(dag, conf)

    return run
