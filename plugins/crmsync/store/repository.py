"""Set-based reads and writes of the link store for one flow.

Every method works in batches or streams (``yield_per``) so memory stays flat with the
number of records, and every write that tasks rely on for reruns is idempotent
(delete-then-insert per run, upserts keyed by natural keys, ``applied`` flags).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import fields
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, bindparam, delete, exists, func, insert, or_, select, text, update
from sqlalchemy.engine import Connection, Engine, RowMapping
from sqlalchemy.exc import IntegrityError

from crmsync.engine.canonical import SideRecord, content_hash
from crmsync.engine.plan import LinkState
from crmsync.mapping.model import Side
from crmsync.store.schema import audit, link, plan, quarantine, run, staging, watermark

BATCH = 500
#: runs an optional reference is retried before the record stops being carried
REF_PENDING_TRIES = 3


def now() -> datetime:
    return datetime.now(UTC)


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


def loads(value: str | None) -> Any:
    return None if value is None else json.loads(value)


def record_to_json(rec: SideRecord) -> str:
    # Shallow (dataclasses.asdict deep-copies every value first, which costs more than the dump).
    data = {f.name: getattr(rec, f.name) for f in fields(rec)}
    data["side"] = rec.side.value
    return dumps(data)


def record_from_json(blob: str | None) -> SideRecord | None:
    if blob is None:
        return None
    data = json.loads(blob)
    data["side"] = Side(data["side"])
    return SideRecord(**data)


#: Key of a staged record's hints (``SideRecord.hints``) in its staged canonical JSON:
#: not a field name (those start with a letter), removed again when the record is read.
HINTS = "~hints"


def record_from_staging(row: RowMapping, prefix: str = "") -> SideRecord:
    values = json.loads(row[f"{prefix}canonical"])
    hints = values.pop(HINTS, None)
    return SideRecord(
        side=Side(row[f"{prefix}side"]),
        id=row[f"{prefix}record_id"],
        values=values,
        hints=hints if isinstance(hints, dict) else {},
        updated_at=row[f"{prefix}updated_at"] or 0.0,
        version=row[f"{prefix}version"],
        deleted=bool(row[f"{prefix}deleted"]),
        external_ref=row[f"{prefix}external_ref"],
    )


def link_state(row: RowMapping) -> LinkState:
    return LinkState(
        crm_id=row["crm_id"],
        cb_id=row["cb_id"],
        base=json.loads(row["base"]),
        crm_snapshot=json.loads(row["crm_snapshot"]),
        cb_snapshot=json.loads(row["cb_snapshot"]),
        crm_version=row["crm_version"],
        cb_version=row["cb_version"],
        crm_updated_at=row["crm_updated_at"] or 0.0,
        cb_updated_at=row["cb_updated_at"] or 0.0,
    )


def _chunks(items: Sequence[Any], size: int = BATCH) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _finished(status: Any) -> Any:
    return or_(status.is_(None), status.not_in(("pending", "in_flight")))


class Repository:
    """The link store as seen by one flow."""

    def __init__(self, engine: Engine, flow: str) -> None:
        self.engine = engine
        self.flow = flow

    # -- runs and watermarks ------------------------------------------------------

    def begin_run(self, run_id: str, params: dict[str, Any]) -> None:
        """Create the run row if missing (any task may be the first to run on a rerun).

        Both extract tasks start at the same moment under a real executor: when the other
        one inserted the row first, the unique key says so and that is fine.
        """
        if self.get_run(run_id) is not None:
            return
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    insert(run).values(
                        run_id=run_id,
                        flow=self.flow,
                        started_at=now(),
                        status="running",
                        params=dumps(params),
                    )
                )
        except IntegrityError:
            if self.get_run(run_id) is None:
                raise

    def get_run(self, run_id: str) -> RowMapping | None:
        with self.engine.connect() as conn:
            return (
                conn.execute(select(run).where(run.c.run_id == run_id, run.c.flow == self.flow))
                .mappings()
                .first()
            )

    def set_run(self, run_id: str, **values: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(run).where(run.c.run_id == run_id, run.c.flow == self.flow).values(**values))

    def get_watermark(self, side: Side) -> float | None:
        with self.engine.connect() as conn:
            value = conn.execute(
                select(watermark.c.value).where(watermark.c.flow == self.flow, watermark.c.side == side.value)
            ).scalar()
        return None if value is None else float(value)

    def _set_watermark(self, conn: Connection, side: Side, value: float, run_id: str) -> None:
        key = and_(watermark.c.flow == self.flow, watermark.c.side == side.value)
        changed = conn.execute(
            update(watermark).where(key).values(value=value, run_id=run_id, updated_at=now())
        ).rowcount
        if not changed:
            conn.execute(
                insert(watermark).values(
                    flow=self.flow, side=side.value, value=value, run_id=run_id, updated_at=now()
                )
            )

    def reset_watermarks(self) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(watermark).where(watermark.c.flow == self.flow))

    # -- staging ---------------------------------------------------------------------

    def refresh_statistics(self) -> None:
        """Let PostgreSQL's planner see the rows extract has just staged (``ANALYZE``).

        Staging is filled and purged every run, faster than autovacuum samples it: with the
        statistics of an empty table, transform's joins of 10,000 staged records with
        100,000 links were planned as nested loops over staging and took two minutes
        instead of a second (bench/RESULTS.md, link store). SQLite needs nothing.
        """
        if self.engine.dialect.name == "postgresql":
            with self.engine.begin() as conn:
                conn.execute(text(f"ANALYZE {staging.name}"))

    def clear_staging(self, run_id: str, side: Side) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                delete(staging).where(
                    staging.c.run_id == run_id, staging.c.flow == self.flow, staging.c.side == side.value
                )
            )

    def stage(self, run_id: str, rows: Iterable[tuple[SideRecord, str | None, str]]) -> int:
        """Insert one page of records: (record, match key, content hash).

        A record id seen twice in one extract (it was edited while we paged) keeps its
        newest version.
        """
        return self._stage(run_id, rows, self.flow)

    def _deferred_flow(self, rule: int) -> str:
        return f"{self.flow}#match{rule}"

    def stage_deferred(
        self, run_id: str, rule: int, rows: Iterable[tuple[SideRecord, str | None, str]]
    ) -> int:
        """Stage records again under the key of match rule ``rule`` (an alternative rule).

        They are kept apart from the extract's rows (their own ``flow`` value in the
        staging table), so the rows read for the first rule are never changed.
        """
        return self._stage(run_id, rows, self._deferred_flow(rule))

    def iter_deferred(self, run_id: str, rule: int) -> Iterator[RowMapping]:
        """Records staged for match rule ``rule``, ordered by its key."""
        query = (
            select(staging)
            .where(staging.c.run_id == run_id, staging.c.flow == self._deferred_flow(rule))
            .order_by(staging.c.match_key, staging.c.side, staging.c.record_id)
        )
        with self.engine.connect() as conn:
            yield from conn.execution_options(yield_per=BATCH).execute(query).mappings()

    def clear_deferred(self, run_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                delete(staging).where(
                    staging.c.run_id == run_id,
                    staging.c.flow.startswith(f"{self.flow}#match", autoescape=True),
                )
            )

    def _stage(self, run_id: str, rows: Iterable[tuple[SideRecord, str | None, str]], flow: str) -> int:
        values = [
            {
                "run_id": run_id,
                "flow": flow,
                "side": rec.side.value,
                "record_id": rec.id,
                "match_key": mk,
                "updated_at": rec.updated_at,
                "version": rec.version,
                "deleted": rec.deleted,
                "external_ref": rec.external_ref,
                # a record's hints ride along under a key no field name can take
                "canonical": dumps({**rec.values, HINTS: rec.hints} if rec.hints else rec.values),
                "content_hash": h,
            }
            for rec, mk, h in rows
        ]
        if not values:
            return 0
        with self.engine.begin() as conn:
            side = values[0]["side"]
            conn.execute(
                delete(staging).where(
                    staging.c.run_id == run_id,
                    staging.c.flow == flow,
                    staging.c.side == side,
                    staging.c.record_id.in_([v["record_id"] for v in values]),
                )
            )
            conn.execute(insert(staging), values)
        return len(values)

    def count_staged(self, run_id: str) -> dict[str, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(staging.c.side, func.count())
                .where(staging.c.run_id == run_id, staging.c.flow == self.flow)
                .group_by(staging.c.side)
            ).all()
        return {side: n for side, n in rows}

    def carry_quarantined(self, run_id: str, match_key_of: Callable[[SideRecord], str | None]) -> int:
        """Stage held records that were not re-read, so they are retried without API calls.

        Records held as ``invalid``/``rejected`` are retried only when they change (a
        person fixed them, so the extract reads them again): retrying the same bad data
        would fail the same way and, for ``rejected``, spend API calls.
        """
        with self.engine.connect() as conn:
            held = conn.execute(
                select(quarantine.c.staged).where(
                    quarantine.c.flow == self.flow,
                    or_(
                        quarantine.c.kind.in_(("waiting", "failed", "ambiguous")),
                        # an optional reference: retried a few times, then left (still listed)
                        and_(quarantine.c.kind == "ref_pending", quarantine.c.attempts < REF_PENDING_TRIES),
                    ),
                    quarantine.c.staged.is_not(None),
                    ~exists().where(
                        staging.c.run_id == run_id,
                        staging.c.flow == self.flow,
                        staging.c.side == quarantine.c.side,
                        staging.c.record_id == quarantine.c.record_id,
                    ),
                )
            ).all()
        rows = []
        for (blob,) in held:
            rec = record_from_json(blob)
            if rec is not None:
                rows.append((rec, match_key_of(rec), content_hash(rec.values)))
        carried = 0
        for side in Side:
            for chunk in _chunks([r for r in rows if r[0].side is side]):
                carried += self.stage(run_id, list(chunk))
        return carried

    def purge_staging(self, run_id: str) -> None:
        """Customer data a finished run no longer needs: its staging rows, and the record
        copies in its plan rows (staged records, merged values, changes, write results).

        What stays: links (their snapshots are the sync's memory), quarantine rows (the
        staged record a repair and the next retry need), the audit (conflict values), and
        each plan row's action, ids, statuses, reasons and notes, which the run summary
        and "why was this record not synced?" need.
        """
        with self.engine.begin() as conn:
            conn.execute(delete(staging).where(staging.c.run_id == run_id, staging.c.flow == self.flow))
            conn.execute(
                update(plan)
                .where(plan.c.run_id == run_id, plan.c.flow == self.flow)
                .values(
                    merged=None,
                    crm_staged=None,
                    cb_staged=None,
                    crm_changes=None,
                    cb_changes=None,
                    crm_result=None,
                    cb_result=None,
                )
            )
        self.clear_deferred(run_id)

    # -- reading what transform needs ------------------------------------------------

    def iter_touched_links(
        self, run_id: str
    ) -> Iterator[list[tuple[RowMapping, RowMapping | None, RowMapping | None]]]:
        """Linked pairs with at least one side staged, in batches, with both staged rows."""
        c = staging.alias("c")
        k = staging.alias("k")
        cols: list[Any] = [link]
        cols += [col.label(f"c_{col.name}") for col in c.c]
        cols += [col.label(f"k_{col.name}") for col in k.c]
        query = (
            select(*cols)
            .select_from(
                link.outerjoin(
                    c,
                    and_(
                        c.c.run_id == run_id,
                        c.c.flow == self.flow,
                        c.c.side == Side.CUSTOMCRM.value,
                        c.c.record_id == link.c.crm_id,
                    ),
                ).outerjoin(
                    k,
                    and_(
                        k.c.run_id == run_id,
                        k.c.flow == self.flow,
                        k.c.side == Side.CHARGEBEE.value,
                        k.c.record_id == link.c.cb_id,
                    ),
                )
            )
            .where(link.c.flow == self.flow, or_(c.c.record_id.is_not(None), k.c.record_id.is_not(None)))
            .order_by(link.c.id)
        )
        with self.engine.connect() as conn:
            result = conn.execution_options(yield_per=BATCH).execute(query).mappings()
            batch: list[tuple[RowMapping, RowMapping | None, RowMapping | None]] = []
            for row in result:
                batch.append(
                    (
                        row,
                        row if row["c_record_id"] is not None else None,
                        row if row["k_record_id"] is not None else None,
                    )
                )
                if len(batch) >= BATCH:
                    yield batch
                    batch = []
            if batch:
                yield batch

    def _unlinked(self, side: Side) -> Any:
        """Staged records of ``side`` that no link of this flow holds."""
        col = link.c.crm_id if side is Side.CUSTOMCRM else link.c.cb_id
        return and_(
            staging.c.side == side.value,
            ~exists().where(link.c.flow == self.flow, col == staging.c.record_id),
        )

    def iter_unlinked(self, run_id: str) -> Iterator[RowMapping]:
        """Staged records with no link, ordered by match key so equal keys come together."""
        query = (
            select(staging)
            .where(
                staging.c.run_id == run_id,
                staging.c.flow == self.flow,
                or_(self._unlinked(Side.CUSTOMCRM), self._unlinked(Side.CHARGEBEE)),
            )
            .order_by(staging.c.match_key, staging.c.side, staging.c.record_id)
        )
        with self.engine.connect() as conn:
            yield from conn.execution_options(yield_per=BATCH).execute(query).mappings()

    def unlinked_claims(self, run_id: str, cb_prefix: str | None) -> tuple[list[tuple[str, str]], list[str]]:
        """What unlinked staged records say about their partner, whatever their match key:
        (Customcrm id, the Chargebee id in its ExternalRef), and the Chargebee ids that
        start with ``cb_prefix`` (ids this sync may have given; None: none asked).
        Few rows once a flow runs: records the sync made are linked in the same run."""
        mine = (staging.c.run_id == run_id, staging.c.flow == self.flow, staging.c.deleted.is_(False))
        with self.engine.connect() as conn:
            refs = conn.execute(
                select(staging.c.record_id, staging.c.external_ref).where(
                    *mine, self._unlinked(Side.CUSTOMCRM), staging.c.external_ref.is_not(None)
                )
            ).all()
            made: list[str] = []
            if cb_prefix is not None:
                made = list(
                    conn.execute(
                        select(staging.c.record_id).where(
                            *mine,
                            self._unlinked(Side.CHARGEBEE),
                            staging.c.record_id.startswith(cb_prefix, autoescape=True),
                        )
                    ).scalars()
                )
        return [(crm_id, ext) for crm_id, ext in refs], made

    def staged_unlinked(self, run_id: str, side: Side, ids: Sequence[str]) -> dict[str, RowMapping]:
        """These staged records of ``side``, those of them that are unlinked and not deleted."""
        out: dict[str, RowMapping] = {}
        with self.engine.connect() as conn:
            for chunk in _chunks(list(ids)):
                for row in conn.execute(
                    select(staging).where(
                        staging.c.run_id == run_id,
                        staging.c.flow == self.flow,
                        staging.c.deleted.is_(False),
                        self._unlinked(side),
                        staging.c.record_id.in_(chunk),
                    )
                ).mappings():
                    out[row["record_id"]] = row
        return out

    def linked_by_match_key(self, keys: Sequence[str]) -> dict[str, tuple[str, str]]:
        """Existing links carrying these match keys: key → (crm_id, cb_id)."""
        out: dict[str, tuple[str, str]] = {}
        with self.engine.connect() as conn:
            for chunk in _chunks(list(keys)):
                for mk, crm_id, cb_id in conn.execute(
                    select(link.c.match_key, link.c.crm_id, link.c.cb_id).where(
                        link.c.flow == self.flow, link.c.match_key.in_(chunk)
                    )
                ):
                    out[mk] = (crm_id, cb_id)
        return out

    # -- the plan -------------------------------------------------------------------

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
                            plan.c.crm_status.not_in(("pending",)),
                            plan.c.cb_status.not_in(("pending",)),
                        ),
                    )
                ).scalar()
                or 0
            )

    def delete_plan(self, run_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(plan).where(plan.c.run_id == run_id, plan.c.flow == self.flow))

    def insert_plan(self, rows: list[dict[str, Any]]) -> None:
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

    def count_links(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).where(link.c.flow == self.flow)).scalar() or 0)

    def _plan_batches(self, run_id: str, *conditions: Any) -> Iterator[list[RowMapping]]:
        """This run's plan rows matching ``conditions``, in id order, one short read per batch.

        Keyset paging (``id > last``) with a fresh connection per batch: no long-lived
        cursor or transaction is held while the caller makes API calls between batches.
        """
        last_id = 0
        while True:
            with self.engine.connect() as conn:
                rows = list(
                    conn.execute(
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
                )
            if not rows:
                return
            last_id = rows[-1]["id"]
            yield rows

    def iter_pending_writes(self, run_id: str, side: Side) -> Iterator[list[RowMapping]]:
        """Plan rows with a write for ``side`` not done yet (pending, or in flight at a crash)."""
        op = plan.c.crm_op if side is Side.CUSTOMCRM else plan.c.cb_op
        status = plan.c.crm_status if side is Side.CUSTOMCRM else plan.c.cb_status
        return self._plan_batches(run_id, op.is_not(None), status.in_(("pending", "in_flight")))

    def iter_chargebee_creates(self, run_id: str) -> Iterator[list[RowMapping]]:
        """Plan rows whose Chargebee create is done and that plan no Customcrm write: where
        Chargebee assigned values Customcrm must take (see ``engine.assigned``)."""
        return self._plan_batches(
            run_id, plan.c.cb_op == "create", plan.c.cb_status == "done", plan.c.crm_op.is_(None)
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
                crm_op="update",
                crm_changes=bindparam("new_changes"),
                crm_if_version=bindparam("new_version"),
                crm_status="pending",
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
        self, plan_id: int, side: Side, status: str, *, result: Any = None, error: str | None = None
    ) -> None:
        prefix = "crm" if side is Side.CUSTOMCRM else "cb"
        values: dict[str, Any] = {f"{prefix}_status": status, f"{prefix}_error": error}
        if result is not None:
            values[f"{prefix}_result"] = dumps(result)
        with self.engine.begin() as conn:
            conn.execute(update(plan).where(plan.c.id == plan_id).values(**values))

    def mark_write_results(self, side: Side, results: Sequence[tuple[int, str, Any, str | None]]) -> None:
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

    def mark_writes(self, plan_ids: Sequence[int], side: Side, status: str) -> None:
        """Set the write status of many plan rows in one transaction (the write-ahead mark)."""
        column = plan.c.crm_status if side is Side.CUSTOMCRM else plan.c.cb_status
        with self.engine.begin() as conn:
            for chunk in _chunks(list(plan_ids)):
                conn.execute(update(plan).where(plan.c.id.in_(chunk)).values({column: status}))

    def get_links_by_cb_id(self, cb_ids: Sequence[str]) -> dict[str, RowMapping]:
        """Links of this flow by Chargebee id, for many ids (one query per chunk)."""
        out: dict[str, RowMapping] = {}
        with self.engine.connect() as conn:
            for chunk in _chunks(sorted(set(cb_ids))):
                for row in conn.execute(
                    select(link).where(link.c.flow == self.flow, link.c.cb_id.in_(chunk))
                ).mappings():
                    out[row["cb_id"]] = row
        return out

    def iter_unapplied(self, run_id: str) -> Iterator[list[RowMapping]]:
        """Finished plan rows not yet turned into links."""
        return self._plan_batches(
            run_id, plan.c.applied.is_(False), _finished(plan.c.crm_status), _finished(plan.c.cb_status)
        )

    def count_unfinished_writes(self, run_id: str) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    select(func.count()).where(
                        plan.c.run_id == run_id,
                        plan.c.flow == self.flow,
                        or_(~_finished(plan.c.crm_status), ~_finished(plan.c.cb_status)),
                    )
                ).scalar()
                or 0
            )

    def plan_counts(self, run_id: str) -> list[RowMapping]:
        with self.engine.connect() as conn:
            return list(
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

    def plan_problems(self, run_id: str, limit: int = 50) -> list[RowMapping]:
        """Rows a person should look at: held records and failed writes."""
        with self.engine.connect() as conn:
            return list(
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
                            plan.c.action.in_(("quarantine", "wait")),
                            plan.c.held_side.is_not(None),
                            plan.c.crm_status.in_(("rejected", "failed", "stale")),
                            plan.c.cb_status.in_(("rejected", "failed", "stale")),
                        ),
                    )
                    .order_by(plan.c.id)
                    .limit(limit)
                ).mappings()
            )

    def plan_skips(self, run_id: str, limit: int = 20) -> list[str]:
        """Why records were skipped (no partner and the flow does not create one), first few."""
        with self.engine.connect() as conn:
            return [
                reason or ""
                for (reason,) in conn.execute(
                    select(plan.c.reason)
                    .where(plan.c.run_id == run_id, plan.c.flow == self.flow, plan.c.action == "skip")
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

    # -- applying a chunk of finished plan rows (update_links) -------------------------

    def apply(
        self,
        run_id: str,
        plan_ids: list[int],
        *,
        upsert_links: list[dict[str, Any]],
        delete_links: list[tuple[str, str]],
        hold: list[dict[str, Any]],
        release: list[tuple[str, str]],
        audits: list[dict[str, Any]],
    ) -> None:
        """One transaction: links, quarantine and audit for a chunk, and the rows marked applied."""
        with self.engine.begin() as conn:
            for crm_id, cb_id in delete_links:
                conn.execute(
                    delete(link).where(
                        link.c.flow == self.flow, link.c.crm_id == crm_id, link.c.cb_id == cb_id
                    )
                )
            self._upsert_links(conn, upsert_links, run_id)
            by_side: dict[str, list[str]] = {}
            for side, rid in release:
                by_side.setdefault(side, []).append(rid)
            for side, rids in by_side.items():
                for chunk in _chunks(rids):
                    conn.execute(
                        delete(quarantine).where(
                            quarantine.c.flow == self.flow,
                            quarantine.c.side == side,
                            quarantine.c.record_id.in_(chunk),
                        )
                    )
            for values in hold:
                self._hold(conn, values, run_id)
            if audits:
                conn.execute(
                    insert(audit), [{"flow": self.flow, "run_id": run_id, "at": now(), **a} for a in audits]
                )
            for chunk in _chunks(plan_ids):
                conn.execute(update(plan).where(plan.c.id.in_(chunk)).values(applied=True))

    def _upsert_links(self, conn: Connection, rows: list[dict[str, Any]], run_id: str) -> None:
        """Insert or update links keyed by ``(flow, cb_id)``: a few statements per chunk, not per link.

        Rows for the same ``cb_id`` are merged in order (what applying them one after the
        other would leave); existing links are found with one query per chunk, then updated
        and inserted with one executemany per set of columns.
        """
        if not rows:
            return
        stamp = {"synced_at": now(), "last_run_id": run_id}
        merged: dict[str, dict[str, Any]] = {}
        for values in rows:
            merged[values["cb_id"]] = {**merged.get(values["cb_id"], {}), **values, **stamp}
        existing: set[str] = set()
        for chunk in _chunks(list(merged)):
            existing.update(
                cb_id
                for (cb_id,) in conn.execute(
                    select(link.c.cb_id).where(link.c.flow == self.flow, link.c.cb_id.in_(chunk))
                )
            )
        updates: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        inserts: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for cb_id, values in merged.items():
            target = updates if cb_id in existing else inserts
            target.setdefault(tuple(sorted(values)), []).append(values)
        for keys, group in updates.items():
            stmt = (
                update(link)
                .where(link.c.flow == self.flow, link.c.cb_id == bindparam("key_cb_id"))
                .values({k: bindparam(f"new_{k}") for k in keys})
            )
            params = [{"key_cb_id": v["cb_id"], **{f"new_{k}": v[k] for k in keys}} for v in group]
            for chunk in _chunks(params):
                conn.execute(stmt, list(chunk))
        created = now()
        for group in inserts.values():
            for chunk in _chunks(group):
                conn.execute(insert(link), [{"flow": self.flow, "created_at": created, **v} for v in chunk])

    def _hold(self, conn: Connection, values: dict[str, Any], run_id: str) -> None:
        key = and_(
            quarantine.c.flow == self.flow,
            quarantine.c.side == values["side"],
            quarantine.c.record_id == values["record_id"],
        )
        changed = conn.execute(
            update(quarantine)
            .where(key)
            .values(
                kind=values["kind"],
                reason=values["reason"],
                staged=values.get("staged"),
                content_hash=values.get("content_hash"),
                attempts=quarantine.c.attempts + 1,
                last_seen=now(),
                run_id=run_id,
            )
        ).rowcount
        if not changed:
            conn.execute(
                insert(quarantine).values(
                    flow=self.flow, attempts=1, first_seen=now(), last_seen=now(), run_id=run_id, **values
                )
            )

    def commit_watermarks(self, run_id: str, values: dict[Side, float | None]) -> None:
        with self.engine.begin() as conn:
            for side, value in values.items():
                if value is not None:
                    self._set_watermark(conn, side, value, run_id)

    def get_link(self, crm_id: str | None = None, cb_id: str | None = None) -> RowMapping | None:
        cond = [link.c.flow == self.flow]
        if crm_id is not None:
            cond.append(link.c.crm_id == crm_id)
        if cb_id is not None:
            cond.append(link.c.cb_id == cb_id)
        with self.engine.connect() as conn:
            return conn.execute(select(link).where(*cond)).mappings().first()

    def unlinked_survivors(self, side: Side, ids: Sequence[str]) -> set[str]:
        """Records of ``side`` whose pair was ended by a delete under policy ``unlink``.

        Such a survivor is never re-created on the side that deleted its twin (that
        would undo the delete); it can still be linked again by match.
        """
        return self._audited(side, ids, ("unlink",))

    def _audited(self, side: Side, ids: Sequence[str], kinds: Sequence[str]) -> set[str]:
        """Those of ``ids`` (records of ``side``) named by an audit row of one of ``kinds``."""
        col = audit.c.crm_id if side is Side.CUSTOMCRM else audit.c.cb_id
        out: set[str] = set()
        with self.engine.connect() as conn:
            for chunk in _chunks(list(ids)):
                out.update(
                    rid
                    for (rid,) in conn.execute(
                        select(col).where(audit.c.flow == self.flow, audit.c.kind.in_(kinds), col.in_(chunk))
                    )
                )
        return out

    def ended_by_delete(self, side: Side, ids: Sequence[str]) -> set[str]:
        """Records of ``side`` named by a pair that a delete ended (policy ``unlink``, or a
        delete propagated): the deleted record and its survivor both.

        A tombstone read again after that (the extract's overlap window, a full resync)
        is no news: the run that handled the delete reported it, naming the record.
        """
        return self._audited(side, ids, ("unlink", "delete"))

    def count_held(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).where(quarantine.c.flow == self.flow)).scalar() or 0)

    def quarantined(self) -> list[RowMapping]:
        with self.engine.connect() as conn:
            return list(
                conn.execute(
                    select(quarantine).where(quarantine.c.flow == self.flow).order_by(quarantine.c.record_id)
                ).mappings()
            )
