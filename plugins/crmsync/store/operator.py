"""What the Sync page (crmsync.ui) reads and the two writes an operator makes there.

Every SQL statement of the page lives here, as every other SQL of the sync lives in
``store/``. The page reaches the link store through its own connection (``crmsync_store``,
:func:`crmsync.store.engine.store_engine`), never through Airflow's ORM.

The operator's writes are deliberately small:

* **release** drops a hold: the quarantine row is deleted, so the next time an extract
  reads the record it is handled as any record is (matched, created, linked); nothing is
  written to either system now.
* **retry next run** sets ``retry_requested``: the next run stages the held copy again
  whatever the hold's kind (``invalid`` and ``rejected`` holds are otherwise retried only
  once the record changes), see :meth:`crmsync.store.staging.StagingStore.carry_quarantined`.

Deletes held for approval (kind ``approval``) are decided by
``crmsync.store.approvals.decide_delete``, not released or retried here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, desc, func, or_, select, update
from sqlalchemy.engine import Engine, RowMapping

from crmsync.engine.status import APPROVAL_KINDS as HOLD_APPROVAL_KINDS
from crmsync.engine.status import HoldKind
from crmsync.store.schema import audit, link, quarantine, run

#: hold kinds that wait on another record or flow (shown as "waiting", not as quarantine)
WAITING_KINDS = ("waiting", "ref_pending")
#: deletes held until a person approves or rejects them (store/approvals.py), and the
#: decided ones the next run carries out
APPROVAL_KIND = HoldKind.APPROVAL.value
APPROVAL_KINDS = tuple(k.value for k in HOLD_APPROVAL_KINDS)
#: audit kinds shown as conflicts and as deletes
CONFLICT_KINDS = ("conflict",)
DELETE_KINDS = ("delete", "unlink", "restore", "delete_approved", "delete_rejected")
#: rows a section lists at most (the page is for reading, not for exports)
LIMIT = 200


@dataclass(frozen=True)
class Hold:
    """One quarantine row as the page shows it: the reason split into field and fix."""

    side: str
    record_id: str
    kind: str
    reason: str
    field: str
    fix: str
    attempts: int
    first_seen: datetime | None
    last_seen: datetime | None
    retry_requested: bool


def split_reason(reason: str) -> tuple[str, str]:
    """(field, fix) named by a hold's reason, '' when the reason names none.

    Reasons read ``<System> <record> <id>: <Field>: <problem>; <what to do>`` or
    ``...: <Field> is|was <problem>; <what to do>`` (see engine/canonical.py ``validate``):
    the field is the problem's leading name, the fix the last ``;``-separated part. A
    reason of another shape keeps both empty and is shown whole.
    """
    _, _, message = reason.partition(": ")
    message = message or reason
    head, sep, _ = message.partition(": ")
    if sep and len(head) <= 60 and " " not in head.strip():
        field = head  # "Email: 'a@@b' is not a valid email address"
    else:  # "FirstName is 200 characters", "Email was cleared in Customcrm"
        first, _, rest = message.partition(" ")
        field = first if rest.startswith(("is ", "was ")) and first[:1].isupper() else ""
    parts = [p.strip() for p in message.split("; ") if p.strip()]
    fix = parts[-1] if len(parts) > 1 else ""
    return field, fix


def _hold(row: RowMapping) -> Hold:
    field, fix = split_reason(str(row["reason"]))
    return Hold(
        side=str(row["side"]),
        record_id=str(row["record_id"]),
        kind=str(row["kind"]),
        reason=str(row["reason"]),
        field=field,
        fix=fix,
        attempts=int(row["attempts"] or 0),
        first_seen=row["first_seen"],
        last_seen=row["last_seen"],
        retry_requested=bool(row["retry_requested"]),
    )


def _summary(blob: str | None) -> dict[str, Any]:
    if not blob:
        return {}
    try:
        value = json.loads(blob)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


class OperatorStore:
    """Reads of the Sync page and the operator's release / retry writes, for any flow."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # -- reads ----------------------------------------------------------------------
    def runs(self, flow: str, limit: int = 5) -> list[dict[str, Any]]:
        """The flow's last runs, newest first, each with its summary (parsed JSON)."""
        query = select(run).where(run.c.flow == flow).order_by(desc(run.c.started_at)).limit(limit)
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [
            {
                "run_id": r["run_id"],
                "started_at": r["started_at"],
                "finished_at": r["finished_at"],
                "status": r["status"],
                "summary": _summary(r["summary"]),
            }
            for r in rows
        ]

    def links(self, flow: str, search: str = "", limit: int = 50) -> tuple[int, list[dict[str, Any]]]:
        """(links in all, the first ``limit`` matching ``search``): a search finds a link by
        either side's id or its match key (exact, or containing the text)."""
        cond: list[Any] = [link.c.flow == flow]
        text = search.strip()
        if text:
            cond.append(
                or_(
                    link.c.crm_id.contains(text, autoescape=True),
                    link.c.cb_id.contains(text, autoescape=True),
                    func.lower(link.c.match_key).contains(text.lower(), autoescape=True),
                )
            )
        cols = (link.c.crm_id, link.c.crm_slot, link.c.cb_id, link.c.match_key, link.c.synced_at)
        with self.engine.connect() as conn:
            total = int(conn.execute(select(func.count()).where(link.c.flow == flow)).scalar() or 0)
            rows = conn.execute(select(*cols).where(*cond).order_by(link.c.crm_id).limit(limit)).mappings()
            return total, [dict(r) for r in rows]

    def holds(self, flow: str) -> list[Hold]:
        """Every quarantine row of the flow (waiting, quarantined, approval), by last seen."""
        query = (
            select(quarantine)
            .where(quarantine.c.flow == flow)
            .order_by(desc(quarantine.c.last_seen), quarantine.c.record_id)
            .limit(LIMIT * 3)
        )
        with self.engine.connect() as conn:
            return [_hold(r) for r in conn.execute(query).mappings()]

    def audit(self, flow: str, kinds: tuple[str, ...], limit: int = 50) -> list[dict[str, Any]]:
        """The flow's newest audit rows of ``kinds``, with their detail parsed."""
        query = (
            select(audit)
            .where(audit.c.flow == flow, audit.c.kind.in_(kinds))
            .order_by(desc(audit.c.at), desc(audit.c.id))
            .limit(limit)
        )
        with self.engine.connect() as conn:
            rows = conn.execute(query).mappings().all()
        return [{**dict(r), "detail": _summary(r["detail"])} for r in rows]

    # -- the operator's writes ------------------------------------------------------
    def _key(self, flow: str, side: str, record_id: str) -> Any:
        return and_(
            quarantine.c.flow == flow,
            quarantine.c.side == side,
            quarantine.c.record_id == record_id,
            quarantine.c.kind.not_in(APPROVAL_KINDS),
        )

    def release(self, flow: str, side: str, record_id: str) -> bool:
        """Drop the hold (not a held delete: those are approved or rejected); True if there was one."""
        with self.engine.begin() as conn:
            return bool(conn.execute(delete(quarantine).where(self._key(flow, side, record_id))).rowcount)

    def request_retry(self, flow: str, side: str, record_id: str) -> bool:
        """Make the next run stage the held copy again; True if the hold exists."""
        stmt = update(quarantine).where(self._key(flow, side, record_id)).values(retry_requested=True)
        with self.engine.begin() as conn:
            return bool(conn.execute(stmt).rowcount)
