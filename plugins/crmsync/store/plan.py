"""The plan of one flow's run: one row per decision, with each side's write (operation,
changes, write status, result) and whether it was turned into links yet (``applied``)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, TypedDict, cast

from sqlalchemy import bindparam, delete, func, insert, or_, select, update
from sqlalchemy.engine import RowMapping

from crmsync.engine.plan import Action, Op
from crmsync.engine.plan_text import PlanView
from crmsync.engine.status import WRITE_FAILURES, HoldKind, WriteStatus
from crmsync.mapping.model import Side
from crmsync.store.codec import BATCH, FlowStore, chunks, dumps, finished, loads
from crmsync.store.schema import plan

#: Write statuses a person should look at (the summary lists them).
_PROBLEMS = (*WRITE_FAILURES, WriteStatus.STALE)


class _PlanColumns(TypedDict):
    """The plan table's columns that read back as they were written (JSON still encoded)."""

    run_id: str
    flow: str
    seq: int
    crm_id: str | None
    cb_id: str | None
    link_id: int | None
    match_key: str | None
    merged: str | None
    crm_staged: str | None
    cb_staged: str | None
    reason: str | None
    detail: str | None
    held_side: str | None
    applied: bool
    crm_changes: str | None
    crm_if_version: str | None
    crm_result: str | None
    crm_error: str | None
    cb_changes: str | None
    cb_if_version: str | None
    cb_result: str | None
    cb_error: str | None


class PlanRow(_PlanColumns):
    """One row of the plan table as the transform task writes it (``crmsync_plan``;
    ``upsert`` fills the ``*_status/_result/_error`` columns, ``update_links`` ``applied``).
    JSON columns are already encoded; the enum columns take the enums' strings."""

    action: str
    hold_kind: str | None
    crm_op: str | None
    crm_status: str | None
    cb_op: str | None
    cb_status: str | None


class StoredPlanRow(_PlanColumns):
    """A plan row as the store reads it back for ``upsert`` and ``update_links``: the row's
    ``id`` and the action, operations, write statuses and hold kind as their enums, so the
    readers index keys mypy checks and compare members, not strings."""

    id: int
    action: Action
    hold_kind: HoldKind | None
    crm_op: Op | None
    crm_status: WriteStatus | None
    cb_op: Op | None
    cb_status: WriteStatus | None


def stored_plan_row(r: Mapping[str, Any] | RowMapping) -> StoredPlanRow:
    """Decode one selected plan row (every column of ``crmsync_plan``): the action, the
    operations, the write statuses and the hold kind become their enums, the rest is kept
    as stored. The one place plan rows are decoded, so the readers' keys and types hold."""
    hold = r["hold_kind"]
    decoded: dict[str, Any] = {
        "action": Action(r["action"]),
        "hold_kind": HoldKind(hold) if hold else None,
        "applied": bool(r["applied"]),
    }
    for prefix in ("crm", "cb"):
        decoded[f"{prefix}_op"] = _op(r[f"{prefix}_op"])
        decoded[f"{prefix}_status"] = _status(r[f"{prefix}_status"])
    return cast(StoredPlanRow, {**r, **decoded})


def _op(value: str | None) -> Op | None:
    return None if value is None else Op(value)


def _status(value: str | None) -> WriteStatus | None:
    return None if value is None else WriteStatus(value)


class PlanCount(TypedDict):
    """How many plan rows of a run share an action and each side's operation and status."""

    action: Action
    crm_op: Op | None
    crm_status: WriteStatus | None
    cb_op: Op | None
    cb_status: WriteStatus | None
    n: int


def side_write_state(row: StoredPlanRow | PlanCount, side: Side) -> tuple[Op | None, WriteStatus | None]:
    """``side``'s planned operation and write status on a plan row (None, None: no write there)."""
    if side is Side.CUSTOMCRM:
        return row["crm_op"], row["crm_status"]
    return row["cb_op"], row["cb_status"]


class PlanProblem(TypedDict):
    """A plan row a person should look at (:meth:`PlanStore.plan_problems`): held, waiting,
    or with a failed or stale write; the action, hold kind and statuses as their enums."""

    action: Action
    crm_id: str | None
    cb_id: str | None
    reason: str | None
    held_side: str | None
    hold_kind: HoldKind | None
    crm_status: WriteStatus | None
    crm_error: str | None
    cb_status: WriteStatus | None
    cb_error: str | None


