"""The extract task: stage what changed on one side since its watermark, page by page.

Where the pages come from (the list, a resource's change events, its whole event history
for one Chargebee lists nowhere), Chargebee's delete signals (delete events after the
list) and the tombstones that keep a handled delete from coming back. A rerun replaces
the side's staging rows for the run, so the task can be cleared and run again.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from crmsync.flows.progress import Progress, timed_budget
from crmsync.mapping.model import Mapping as FlowMapping
from crmsync.mapping.model import Side

if TYPE_CHECKING:
    from crmsync.hooks.chargebee import ChargebeeHook
    from crmsync.hooks.customcrm import CustomcrmHook
    from crmsync.store.repository import LinkRow, Repository

log = logging.getLogger("crmsync")


def _chargebee(hook: ChargebeeHook | CustomcrmHook) -> ChargebeeHook:
    """The hook of a task whose side is Chargebee, for what only Chargebee has (its events);
    everything else goes through the :class:`~crmsync.hooks.client.SyncClient` both hooks
    implement. ``crmsync.flows.tasks._hook`` built it for that side, so the side says which
    class it is (no runtime check, as before)."""
    return cast("ChargebeeHook", hook)


def _pages(
    mapping: FlowMapping,
    side: Side,
    hook: ChargebeeHook | CustomcrmHook,
    since: float | None,
    repo: Repository,
) -> Iterator[list[dict[str, Any]]]:
    resource = mapping.side(side).resource
    if side is Side.CHARGEBEE and since is not None and mapping.chargebee.change_events:
        # the resource's list cannot be filtered by updated_at: its events say what changed
        from crmsync.hooks.chargebee_events import iter_changed

        yield from iter_changed(_chargebee(hook), resource, mapping.chargebee.change_events, int(since))
    elif not hook.listable(resource):
        # no documented list at all (Chargebee's business entities): the whole event history,
        # then the ids other records name; one known only by its id is reported, not guessed
        from crmsync.hooks.chargebee_events import iter_known

        if not mapping.chargebee.change_events:
            raise ValueError(
                f"Chargebee documents no list of {resource}: the mapping must name the events "
                "that publish them (chargebee.change_events)"
            )

        def linked(ids: Sequence[str]) -> set[str]:
            return set(repo.get_links_by_cb_id(list(ids)))

        yield from iter_known(_chargebee(hook), resource, mapping.chargebee.change_events, linked)
    elif side is Side.CHARGEBEE and mapping.chargebee.delete_events:
        # the list, then the delete events of the same window (a purged record is in no list)
        yield from _with_delete_signals(mapping, _chargebee(hook), repo, since)
    else:
        yield from hook.iter_changed(resource, since)


#: Reasons of an ``unlink`` audited before audit rows named the deleted sides
#: (``deleted_on``): read only for those older rows (:func:`_chargebee_was_deleted`).
_LEGACY_CHARGEBEE_DELETED_REASONS = ("was deleted in Chargebee", "deleted on both sides")


def _with_delete_signals(
    mapping: FlowMapping, hook: ChargebeeHook, repo: Repository, since: float | None
) -> Iterator[list[dict[str, Any]]]:
    """Chargebee pages for a resource whose deletes are scheduled and purged (customers).

    Chargebee answers ``POST /customers/{id}/delete`` by scheduling the purge ("permanently
    deleted after a few minutes"); until then nothing shows the delete and afterwards the
    customer is in no list, ``include_deleted`` included. So deletes are read from the
    mapping's ``delete_events`` (``customer_deleted``) since the same point as the list,
    after it: a record seen alive in a list page and deleted by an event ends staged
    deleted (a record staged twice keeps the later one). A list record with
    ``"deleted": true`` (where a list still shows one) is a delete as before.

    No resurrection: a record listed alive that is not linked and whose delete was already
    handled (an audited ``delete``, or an ``unlink`` whose Chargebee side was the deleted
    one: a customer the sync deleted, or one a person deleted whose event arrived before
    every list dropped it) is staged as the tombstone it is, so it is neither linked by
    match nor re-created in Customcrm nor written to while it waits for its purge (the
    engine says nothing more of a delete it already handled). Its id is not synced again.

    A delete event older than the record now linked under its id (a customer re-created
    with the same id after the purge) is about the record before it and is dropped.
    On a first run or a full resync (``since`` None) the whole event history is read and
    only events about linked records are kept.
    """
    from crmsync.hooks.chargebee_events import iter_changed_since

    resource = mapping.chargebee.resource
    for page in hook.iter_changed(resource, since):
        yield _tombstone_handled_deletes(repo, page)
    for page in iter_changed_since(
        hook, resource, mapping.chargebee.delete_events, None if since is None else int(since)
    ):
        links = repo.get_links_by_cb_id([str(r["id"]) for r in page])
        kept = [
            r
            for r in page
            if (since is not None or str(r["id"]) in links)
            and not _older_than_link(r, links.get(str(r["id"])))
        ]
        if kept:
            yield kept


def _older_than_link(rec: dict[str, Any], link_row: LinkRow | None) -> bool:
    if link_row is None:
        return False
    try:
        return int(rec.get("resource_version") or 0) < int(link_row["cb_version"] or 0)
    except (TypeError, ValueError):
        return False


def _tombstone_handled_deletes(repo: Repository, page: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``page`` with each unlinked live record whose Chargebee delete was handled marked deleted."""
    alive = [str(r["id"]) for r in page if not r.get("deleted")]
    dead = _deleted_in_chargebee(repo, alive)
    if not dead:
        return page
    dead -= set(repo.get_links_by_cb_id(sorted(dead)))
    if dead:
        log.info(
            "extract chargebee: %d records listed alive were deleted already (waiting for their purge): %s",
            len(dead),
            ", ".join(sorted(dead)[:10]),
        )
    return [{**r, "deleted": True} if str(r["id"]) in dead else r for r in page]


def _deleted_in_chargebee(repo: Repository, ids: Sequence[str]) -> set[str]:
    """Those of ``ids`` whose Chargebee record the audit says was deleted."""
    if not ids:
        return set()
    return {
        str(cb_id)
        for cb_id, kind, detail in repo.chargebee_deletes_audited(ids)
        if _chargebee_was_deleted(kind, detail)
    }


def _chargebee_was_deleted(kind: str, detail: str | None) -> bool:
    """Whether an audited end of a pair deleted its Chargebee record.

    An audited ``delete`` always did (deleted by a person, or by the sync under policy
    propagate). An ``unlink`` did when its detail's ``deleted_on`` (the sides the plan's
    Decision found deleted, engine/settle.py) names Chargebee. Audit rows written before
    ``deleted_on`` existed are read by their reason, as they were then.
    """
    if kind == "delete":
        return True
    try:
        data = json.loads(detail or "{}") or {}
    except ValueError:
        data = {}
    if not isinstance(data, dict):
        return False
    if "deleted_on" in data:
        return Side.CHARGEBEE.value in (data["deleted_on"] or [])
    reason = str(data.get("reason") or "")
    return any(text in reason for text in _LEGACY_CHARGEBEE_DELETED_REASONS)


def _prefetched(pages: Iterator[list[dict[str, Any]]]) -> Iterator[list[dict[str, Any]]]:
    """The same pages, the next one fetched by a helper thread while this one is staged.

    At most two pages are held (memory stays flat); an error of the fetch is raised here,
    at the page where it happened.
    """
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="extract-prefetch") as pool:
        ahead = pool.submit(next, pages, None)
        while True:
            page = ahead.result()
            if page is None:
                return
            ahead = pool.submit(next, pages, None)
            yield page


