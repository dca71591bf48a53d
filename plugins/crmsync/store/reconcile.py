"""The reads of a reconcile run (see :mod:`crmsync.engine.reconcile`): every link with both
staged records, the unlinked staged records with their quarantine entry, and the match keys
staged more than once on a side. Reads only: a reconcile run writes nothing but its own
staging rows and run row."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import and_, exists, func, select
from sqlalchemy.engine import RowMapping

from crmsync.engine.status import HoldKind
from crmsync.mapping.model import Side
from crmsync.store.codec import BATCH, FlowStore
from crmsync.store.schema import link, quarantine, staging
from crmsync.store.staging import LinkedPair, StagingStore


@dataclass(frozen=True)
class UnlinkedStaged:
    """A staged live record no link holds, with its quarantine entry's kind and reason
    (both None when it is not held)."""

    side: Side
    record_id: str
    match_key: str | None
    hold_kind: HoldKind | None
    hold_reason: str | None


def _unlinked_staged(row: RowMapping) -> UnlinkedStaged:
    kind = row["q_kind"]
    return UnlinkedStaged(
        Side(row["side"]),
        row["record_id"],
        row["match_key"],
        HoldKind(kind) if kind else None,
        row["q_reason"],
    )


class ReconcileStore(FlowStore):
    """One flow's reads for its reconciliation report."""

    def _staged(self, run_id: str, side: Side) -> Any:
        return and_(staging.c.run_id == run_id, staging.c.flow == self.flow, staging.c.side == side.value)

    def iter_pairs(self, run_id: str) -> Iterator[list[LinkedPair]]:
        """Every link of the flow with its staged Customcrm and Chargebee rows (None where
        the full read did not return the record), in batches, in link order, decoded as
        ``StagingStore.iter_touched_links`` decodes them."""
        return StagingStore(self.engine, self.flow).iter_links_with_staged(run_id, touched_only=False)

    def iter_unlinked(self, run_id: str) -> Iterator[UnlinkedStaged]:
        """Staged live records no link holds, each with its quarantine entry's kind and
        reason (None when not held), ordered by side and id."""
        query = (
            select(
                staging.c.side,
                staging.c.record_id,
                staging.c.match_key,
                quarantine.c.kind.label("q_kind"),
                quarantine.c.reason.label("q_reason"),
            )
            .select_from(
                staging.outerjoin(
                    quarantine,
                    and_(
                        quarantine.c.flow == self.flow,
                        quarantine.c.side == staging.c.side,
                        quarantine.c.record_id == staging.c.record_id,
                    ),
                )
            )
            .where(
                staging.c.run_id == run_id,
                staging.c.flow == self.flow,
                staging.c.deleted.is_(False),
                ~exists().where(
                    link.c.flow == self.flow,
                    and_(staging.c.side == Side.CUSTOMCRM.value, link.c.crm_id == staging.c.record_id)
                    | and_(staging.c.side == Side.CHARGEBEE.value, link.c.cb_id == staging.c.record_id),
                ),
            )
            .order_by(staging.c.side, staging.c.record_id)
        )
        with self.engine.connect() as conn:
            for row in conn.execution_options(yield_per=BATCH).execute(query).mappings():
                yield _unlinked_staged(row)

    def iter_shared_keys(self, run_id: str) -> Iterator[tuple[Side, str, list[str]]]:
        """``(side, match key, ids)`` for each match key that two or more staged live records
        of one side carry, ordered by side and key."""
        shared = (
            select(staging.c.side, staging.c.match_key)
            .where(
                staging.c.run_id == run_id,
                staging.c.flow == self.flow,
                staging.c.deleted.is_(False),
                staging.c.match_key.is_not(None),
            )
            .group_by(staging.c.side, staging.c.match_key)
            .having(func.count() > 1)
            .subquery()
        )
        query = (
            select(staging.c.side, staging.c.match_key, staging.c.record_id)
            .join(shared, and_(shared.c.side == staging.c.side, shared.c.match_key == staging.c.match_key))
            .where(staging.c.run_id == run_id, staging.c.flow == self.flow, staging.c.deleted.is_(False))
            .order_by(staging.c.side, staging.c.match_key, staging.c.record_id)
        )
        current: tuple[Side, str, list[str]] | None = None
        with self.engine.connect() as conn:
            for side, key, rec_id in conn.execution_options(yield_per=BATCH).execute(query):
                if current is None or (current[0].value, current[1]) != (side, key):
                    if current is not None:
                        yield current
                    current = (Side(side), str(key), [])
                current[2].append(str(rec_id))
        if current is not None:
            yield current
