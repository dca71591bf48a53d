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

**Change detection.** Each flow also has a *changes* Asset, ``crmsync://<flow>/changes``,
watched by two triggers the triggerer runs (:mod:`crmsync.triggers`): one polls the flow's
Customcrm list, one reads Chargebee's events (one poll per site shared by every flow).
They update the Asset when a record changed since the flow's last sync, not by the sync.
A flow without references runs on its changes **or** its mapping's schedule (the clock
is the safety net); a flow with references runs on its changes **or** when all its
upstream flows updated their links (its upstream flows' clock is its safety net, as
above). ``[crmsync] change_detection = off`` (``AIRFLOW__CRMSYNC__CHANGE_DETECTION``)
restores the schedules without watchers; a mapping without a schedule (manual only) gets
no watchers either.

Pure and cheap: building an Asset touches no database (DAG files parse fast; the
triggers read their connection and the link store only when the triggerer runs them).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from airflow.sdk import Asset, AssetAll, AssetAny, AssetOrTimeSchedule

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


def change_detection_enabled() -> bool:
    """``[crmsync] change_detection`` (default on): whether flows get change watchers.
    Read from Airflow's config, never a connection: DAG parsing touches no database."""
    from airflow.configuration import conf

    value = conf.get("crmsync", "change_detection", fallback="on")
    return str(value).strip().lower() not in {"off", "false", "0", "no"}


def changes_asset(mapping: FlowMapping) -> Asset:
    """The Asset a flow's change watchers update: "a record of ``flow`` changed since its
    last sync" (one trigger per side; see :mod:`crmsync.triggers`)."""
    from airflow.sdk import Asset, AssetWatcher

    from crmsync.mapping.capabilities import RESOURCES
    from crmsync.triggers.chargebee import ChargebeeEventTrigger, event_types
    from crmsync.triggers.customcrm import CustomcrmChangeTrigger

    flow, conns, cb = mapping.flow, mapping.connections, mapping.chargebee
    res = RESOURCES.get(cb.resource)
    object_key = res.object_key if res is not None else cb.resource.removesuffix("s")
    watchers = [
        AssetWatcher(
            name=f"crmsync_{flow}_customcrm",
            trigger=CustomcrmChangeTrigger(flow, mapping.customcrm.resource, conns.customcrm, conns.store),
        ),
        AssetWatcher(
            name=f"crmsync_{flow}_chargebee",
            trigger=ChargebeeEventTrigger(
                flow,
                object_key,
                event_types(cb.resource, cb.change_events, cb.delete_events),
                conns.chargebee,
                conns.store,
            ),
        ),
    ]
    return Asset(
        name=f"crmsync.{flow}.changes", uri=f"crmsync://{flow}/changes", group=ASSET_GROUP, watchers=watchers
    )


def schedule_for(
    mapping: FlowMapping, known_flows: Collection[str]
) -> str | AssetAll | AssetAny | AssetOrTimeSchedule | None:
    """The DAG's ``schedule`` (see the module docstring): a flow that references no other
    deployed flow runs on its changes or its mapping's schedule; a flow with references on
    its changes or all its upstream flows' links Assets (no clock of its own). Without
    change detection (switched off, or a manual-only mapping) the same minus the changes."""
    from airflow.sdk import AssetAll, AssetAny, AssetOrTimeSchedule, CronTriggerTimetable

    upstream = upstream_flows(mapping, known_flows)
    links = AssetAll(*(links_asset(f) for f in upstream)) if upstream else None
    if mapping.schedule is None or not change_detection_enabled():
        return links if links is not None else mapping.schedule
    changes = changes_asset(mapping)
    if links is not None:
        return AssetAny(changes, links)
    return AssetOrTimeSchedule(
        timetable=CronTriggerTimetable(mapping.schedule, timezone="UTC"), assets=changes
    )


__all__ = [
    "ASSET_GROUP",
    "change_detection_enabled",
    "changes_asset",
    "links_asset",
    "schedule_for",
    "upstream_flows",
]
