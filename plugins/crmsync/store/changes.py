"""What the change-detection triggers read from the link store: a flow's watermark and
the versions its links recorded (:mod:`crmsync.triggers`).

Read-only and cheap (one indexed query each), so a trigger can ask every poll. Runs in a
thread of the triggerer (``asyncio.to_thread``), never on its event loop.
"""

from __future__ import annotations

from collections.abc import Collection
from datetime import UTC, datetime, timedelta

from sqlalchemy import and_, select
from sqlalchemy.engine import Engine

from crmsync.mapping.model import Side
from crmsync.store.codec import chunks
from crmsync.store.schema import link, run, watermark


def flow_watermark(engine: Engine, flow: str, side: Side) -> float | None:
    """The flow's watermark on ``side`` (Unix seconds): changes before it were synced.
    None when the flow never finished a run (its first run comes from its schedule)."""
    with engine.connect() as conn:
        value = conn.execute(
            select(watermark.c.value).where(and_(watermark.c.flow == flow, watermark.c.side == side.value))
        ).scalar_one_or_none()
    return None if value is None else float(value)


def linked_versions(engine: Engine, flow: str, side: Side, ids: Collection[str]) -> dict[str, set[str]]:
    """Record id on ``side`` → the versions its links recorded (``crm_version`` /
    ``cb_version``): the version the sync last wrote or saw. A one-to-many flow may
    hold several links for one Customcrm record, hence a set."""
    id_col = link.c.crm_id if side is Side.CUSTOMCRM else link.c.cb_id
    version_col = link.c.crm_version if side is Side.CUSTOMCRM else link.c.cb_version
    out: dict[str, set[str]] = {}
    if not ids:
        return out
    with engine.connect() as conn:
        for part in chunks(sorted(set(ids)), 500):
            rows = conn.execute(
                select(id_col, version_col).where(and_(link.c.flow == flow, id_col.in_(part)))
            )
            for rid, version in rows:
                if version is not None:
                    out.setdefault(str(rid), set()).add(str(version))
    return out


def run_in_progress(engine: Engine, flow: str, max_age_seconds: float = 1800.0) -> bool:
    """Whether a run of ``flow`` started less than ``max_age_seconds`` ago and has not
    finished. Its writes come back as changes before ``update_links`` records their
    versions, so detection waits for it (a run that crashed stops counting after the age)."""
    since = datetime.now(UTC) - timedelta(seconds=max_age_seconds)
    with engine.connect() as conn:
        row = conn.execute(
            select(run.c.run_id)
            .where(and_(run.c.flow == flow, run.c.status != "finished", run.c.started_at > since))
            .limit(1)
        ).first()
    return row is not None


__all__ = ["flow_watermark", "linked_versions", "run_in_progress"]
