"""Runs and watermarks of one flow: the run row (status, params, next watermarks,
summary) and the watermark each side's extract starts from."""

from __future__ import annotations

import json
from typing import Any, TypedDict

from sqlalchemy import and_, insert, select, update
from sqlalchemy.engine import Connection, RowMapping
from sqlalchemy.exc import IntegrityError

from crmsync.engine.status import RunStatus
from crmsync.mapping.model import Side
from crmsync.store.codec import FlowStore, dumps, now
from crmsync.store.schema import run, watermark


class RunRow(TypedDict):
    """One row of ``crmsync_run``."""

    run_id: str
    flow: str
    started_at: Any
    finished_at: Any
    status: RunStatus
    crm_next_watermark: float | None
    cb_next_watermark: float | None
    params: str | None
    summary: str | None


def run_row(row: RowMapping) -> RunRow:
    return RunRow(
        run_id=row["run_id"],
        flow=row["flow"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        status=RunStatus(row["status"]),
        crm_next_watermark=row["crm_next_watermark"],
        cb_next_watermark=row["cb_next_watermark"],
        params=row["params"],
        summary=row["summary"],
    )


class RunStore(FlowStore):
    """The run rows and watermarks of one flow."""

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
                        status=RunStatus.RUNNING,
                        params=dumps(params),
                    )
                )
        except IntegrityError:
            if self.get_run(run_id) is None:
                raise

    def get_run(self, run_id: str) -> RunRow | None:
        with self.engine.connect() as conn:
            row = (
                conn.execute(select(run).where(run.c.run_id == run_id, run.c.flow == self.flow))
                .mappings()
                .first()
            )
        return None if row is None else run_row(row)

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

    def commit_watermarks(self, run_id: str, values: dict[Side, float | None]) -> None:
        with self.engine.begin() as conn:
            for side, value in values.items():
                if value is not None:
                    self._set_watermark(conn, side, value, run_id)

    def read_summary(self, run_id: str) -> dict[str, Any] | None:
        """The summary a finished run stored (None: no run, or not finished)."""
        with self.engine.connect() as conn:
            blob = conn.execute(
                select(run.c.summary).where(run.c.run_id == run_id, run.c.flow == self.flow)
            ).scalar()
        return None if blob is None else dict(json.loads(blob))
