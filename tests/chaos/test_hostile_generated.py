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

import shutil
from pathlib import Path
from typing import Any

import pytest
from crmsync.flows.factory import build_dag
from crmsync.flows.runner import run_flow as run_dag
from hypothesis import given
from hypothesis import strategies as st

from tests.chaos import generated as gen
from tests.chaos import hostile
from tests.chaos.generated import CB, CRM, Flow, Rec
from tests.chaos.hostile import PROBLEM_KINDS, fresh_id, reason_problems

pytestmark = pytest.mark.e2e


def _flows() -> list[Any]:
    out = []
    for path in gen.mapping_files():
        flow = gen.load(path)
        marks = []
        if not flow.plantable():
            marks.append(
                pytest.mark.skip(
                    reason=f"{flow.name}: no record syncs alone (no side creates for it, or it waits "
                    "for another flow's link); its hostile input is in its own test file"
                )
            )
        out.append(pytest.param(flow, id=flow.name, marks=marks))
    return out


FLOWS = _flows()


@pytest.fixture
def run_this(request: Any, store: Any, sandboxes: Any, tmp_path: Path, monkeypatch: Any) -> Any:
    """Runs the flow's DAG. A flow defined only by a test mapping is added the way a new
    flow is deployed: its file joins the product's mapping files in the folder the DAG file
    reads (``CRMSYNC_MAPPINGS_DIR``), nothing else."""
    flow: Flow = request.getfixturevalue("flow")
    path = flow.path
    if path.parent != gen.PRODUCT_MAPPINGS:
        folder = tmp_path / "mappings"
        folder.mkdir()
        for p in [*gen.PRODUCT_MAPPINGS.glob("*.yaml"), path]:
            shutil.copy(p, folder / p.name)
        monkeypatch.setenv("CRMSYNC_MAPPINGS_DIR", str(folder))
        path = folder / path.name
    dag = build_dag(path)
    return lambda: run_dag(dag)


def wipe(sb: Any, store: Any, flow: Flow) -> None:
    hostile.wipe(sb, store, crm=(flow.resource(CRM),), cb=(flow.resource(CB),))


def plant(sb: Any, flow: Flow, recs: list[Rec]) -> None:
    crm = [r for r in recs if r.side == CRM]
    ids = hostile.plant(sb, CRM, flow.resource(CRM), [gen.crm_body(flow, r.values) for r in crm])
    for r, rid in zip(crm, ids, strict=True):
        r.id = rid
    cb = [r for r in recs if r.side == CB]
    for r in cb:
        r.id = r.id or fresh_id("gh")  # never reuse an id: idempotency keys derive from it
    hostile.plant(sb, CB, flow.resource(CB), [gen.cb_body(flow, r) for r in cb])


def fix(sb: Any, flow: Flow, r: Rec) -> None:
    """What a person does after reading the reason: correct the one field, in the UI (API)."""
    assert r.field and r.id
    value = gen.fixed_value(flow, r)
    r.values[r.field] = value
    f = flow.mapping.field(r.field)
    if r.side == CRM:
        sb.crm("PATCH", f"{flow.resource(CRM)}/{r.id}", json={f.customcrm: value})
    elif flow.resource(CB) in gen.CB_NO_PUBLIC_UPDATE:  # Chargebee's UI
        hostile.plant(sb, CB, flow.resource(CB), [gen.cb_body(flow, r)])
    else:
        path, data = gen.cb_fix_request(flow, r, value)
        sb.cb("POST", path, data=data)


def _good_problems(flow: Flow, r: Rec, mine: dict[str, Any], theirs: dict[str, Any]) -> list[str]:
    problems = [
        f"{k} differs: {r.side}={mine[k]!r} other side={theirs[k]!r}" for k in mine if mine[k] != theirs[k]
    ]
    if not r.twin:
        planted = gen.own_view(flow, r)
        problems += [
            f"{k} changed on its own side: {mine[k]!r} != {want!r}"
            for k, want in planted.items()
            if mine[k] != want
        ]
    return problems


def check_batch(sb: Any, store: Any, flow: Flow, recs: list[Rec], run: Any) -> list[str]:
    problems: list[str] = [] if run.ok else [f"run failed: {run.failed_tasks}"]
    held = hostile.held(store, flow.name)
    links = hostile.links(store, flow.name)
    by_cb = {v: k for k, v in links.items()}
    now = {
        side: {hostile.record_id(side, x): x for x in hostile.admin_records(sb, side, flow.resource(side))}
        for side in (CRM, CB)
    }
    for r in recs:
        assert r.id
        shown = repr(r.values.get(r.field or ""))[:60]
        what = f"{r.side} {r.id} ({r.defect or 'good'} {r.field or ''}: {shown})"
        hold = held.get((r.side, r.id))
        other = links.get(r.id) if r.side == CRM else by_cb.get(r.id)
        if r.defect:
            if hold is None:
                problems.append(f"{what}: not quarantined")
            else:
                names = gen.names_of(flow, flow.mapping.field(r.field or ""))
                problems += reason_problems(what, hold[1], r.id, names)
            if other is not None:
                problems.append(f"{what}: a bad record was linked")
            continue
        if hold is not None and hold[0] in PROBLEM_KINDS:
            problems.append(f"{what}: a good record is held: {hold}")
        if other is None:
            problems.append(f"{what}: a good record was not synced ({hold})")
            continue
        side_of_other = CB if r.side == CRM else CRM
        mine = gen.view(flow, r.side, now[r.side][r.id])
        theirs = gen.view(flow, side_of_other, now[side_of_other][other])
        problems += [f"{what}: {p}" for p in _good_problems(flow, r, mine, theirs)]
    return problems


@pytest.mark.parametrize("flow", FLOWS)
@hostile.BATCH_SETTINGS
@given(data=st.data())
def test_generated_hostile_batch_bad_held_good_synced_fixed_released(
    flow: Flow, run_this: Any, sandboxes: Any, store: Any, data: Any
) -> None:
    recs = data.draw(gen.batches(flow), label="batch")
    wipe(sandboxes, store, flow)
    plant(sandboxes, flow, recs)
    problems = check_batch(sandboxes, store, flow, recs, run_this())
    assert not problems, "\n".join(problems)

    candidates = [r for r in recs if gen.fixable(flow, r)]
    victim = candidates[data.draw(st.integers(0, len(candidates) - 1), label="victim")]
    what = f"{victim.side} {victim.id} ({victim.defect} {victim.field})"
    fix(sandboxes, flow, victim)
    victim.defect = None  # from now on it must behave as a good record
    problems = check_batch(sandboxes, store, flow, recs, run_this())
    assert not problems, f"after fixing {what}:\n" + "\n".join(problems)