def extract(
    mapping: FlowMapping,
    side: Side,
    run_id: str,
    params: dict[str, Any],
    hook: ChargebeeHook | CustomcrmHook,
    repo: Repository,
) -> int:
    """Stage what changed on ``side`` since its watermark (minus the overlap), page by page."""
    from crmsync.engine.canonical import CHARGEBEE_META, CUSTOMCRM_META, content_hash, match_key, side_record

    repo.begin_run(run_id, params)
    # a reconcile run reads everything and never commits the watermark it records
    full = params.get("full_resync") or params.get("reconcile")
    watermark = None if full else repo.get_watermark(side)
    since = None if watermark is None else watermark - mapping.run.overlap_seconds
    started = time.time()
    meta = CHARGEBEE_META if side is Side.CHARGEBEE else CUSTOMCRM_META
    repo.clear_staging(run_id, side)
    progress = Progress(f"extract {side.value}", waited=timed_budget(hook))
    evented = side is Side.CHARGEBEE and bool(mapping.chargebee.change_events)
    unlistable = side is Side.CHARGEBEE and not hook.listable(mapping.chargebee.resource)
    log.info(
        "extract %s %s: %s",
        side.value,
        mapping.side(side).resource,
        "everything (first run or full resync)" + (" from its whole event history" if unlistable else "")
        if since is None
        else f"changed since {datetime.fromtimestamp(since, UTC).isoformat()}"
        + (" (from its events)" if evented else "")
        + (
            f", then its {', '.join(mapping.chargebee.delete_events)} events"
            if side is Side.CHARGEBEE and mapping.chargebee.delete_events
            else ""
        ),
    )
    # Load the connection and its rate budget here, in the task's thread, not in the fetch thread.
    getattr(hook, "settings", None)
    for page in _prefetched(_pages(mapping, side, hook, since, repo)):
        rows = []
        for raw in page:
            rec = side_record(mapping, side, raw, meta)
            rows.append((rec, match_key(mapping, rec.values), content_hash(rec.values)))
        progress.add(repo.stage(run_id, rows))
    progress.log()
    column = "crm_next_watermark" if side is Side.CUSTOMCRM else "cb_next_watermark"
    repo.set_run(run_id, **{column: started})
    return progress.done
