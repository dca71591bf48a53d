"""update_links: finished plan rows → links, quarantine and audit (one transaction per chunk).

Orchestration only: read the links a chunk touches, convert the rows to the engine's
typed input, let :func:`crmsync.engine.settle.settle` decide (the rules are there), and
hand the :class:`~crmsync.engine.settle.Settlement` to the link store.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from crmsync.engine.plan import Op
from crmsync.engine.settle import (
    CurrentLink,
    FinishedRow,
    Hold,
    SideWrite,
    base_after,
    links_to_read,
    pending_after,
    restores_to_read,
    settle,
)
from crmsync.engine.status import HoldKind, WriteStatus
from crmsync.mapping.model import Mapping as FlowMapping
from crmsync.mapping.model import Side
from crmsync.store import approvals
from crmsync.store.links import LinkRow
from crmsync.store.plan import StoredPlanRow
from crmsync.store.repository import Repository, loads


def apply_plan_rows(mapping: FlowMapping, repo: Repository, run_id: str, rows: list[StoredPlanRow]) -> None:
    finished = [finished_row(row) for row in rows]
    # The links this chunk updates, read once before it (the chunk's writes are applied
    # together at the end, so every row sees the links as they were before the chunk).
    by_cb_id = {k: current_link(v) for k, v in repo.get_links_by_cb_id(links_to_read(finished)).items()}
    by_crm_id: dict[str, CurrentLink] = {}
    for crm_id in restores_to_read(finished):
        link = repo.get_link(crm_id=crm_id)
        if link is not None:
            by_crm_id[crm_id] = current_link(link)
    s = settle(mapping, finished, by_cb_id, by_crm_id)
    repo.apply(
        run_id,
        [r["id"] for r in rows],
        upsert_links=[asdict(u) for u in s.upserts],
        delete_links=s.deletes,  # type: ignore[arg-type]  # ids None only where the store ignores them
        hold=[asdict(h) for h in _undecided(mapping, repo, s.holds)],
        release=s.releases,
        audits=[asdict(a) for a in s.audits],
    )


def _undecided(mapping: FlowMapping, repo: Repository, holds: list[Hold]) -> list[Hold]:
    """The holds without those of held deletes a person decided while this run ran (after
    transform planned them as still held): holding again would overwrite the decision."""
    keys = [(h.side, h.record_id) for h in holds if h.kind == HoldKind.APPROVAL and h.side and h.record_id]
    if not keys:
        return holds
    decided = approvals.decisions(repo.engine, mapping.flow, keys)
    return [h for h in holds if h.kind != HoldKind.APPROVAL or (h.side, h.record_id) not in decided]


def side_write(row: StoredPlanRow, side: Side) -> SideWrite:
    """One side's write of a stored plan row (its JSON columns decoded, ``staged`` kept)."""
    if side is Side.CUSTOMCRM:
        op, status, rid, staged = row["crm_op"], row["crm_status"], row["crm_id"], row["crm_staged"]
        result, changes, error = row["crm_result"], row["crm_changes"], row["crm_error"]
    else:
        op, status, rid, staged = row["cb_op"], row["cb_status"], row["cb_id"], row["cb_staged"]
        result, changes, error = row["cb_result"], row["cb_changes"], row["cb_error"]
    return SideWrite(
        id=rid, op=op, status=status, result=loads(result), staged=staged, changes=loads(changes), error=error
    )


def finished_row(row: StoredPlanRow) -> FinishedRow:
    """A plan row as settle reads it."""
    return FinishedRow(
        id=row["id"],
        action=row["action"],
        crm=side_write(row, Side.CUSTOMCRM),
        cb=side_write(row, Side.CHARGEBEE),
        link_id=row["link_id"],
        held_side=row["held_side"],
        hold_kind=row["hold_kind"],
        reason=row["reason"],
        detail=loads(row["detail"]) or {},
        merged=loads(row["merged"]) or {},
    )


def current_link(link: LinkRow) -> CurrentLink:
    return CurrentLink(
        crm_id=link["crm_id"],
        cb_id=link["cb_id"],
        base=json.loads(link["base"]),
        crm_snapshot=json.loads(link["crm_snapshot"]),
        cb_snapshot=json.loads(link["cb_snapshot"]),
        crm_version=link["crm_version"],
        cb_version=link["cb_version"],
        crm_updated_at=link["crm_updated_at"],
        cb_updated_at=link["cb_updated_at"],
    )


# Row-shaped entry points of two settle rules, over partial rows of plain strings (kept for
# tests/unit/flows/test_pending_refs.py; the task reads StoredPlanRow through side_write).


def _side(row: Mapping[str, Any], prefix: str) -> SideWrite:
    op = row.get(f"{prefix}_op")
    status = row.get(f"{prefix}_status")
    return SideWrite(
        id=row.get(f"{prefix}_id"),
        op=None if op is None else Op(op),
        status=None if status is None else WriteStatus(status),
        result=loads(row.get(f"{prefix}_result")),
        staged=row.get(f"{prefix}_staged"),
        changes=loads(row.get(f"{prefix}_changes")),
        error=row.get(f"{prefix}_error"),
    )


def _pending_after(row: Mapping[str, Any], old: dict[str, str], values: dict[str, Any]) -> dict[str, str]:
    return pending_after(_side(row, "cb"), old, values)


def _base_after(
    mapping: FlowMapping,
    row: Mapping[str, Any],
    merged: dict[str, Any],
    crm_values: dict[str, Any],
    cb_values: dict[str, Any],
    cb_pending: dict[str, str] | None = None,
    old_base: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return base_after(
        mapping, _side(row, "crm"), _side(row, "cb"), merged, crm_values, cb_values, cb_pending, old_base
    )
