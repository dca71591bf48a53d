"""store/runs.py: run rows and watermarks of one flow."""

from __future__ import annotations

from crmsync.mapping.model import Side
from crmsync.store.runs import RunStore
from sqlalchemy.engine import Engine

from tests.integration.store.helpers import FLOW, OTHER


def test_a_run_row_is_created_once_and_read_back_typed(engine: Engine) -> None:
    runs = RunStore(engine, FLOW)
    assert runs.get_run("r1") is None
    runs.begin_run("r1", {"dry_run": False})
    runs.begin_run("r1", {"dry_run": True})  # a rerun's task: the first params stay
    row = runs.get_run("r1")
    assert row is not None
    assert row["status"] == "running" and row["params"] == '{"dry_run": false}'
    assert row["run_id"] == "r1" and row["flow"] == FLOW and row["summary"] is None
    assert row["crm_next_watermark"] is None and row["started_at"] is not None
    assert RunStore(engine, OTHER).get_run("r1") is None


def test_set_run_and_read_summary(engine: Engine) -> None:
    runs = RunStore(engine, FLOW)
    runs.begin_run("r1", {})
    assert runs.read_summary("r1") is None
    runs.set_run("r1", status="planned", crm_next_watermark=10.5, cb_next_watermark=None)
    row = runs.get_run("r1")
    assert row is not None and row["status"] == "planned" and row["crm_next_watermark"] == 10.5
    runs.set_run("r1", status="finished", summary='{"created": 2}')
    assert runs.read_summary("r1") == {"created": 2}
    assert runs.read_summary("nope") is None
    assert RunStore(engine, OTHER).read_summary("r1") is None


def test_watermarks_are_set_then_moved_per_flow_and_side(engine: Engine) -> None:
    runs = RunStore(engine, FLOW)
    assert runs.get_watermark(Side.CUSTOMCRM) is None
    runs.commit_watermarks("r1", {Side.CUSTOMCRM: 100.0, Side.CHARGEBEE: None})
    assert runs.get_watermark(Side.CUSTOMCRM) == 100.0
    assert runs.get_watermark(Side.CHARGEBEE) is None  # None: left as it was
    runs.commit_watermarks("r2", {Side.CUSTOMCRM: 150.0, Side.CHARGEBEE: 7.0})
    assert runs.get_watermark(Side.CUSTOMCRM) == 150.0
    assert runs.get_watermark(Side.CHARGEBEE) == 7.0
    assert RunStore(engine, OTHER).get_watermark(Side.CUSTOMCRM) is None