def write_outcome(row: PlanProblem, side: Side) -> tuple[WriteStatus | None, str | None]:
    """``side``'s write status and error on a problem row (None, None: no write there)."""
    if side is Side.CUSTOMCRM:
        return row["crm_status"], row["crm_error"]
    return row["cb_status"], row["cb_error"]


class PlanStore(FlowStore):
    """The plan rows and write statuses of one flow's runs."""

    def plan_progress(self, run_id: str) -> int:
        """How many writes of this run's plan were already attempted or applied."""
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    select(func.count()).where(
                        plan.c.run_id == run_id,
                        plan.c.flow == self.flow,
                        or_(
                            plan.c.applied.is_(True),
                            plan.c.crm_status.not_in((WriteStatus.PENDING,)),
                            plan.c.cb_status.not_in((WriteStatus.PENDING,)),
                        ),
                    )
                ).scalar()
                or 0
            )

    def delete_plan(self, run_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(plan).where(plan.c.run_id == run_id, plan.c.flow == self.flow))

    def insert_plan(self, rows: Sequence[PlanRow]) -> None:
        if rows:
            with self.engine.begin() as conn:
                conn.execute(insert(plan), rows)

    def count_plan_writes(self, run_id: str) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    select(func.count()).where(
                        plan.c.run_id == run_id,
                        plan.c.flow == self.flow,
                        or_(plan.c.crm_op.is_not(None), plan.c.cb_op.is_not(None)),
                    )
                ).scalar()
                or 0
            )

    def _plan_batches(self, run_id: str, *conditions: Any) -> Iterator[list[StoredPlanRow]]:
        """This run's plan rows matching ``conditions``, in id order, one short read per batch.

        Keyset paging (``id > last``) with a fresh connection per batch: no long-lived
        cursor or transaction is held while the caller makes API calls between batches.
        """
        last_id = 0
        while True:
            with self.engine.connect() as conn:
                rows = [
                    stored_plan_row(r)
                    for r in conn.execute(
                        select(plan)
                        .where(
                            plan.c.run_id == run_id,
                            plan.c.flow == self.flow,
                            plan.c.id > last_id,
                            *conditions,
                        )
                        .order_by(plan.c.id)
                        .limit(BATCH)
                    ).mappings()
                ]
            if not rows:
                return
            last_id = rows[-1]["id"]
            yield rows

    def iter_pending_writes(self, run_id: str, side: Side) -> Iterator[list[StoredPlanRow]]:
        """Plan rows with a write for ``side`` not done yet (pending, or in flight at a crash)."""
        op = plan.c.crm_op if side is Side.CUSTOMCRM else plan.c.cb_op
        status = plan.c.crm_status if side is Side.CUSTOMCRM else plan.c.cb_status
        return self._plan_batches(
            run_id, op.is_not(None), status.in_((WriteStatus.PENDING, WriteStatus.IN_FLIGHT))
        )

    def iter_chargebee_creates(self, run_id: str) -> Iterator[list[StoredPlanRow]]:
        """Plan rows whose Chargebee create is done and that plan no Customcrm write: where
        Chargebee assigned values Customcrm must take (see ``engine.assigned``)."""
        return self._plan_batches(
            run_id, plan.c.cb_op == Op.CREATE, plan.c.cb_status == WriteStatus.DONE, plan.c.crm_op.is_(None)
        )

    def plan_customcrm_updates(self, rows: Sequence[tuple[int, str, str | None, str]]) -> None:
        """Add a Customcrm update to plan rows: ``(plan id, changes, if_version, detail)``,
        all JSON but the version. Only rows with no Customcrm write yet are changed, so a
        cleared and rerun task plans nothing twice."""
        if not rows:
            return
        stmt = (
            update(plan)
            .where(plan.c.id == bindparam("key_id"), plan.c.crm_op.is_(None))
            .values(
                crm_op=Op.UPDATE,
                crm_changes=bindparam("new_changes"),
                crm_if_version=bindparam("new_version"),
                crm_status=WriteStatus.PENDING,
                detail=bindparam("new_detail"),
            )
        )
        with self.engine.begin() as conn:
            conn.execute(
                stmt,
                [
                    {"key_id": pid, "new_changes": changes, "new_version": version, "new_detail": detail}
                    for pid, changes, version, detail in rows
                ],
            )

    def mark_write(
        self, plan_id: int, side: Side, status: WriteStatus, *, result: Any = None, error: str | None = None
    ) -> None:
        prefix = "crm" if side is Side.CUSTOMCRM else "cb"
        values: dict[str, Any] = {f"{prefix}_status": status, f"{prefix}_error": error}
        if result is not None:
            values[f"{prefix}_result"] = dumps(result)
        with self.engine.begin() as conn:
            conn.execute(update(plan).where(plan.c.id == plan_id).values(**values))

    def mark_write_results(
        self, side: Side, results: Sequence[tuple[int, WriteStatus, Any, str | None]]
    ) -> None:
        """Record many writes' ``(plan id, status, result, error)`` in one transaction.

        Same effect as :meth:`mark_write` for each (a ``None`` result keeps the stored one).
        """
        prefix = "crm" if side is Side.CUSTOMCRM else "cb"
        with_result: list[dict[str, Any]] = []
        without: list[dict[str, Any]] = []
        for plan_id, status, result, error in results:
            params = {"key_id": plan_id, "new_status": status, "new_error": error}
            if result is None:
                without.append(params)
            else:
                with_result.append({**params, "new_result": dumps(result)})
        values: dict[str, Any] = {
            f"{prefix}_status": bindparam("new_status"),
            f"{prefix}_error": bindparam("new_error"),
        }
        stmt = update(plan).where(plan.c.id == bindparam("key_id"))
        with self.engine.begin() as conn:
            if with_result:
                result_col: dict[str, Any] = {f"{prefix}_result": bindparam("new_result")}
                conn.execute(stmt.values({**values, **result_col}), with_result)
            if without:
                conn.execute(stmt.values(values), without)

    def mark_writes(self, plan_ids: Sequence[int], side: Side, status: WriteStatus) -> None:
        """Set the write status of many plan rows in one transaction (the write-ahead mark)."""
        column = plan.c.crm_status if side is Side.CUSTOMCRM else plan.c.cb_status
        with self.engine.begin() as conn:
            for chunk in chunks(list(plan_ids)):
                conn.execute(update(plan).where(plan.c.id.in_(chunk)).values({column: status}))

    def iter_unapplied(self, run_id: str) -> Iterator[list[StoredPlanRow]]:
        """Finished plan rows not yet turned into links."""
        return self._plan_batches(
            run_id, plan.c.applied.is_(False), finished(plan.c.crm_status), finished(plan.c.cb_status)
        )

    def count_unfinished_writes(self, run_id: str) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    select(func.count()).where(
                        plan.c.run_id == run_id,
                        plan.c.flow == self.flow,
                        or_(~finished(plan.c.crm_status), ~finished(plan.c.cb_status)),
                    )
                ).scalar()
                or 0
            )

    def plan_counts(self, run_id: str) -> list[PlanCount]:
        with self.engine.connect() as conn:
            rows = list(
                conn.execute(
                    select(
                        plan.c.action,
                        plan.c.crm_op,
                        plan.c.crm_status,
                        plan.c.cb_op,
                        plan.c.cb_status,
                        func.count().label("n"),
                    )
                    .where(plan.c.run_id == run_id, plan.c.flow == self.flow)
                    .group_by(plan.c.action, plan.c.crm_op, plan.c.crm_status, plan.c.cb_op, plan.c.cb_status)
                ).mappings()
            )
        return [_plan_count(r) for r in rows]

    def plan_problems(self, run_id: str, limit: int = 50) -> list[PlanProblem]:
        """Rows a person should look at: held records and failed writes."""
        with self.engine.connect() as conn:
            rows = list(
                conn.execute(
                    select(
                        plan.c.action,
                        plan.c.crm_id,
                        plan.c.cb_id,
                        plan.c.reason,
                        plan.c.held_side,
                        plan.c.hold_kind,
                        plan.c.crm_status,
                        plan.c.crm_error,
                        plan.c.cb_status,
                        plan.c.cb_error,
                    )
                    .where(
                        plan.c.run_id == run_id,
                        plan.c.flow == self.flow,
                        or_(
                            plan.c.action.in_((Action.QUARANTINE, Action.WAIT)),
                            plan.c.held_side.is_not(None),
                            plan.c.crm_status.in_(_PROBLEMS),
                            plan.c.cb_status.in_(_PROBLEMS),
                        ),
                    )
                    .order_by(plan.c.id)
                    .limit(limit)
                ).mappings()
            )
        return [_plan_problem(r) for r in rows]

    def plan_skips(self, run_id: str, limit: int = 20) -> list[str]:
        """Why records were skipped (no partner and the flow does not create one), first few."""
        with self.engine.connect() as conn:
            return [
                reason or ""
                for (reason,) in conn.execute(
                    select(plan.c.reason)
                    .where(plan.c.run_id == run_id, plan.c.flow == self.flow, plan.c.action == Action.SKIP)
                    .order_by(plan.c.id)
                    .limit(limit)
                )
            ]

    def plan_details(self, run_id: str) -> Iterator[str]:
        with self.engine.connect() as conn:
            for (detail,) in conn.execution_options(yield_per=BATCH).execute(
                select(plan.c.detail).where(
                    plan.c.run_id == run_id, plan.c.flow == self.flow, plan.c.detail.is_not(None)
                )
            ):
                yield detail

    def iter_plan_views(self, run_id: str) -> Iterator[PlanView]:
        """This run's plan rows in plan order, decoded for :func:`crmsync.engine.plan_text.describe`
        (``unchanged`` rows left out): the readable plan of a dry run."""
        cols = [
            plan.c.action, plan.c.crm_id, plan.c.cb_id, plan.c.crm_op, plan.c.cb_op,
            plan.c.crm_changes, plan.c.cb_changes, plan.c.crm_staged, plan.c.cb_staged,
            plan.c.reason, plan.c.match_key,
        ]  # fmt: skip
        query = (
            select(*cols)
            .where(plan.c.run_id == run_id, plan.c.flow == self.flow, plan.c.action != Action.UNCHANGED)
            .order_by(plan.c.seq)
        )
        with self.engine.connect() as conn:
            for r in conn.execution_options(yield_per=BATCH).execute(query).mappings():
                yield PlanView(
                    action=r["action"],
                    crm_id=r["crm_id"],
                    cb_id=r["cb_id"],
                    crm_op=r["crm_op"],
                    cb_op=r["cb_op"],
                    crm_changes=loads(r["crm_changes"]),
                    cb_changes=loads(r["cb_changes"]),
                    crm_before=_staged_values(r["crm_staged"]),
                    cb_before=_staged_values(r["cb_staged"]),
                    reason=r["reason"],
                    match_key=r["match_key"],
                )


