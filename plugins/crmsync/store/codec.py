"""What every part of the link store shares: JSON coding of values and records, batching,
and the base of the per-table-family stores (an engine and the flow they serve)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import fields
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import or_
from sqlalchemy.engine import Engine, RowMapping

from crmsync.engine.canonical import SideRecord
from crmsync.engine.plan import LinkState
from crmsync.engine.status import WriteStatus
from crmsync.mapping.model import Side

#: Rows per statement or per streamed batch.
BATCH = 500


class FlowStore:
    """One table family of the link store as seen by one flow."""

    def __init__(self, engine: Engine, flow: str) -> None:
        self.engine = engine
        self.flow = flow


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


def record_from_staging(row: Mapping[str, Any] | RowMapping, prefix: str = "") -> SideRecord:
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


def link_state(row: Mapping[str, Any] | RowMapping) -> LinkState:
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


def chunks(items: Sequence[Any], size: int = BATCH) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def finished(status: Any) -> Any:
    """A write status column that is no longer waiting (no write, or done either way)."""
    return or_(status.is_(None), status.not_in((WriteStatus.PENDING, WriteStatus.IN_FLIGHT)))
