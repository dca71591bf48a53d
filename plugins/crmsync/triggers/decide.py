"""The one decision of change detection, pure: which records changed since the flow's
last sync and were not written by the sync itself.

A record seen by a poll counts when it changed at or after the flow's watermark (changes
before it were synced) and its version is not one its link recorded: a link's
``crm_version`` / ``cb_version`` is the version the sync last wrote or read, so a record
still at that version is the sync's own write (or already synced). A (record, version)
already announced is not announced again: a record the run holds back (a bad value)
must not start a run at every poll.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Seen:
    """One record as a poll saw it: id, version and when it changed (Unix seconds)."""

    id: str
    version: str | None
    changed_at: float


def unsynced(
    seen: Iterable[Seen],
    linked: Mapping[str, Collection[str]],
    since: float | None,
    announced: Collection[tuple[str, str | None]] = (),
) -> list[Seen]:
    """The records of ``seen`` that changed since the last sync, not by the sync.

    :param linked: record id → versions its links recorded (:func:`crmsync.store.changes.linked_versions`).
    :param since: the flow's watermark; None (never synced) → nothing counts: a flow's
        first run comes from its schedule, so deploying does not start every flow at once.
    :param announced: (id, version) pairs already announced by this trigger.
    """
    if since is None:
        return []
    out: list[Seen] = []
    keys: set[tuple[str, str | None]] = set()
    for rec in seen:
        key = (rec.id, rec.version)
        if rec.changed_at < int(since) or key in announced or key in keys:
            continue
        if rec.version is not None and rec.version in linked.get(rec.id, ()):
            continue  # the sync's own write, or already synced
        keys.add(key)
        out.append(rec)
    return out


__all__ = ["Seen", "unsynced"]