def _plan_count(r: RowMapping) -> PlanCount:
    """One group of :meth:`PlanStore.plan_counts`, decoded like :func:`stored_plan_row`."""
    return PlanCount(
        action=Action(r["action"]),
        crm_op=_op(r["crm_op"]),
        crm_status=_status(r["crm_status"]),
        cb_op=_op(r["cb_op"]),
        cb_status=_status(r["cb_status"]),
        n=int(r["n"]),
    )


def _plan_problem(r: RowMapping) -> PlanProblem:
    """One row of :meth:`PlanStore.plan_problems`, decoded like :func:`stored_plan_row`."""
    hold = r["hold_kind"]
    return PlanProblem(
        action=Action(r["action"]),
        crm_id=r["crm_id"],
        cb_id=r["cb_id"],
        reason=r["reason"],
        held_side=r["held_side"],
        hold_kind=HoldKind(hold) if hold else None,
        crm_status=_status(r["crm_status"]),
        crm_error=r["crm_error"],
        cb_status=_status(r["cb_status"]),
        cb_error=r["cb_error"],
    )


def _staged_values(blob: str | None) -> dict[str, Any] | None:
    """The canonical values of a plan row's staged record (JSON of a SideRecord)."""
    data = loads(blob)
    return dict(data.get("values") or {}) if isinstance(data, dict) else None
