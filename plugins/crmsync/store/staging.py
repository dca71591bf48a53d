"""Staging of one flow: the records each run's extract read (and records staged again
under an alternative match rule, "deferred"), and the reads transform makes of them
against the links (touched links, unlinked records, their claims)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, delete, exists, func, insert, or_, select, text, update
from sqlalchemy.engine import RowMapping

from crmsync.engine.canonical import SideRecord, content_hash
from crmsync.mapping.model import Side
from crmsync.store.codec import BATCH, HINTS, FlowStore, chunks, dumps, record_from_json, record_from_staging
from crmsync.store.links import LinkRow, link_row
from crmsync.store.schema import link, plan, quarantine, staging

#: runs an optional reference is retried before the record stops being carried
REF_PENDING_TRIES = 3


@dataclass(frozen=True)
class StagedRow:
    """A staged record as transform reads it back: the record (decoded once, here) and the
    match key it was staged under (None: the record has no key)."""

    record: SideRecord
    match_key: str | None


@dataclass(frozen=True)
class LinkedPair:
    """A link of the flow with the run's staged record of each side (None where that side
    was not staged), read by transform and reconcile."""

    link: LinkRow
    crm: SideRecord | None
    cb: SideRecord | None


def staged_row(row: RowMapping) -> StagedRow:
    """Decode one selected staging row (every column of ``crmsync_staging``)."""
    return StagedRow(record_from_staging(row), row["match_key"])


def _linked_pair(row: RowMapping) -> LinkedPair:
    """Decode one row of the link/staging join (staged columns prefixed ``c_`` and ``k_``)."""
    return LinkedPair(
        link_row(row),
        record_from_staging(row, "c_") if row["c_record_id"] is not None else None,
        record_from_staging(row, "k_") if row["k_record_id"] is not None else None,
    )


class StagingStore(FlowStore):
    """The staged records of one flow's runs."""

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

    def iter_deferred(self, run_id: str, rule: int) -> Iterator[StagedRow]:
        """Records staged for match rule ``rule``, ordered by its key."""
        query = (
            select(staging)
            .where(staging.c.run_id == run_id, staging.c.flow == self._deferred_flow(rule))
            .order_by(staging.c.match_key, staging.c.side, staging.c.record_id)
        )
        with self.engine.connect() as conn:
            for row in conn.execution_options(yield_per=BATCH).execute(query).mappings():
                yield staged_row(row)

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
        would fail the same way and, for ``rejected``, spend API calls. An operator's
        "retry next run" (``retry_requested``, set on the Sync page) carries any hold once:
        the request is cleared here, after its copy is staged (a rerun of transform stages
        the same run's rows again, so a crash in between loses nothing).
        """
        with self.engine.connect() as conn:
            held = conn.execute(
                select(quarantine.c.staged).where(
                    quarantine.c.flow == self.flow,
                    or_(
                        quarantine.c.kind.in_(("waiting", "failed", "ambiguous")),
                        # an optional reference: retried a few times, then left (still listed)
                        and_(quarantine.c.kind == "ref_pending", quarantine.c.attempts < REF_PENDING_TRIES),
                        quarantine.c.retry_requested.is_(True),
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
            for chunk in chunks([r for r in rows if r[0].side is side]):
                carried += self.stage(run_id, list(chunk))
        with self.engine.begin() as conn:
            conn.execute(
                update(quarantine)
                .where(quarantine.c.flow == self.flow, quarantine.c.retry_requested.is_(True))
                .values(retry_requested=False)
            )
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

    def iter_touched_links(self, run_id: str) -> Iterator[list[LinkedPair]]:
        """Linked pairs with at least one side staged, in batches, with both staged rows."""
        return self.iter_links_with_staged(run_id, touched_only=True)

    def iter_links_with_staged(self, run_id: str, *, touched_only: bool) -> Iterator[list[LinkedPair]]:
        """The flow's links with the run's staged record of each side (None where that side
        was not staged), in batches, in link order; ``touched_only``: only links with at
        least one side staged. Staged columns are selected prefixed ``c_`` (Customcrm) and
        ``k_``, and decoded here."""
        c = staging.alias("c")
        k = staging.alias("k")
        cols: list[Any] = [link]
        cols += [col.label(f"c_{col.name}") for col in c.c]
        cols += [col.label(f"k_{col.name}") for col in k.c]

        def staged_side(alias: Any, side: Side, record_id: Any) -> Any:
            return and_(
                alias.c.run_id == run_id,
                alias.c.flow == self.flow,
                alias.c.side == side.value,
                alias.c.record_id == record_id,
            )

        joined = link.outerjoin(c, staged_side(c, Side.CUSTOMCRM, link.c.crm_id)).outerjoin(
            k, staged_side(k, Side.CHARGEBEE, link.c.cb_id)
        )
        where = [link.c.flow == self.flow]
        if touched_only:
            where.append(or_(c.c.record_id.is_not(None), k.c.record_id.is_not(None)))
        query = select(*cols).select_from(joined).where(*where).order_by(link.c.id)
        with self.engine.connect() as conn:
            result = conn.execution_options(yield_per=BATCH).execute(query).mappings()
            batch: list[LinkedPair] = []
            for row in result:
                batch.append(_linked_pair(row))
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

    def iter_unlinked(self, run_id: str) -> Iterator[StagedRow]:
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
            for row in conn.execution_options(yield_per=BATCH).execute(query).mappings():
                yield staged_row(row)

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

    def staged_unlinked(self, run_id: str, side: Side, ids: Sequence[str]) -> dict[str, SideRecord]:
        """These staged records of ``side``, those of them that are unlinked and not deleted."""
        out: dict[str, SideRecord] = {}
        with self.engine.connect() as conn:
            for chunk in chunks(list(ids)):
                for row in conn.execute(
                    select(staging).where(
                        staging.c.run_id == run_id,
                        staging.c.flow == self.flow,
                        staging.c.deleted.is_(False),
                        self._unlinked(side),
                        staging.c.record_id.in_(chunk),
                    )
                ).mappings():
                    out[row["record_id"]] = record_from_staging(row)
        return out
