"""The Assets that order the flows: a flow runs after the flows whose links it references.

After a flow's ``update_links`` succeeds, its ``publish_links`` task updates the flow's
*links* Asset: "the links of this flow changed" (skipped for a dry run or a
reconciliation, which change nothing). A flow whose fields reference another flow's links
(``ref:`` in the mapping, :attr:`~crmsync.mapping.model.Mapping.depends_on`) is scheduled
on those Assets (all of them, each updated since the flow's last run): a contact is
synced after the business entities it references were linked, an order after both its
customers and its users.

Such a *downstream* flow has no clock of its own: its safety net is its upstream flows'
schedule (every run of an upstream flow runs it after). That is deliberate. A time
schedule fires every unpaused DAG at the same tick (and at once when they are unpaused),
and a Chargebee customer created before its company's business entity is linked is
created in the site's default entity, where Chargebee's customer API cannot move it
(only a business-entity transfer can). Ordered by Assets, unpausing every DAG at once
ends in the state of running the flows in dependency order
(``tests/e2e/test_dependency_order.py``). Pausing an upstream flow therefore pauses the
flows that depend on it (they can still be triggered by hand).

Pure and cheap: building an Asset touches no database (DAG files parse fast).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow.sdk import Asset, AssetAll

    from crmsync.mapping.model import Mapping as FlowMapping

#: the group the sync's Assets are listed under in the UI's Assets page
ASSET_GROUP = "crmsync"


def links_asset(flow: str) -> Asset:
    """The Asset a flow's ``update_links`` updates: "the links of ``flow`` changed"."""
    from airflow.sdk import Asset

    return Asset(name=f"crmsync.{flow}.links", uri=f"crmsync://{flow}/links", group=ASSET_GROUP)


def upstream_flows(mapping: FlowMapping, known_flows: Collection[str]) -> list[str]:
    """The flows ``mapping`` must run after: those it references that are deployed with it
    (a reference to a flow that is not among ``known_flows`` orders nothing)."""
    return [f for f in mapping.depends_on if f in known_flows]


def schedule_for(mapping: FlowMapping, known_flows: Collection[str]) -> str | AssetAll | None:
    """The DAG's ``schedule``: the mapping's own for a flow that references no other
    deployed flow; else the upstream flows' links Assets, all of them (see the module
    docstring for why a downstream flow has no clock of its own)."""
    from airflow.sdk import AssetAll

    upstream = upstream_flows(mapping, known_flows)
    if not upstream:
        return mapping.schedule
    return AssetAll(*(links_asset(f) for f in upstream))


__all__ = ["ASSET_GROUP", "links_asset", "schedule_for", "upstream_flows"]
