"""Rows the store tests build: links as update_links writes them, staged records."""

from __future__ import annotations

import json
from typing import Any

from crmsync.engine.canonical import SideRecord, content_hash

FLOW = "contact_customer"
OTHER = "company_business_entity"


def link_values(crm_id: str, cb_id: str, match_key: str | None = None, **values: Any) -> dict[str, Any]:
    """A link row as update_links writes it (``apply``'s ``upsert_links``)."""
    base = values or {"email": f"{crm_id}@example.com"}
    blob = json.dumps(base, sort_keys=True)
    return {
        "crm_id": crm_id,
        "cb_id": cb_id,
        "match_key": match_key,
        "base": blob,
        "crm_snapshot": blob,
        "cb_snapshot": blob,
        "base_hash": content_hash(base),
        "crm_version": "1",
        "cb_version": "1",
        "crm_updated_at": 1.0,
        "cb_updated_at": 2.0,
    }


def staged(rec: SideRecord, key: str | None = None) -> tuple[SideRecord, str | None, str]:
    """A row for ``stage``: (record, match key, content hash)."""
    return rec, key, content_hash(rec.values)
