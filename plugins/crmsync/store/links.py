"""Links, quarantine and audit of one flow: the pairs the sync keeps in step, the
records it holds back with a reason, and what it decided on a person's behalf."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, TypedDict

from sqlalchemy import and_, bindparam, delete, func, insert, select, update
from sqlalchemy.engine import Connection, RowMapping

from crmsync.engine.status import HoldKind
from crmsync.mapping.model import Side
from crmsync.store.codec import FlowStore, chunks, now
from crmsync.store.schema import audit, link, plan, quarantine


class LinkRow(TypedDict):
    """One row of ``crmsync_link``: a pair of records and what both sides last agreed on."""

    id: int
    flow: str
    crm_id: str
    crm_slot: str
    cb_id: str
    match_key: str | None
    base: str  # JSON
    crm_snapshot: str  # JSON
    cb_snapshot: str  # JSON
    base_hash: str
    crm_version: str | None
    cb_version: str | None
    crm_updated_at: float
    cb_updated_at: float
    created_at: Any
    synced_at: Any
    last_run_id: str | None


class QuarantineRow(TypedDict):
    """One row of ``crmsync_quarantine``: a record held back, why, and since when; its
    side and kind as their enums (``staged`` is the held record's JSON, None if not kept)."""

    flow: str
    side: Side
    record_id: str
    kind: HoldKind
    reason: str
    attempts: int
    staged: str | None
    content_hash: str | None
    first_seen: datetime
    last_seen: datetime
    run_id: str | None
    retry_requested: bool


def quarantine_row(row: RowMapping) -> QuarantineRow:
    """Decode one selected quarantine row (every column): the one place they are decoded."""
    return QuarantineRow(
        flow=row["flow"],
        side=Side(row["side"]),
        record_id=row["record_id"],
        kind=HoldKind(row["kind"]),
        reason=row["reason"],
        attempts=int(row["attempts"] or 0),
        staged=row["staged"],
        content_hash=row["content_hash"],
        first_seen=row["first_seen"],
        last_seen=row["last_seen"],
        run_id=row["run_id"],
        retry_requested=bool(row["retry_requested"]),
    )


def link_row(row: RowMapping) -> LinkRow:
    return LinkRow(
        id=row["id"],
        flow=row["flow"],
        crm_id=row["crm_id"],
        crm_slot=row["crm_slot"],
        cb_id=row["cb_id"],
        match_key=row["match_key"],
        base=row["base"],
        crm_snapshot=row["crm_snapshot"],
        cb_snapshot=row["cb_snapshot"],
        base_hash=row["base_hash"],
        crm_version=row["crm_version"],
        cb_version=row["cb_version"],
        crm_updated_at=row["crm_updated_at"],
        cb_updated_at=row["cb_updated_at"],
        created_at=row["created_at"],
        synced_at=row["synced_at"],
        last_run_id=row["last_run_id"],
    )


class LinkStore(FlowStore):
    """The links, quarantine and audit rows of one flow."""

    def linked_by_match_key(self, keys: Sequence[str]) -> dict[str, tuple[str, str]]:
        """Existing links carrying these match keys: key → (crm_id, cb_id)."""
        out: dict[str, tuple[str, str]] = {}
        with self.engine.connect() as conn:
            for chunk in chunks(list(keys)):
                for mk, crm_id, cb_id in conn.execute(
                    select(link.c.match_key, link.c.crm_id, link.c.cb_id).where(
                        link.c.flow == self.flow, link.c.match_key.in_(chunk)
                    )
                ):
                    out[mk] = (crm_id, cb_id)
        return out

    def count_links(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).where(link.c.flow == self.flow)).scalar() or 0)

    def get_links_by_cb_id(self, cb_ids: Sequence[str]) -> dict[str, LinkRow]:
        """Links of this flow by Chargebee id, for many ids (one query per chunk)."""
        out: dict[str, LinkRow] = {}
        with self.engine.connect() as conn:
            for chunk in chunks(sorted(set(cb_ids))):
                for row in conn.execute(
                    select(link).where(link.c.flow == self.flow, link.c.cb_id.in_(chunk))
                ).mappings():
                    out[row["cb_id"]] = link_row(row)
        return out

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
                for chunk in chunks(rids):
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
            for chunk in chunks(plan_ids):
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
        for chunk in chunks(list(merged)):
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
            for chunk in chunks(params):
                conn.execute(stmt, list(chunk))
        created = now()
        for group in inserts.values():
            for chunk in chunks(group):
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

    def get_link(self, crm_id: str | None = None, cb_id: str | None = None) -> LinkRow | None:
        cond = [link.c.flow == self.flow]
        if crm_id is not None:
            cond.append(link.c.crm_id == crm_id)
        if cb_id is not None:
            cond.append(link.c.cb_id == cb_id)
        with self.engine.connect() as conn:
            row = conn.execute(select(link).where(*cond)).mappings().first()
        return None if row is None else link_row(row)

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
            for chunk in chunks(list(ids)):
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

    def quarantined(self) -> list[QuarantineRow]:
        """Every hold of the flow, by record id."""
        with self.engine.connect() as conn:
            rows = list(
                conn.execute(
                    select(quarantine).where(quarantine.c.flow == self.flow).order_by(quarantine.c.record_id)
                ).mappings()
            )
        return [quarantine_row(r) for r in rows]

    def partners(self, side: Side, ids: Sequence[str]) -> dict[str, str]:
        """The linked partner of each of ``ids`` (records of ``side``) that has a link:
        id → the other side's id."""
        key_col = link.c.cb_id if side is Side.CHARGEBEE else link.c.crm_id
        val_col = link.c.crm_id if side is Side.CHARGEBEE else link.c.cb_id
        out: dict[str, str] = {}
        with self.engine.connect() as conn:
            for chunk in chunks(list(ids)):
                for k, v in conn.execute(
                    select(key_col, val_col).where(link.c.flow == self.flow, key_col.in_(chunk))
                ):
                    out[k] = v
        return out

    def chargebee_deletes_audited(self, cb_ids: Sequence[str]) -> list[tuple[str, str, str | None]]:
        """Audit rows ending a pair (kinds ``unlink`` and ``delete``) naming these Chargebee
        ids: ``(cb_id, kind, detail JSON)``."""
        out: list[tuple[str, str, str | None]] = []
        with self.engine.connect() as conn:
            for chunk in chunks(sorted(set(cb_ids))):
                out.extend(
                    (cb_id, kind, detail)
                    for cb_id, kind, detail in conn.execute(
                        select(audit.c.cb_id, audit.c.kind, audit.c.detail).where(
                            audit.c.flow == self.flow,
                            audit.c.kind.in_(("unlink", "delete")),
                            audit.c.cb_id.in_(chunk),
                        )
                    )
                )
        return out
