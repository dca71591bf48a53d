"""order_order for a Chargebee site with legacy order management (issue 12).

Every site since 2021-10-01 has current order management: orders are generated from
invoices and ``POST /orders`` is refused, so the shipped mapping never creates Chargebee
orders. The tests of the create path (a Customcrm order naming a paid invoice creates its
Chargebee order, whose number then flows back) run it explicitly in legacy mode: this
mapping (``chargebee.create: legacy_order_management``) against a sandbox set to
``order_management: legacy``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from crmsync.mapping.model import Mapping, load_mapping

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "include" / "mappings" / "order_order.yaml"


def legacy_order_order_doc() -> dict[str, Any]:
    """The shipped order_order mapping with creates on, as a legacy site may set it."""
    doc: dict[str, Any] = yaml.safe_load(SHIPPED.read_text())
    doc["chargebee"]["create"] = "legacy_order_management"
    return doc


def write_legacy_order_order(folder: Path) -> Path:
    """``folder/order_order.yaml`` in legacy mode; returns its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "order_order.yaml"
    path.write_text(yaml.safe_dump(legacy_order_order_doc(), sort_keys=False))
    return path


def legacy_order_order(folder: Path) -> Mapping:
    return load_mapping(write_legacy_order_order(folder))
