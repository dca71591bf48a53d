"""Hostile input, generated per flow from its mapping file (see :mod:`tests.chaos.generated`).

One test per mapping file in ``include/mappings`` and ``tests/chaos/mappings``: a flow
gets it by existing. Each hypothesis example is one batch: the flow's resources and the
link store are emptied, the batch is planted through the sandboxes' admin endpoints
(which skip validation, so the bad data really is in the systems), the flow runs, then
one bad record is fixed as a person would and the flow runs again. Checked: every bad
record is held with a reason naming the record, the field and what to do, and is not
linked; every good record is linked, not held, equal on both sides and unchanged on its
own; the fixed record is released and synced.

A flow where no lone record can sync (neither side creates, or a record waits for
another flow's link) has nothing to plant here: its hostile input is in its own file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from crmsync.flows.factory import build_dag
from hypothesis import given
from hypothesis import strategies as st

from scripts.runner import run_flow as run_dag
from tests.chaos import generated as gen
from tests.chaos import hostile
from tests.chaos.generated import CB, Flow
from tests.e2e.test_contact_customer import writes

pytestmark = pytest.mark.e2e


def _flows() -> list[Any]:
    """The flows whose records sync alone (some side creates them, none waits for another
    flow's link); the others have their hostile input in their own test file, which
    :func:`test_every_flow_gets_hostile_input_tests` checks exists."""
    flows = [gen.load(path) for path in gen.mapping_files()]
    return [pytest.param(flow, id=flow.name) for flow in flows if flow.plantable()]


def test_every_flow_gets_hostile_input_tests() -> None:
    """A flow the generated suite cannot plant for alone has its own hostile-input file."""
    here = Path(__file__).parent
    for path in gen.mapping_files():
        flow = gen.load(path)
        if not flow.plantable():
            own = here / f"test_hostile_input_{flow.name}.py"
            assert own.exists(), f"{flow.name}: not generated (no record syncs alone) and no {own.name}"


FLOWS = _flows()


@pytest.fixture
def run_this(request: Any, store: Any, sandboxes: Any, tmp_path: Path, monkeypatch: Any) -> Any:
    """Runs the flow's DAG; a test flow is deployed first (:func:`generated.deploy`)."""
    flow: Flow = request.getfixturevalue("flow")
    dag = build_dag(gen.deploy(flow.path, tmp_path / "mappings", monkeypatch))
    return lambda: run_dag(dag)


@pytest.mark.parametrize("flow", FLOWS)
@hostile.BATCH_SETTINGS
@given(data=st.data())
def test_generated_hostile_batch_bad_held_good_synced_fixed_released(
    flow: Flow, run_this: Any, sandboxes: Any, store: Any, data: Any
) -> None:
    recs = data.draw(gen.batches(flow), label="batch")
    gen.wipe(sandboxes, store, flow)
    gen.plant(sandboxes, flow, recs)

    def fix(victim: gen.Rec) -> str:
        what = f"{victim.side} {victim.id} ({victim.defect} {victim.field})"
        gen.fix(sandboxes, flow, victim)
        victim.defect = None  # from now on it must behave as a good record
        return what

    cb_writes = writes(sandboxes)[CB]

    def check() -> list[str]:
        problems = gen.check_batch(sandboxes, store, flow, recs, run_this())
        if flow.read_only_cb() and writes(sandboxes)[CB] != cb_writes:
            problems.append(f"something was written to Chargebee: {flow.name} is read only there")
        return problems

    hostile.first_run_then_fix(
        check,
        [r for r in recs if gen.fixable(flow, r)],
        data.draw(st.integers(min_value=0), label="victim"),
        fix,
    )
