"""Execute one plan row's write on one side, and recover when a write's fate is unknown.

A writer never decides *what* to write (the plan did); it decides *how*: which
endpoint takes which field, which id or idempotency key makes a repeated create
harmless, and what a failure means for the record (``stale``: the record changed under
us and the next run will see it; ``rejected``: the API refused the data, a person must
fix it; ``failed``: the API could not be reached within the retry budget).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from crmsync.engine.canonical import (
    CHARGEBEE_META,
    CUSTOMCRM_META,
    Meta,
    get_path,
    set_path,
    side_record,
    to_canonical,
    to_side,
)
from crmsync.engine.plan import Op, chargebee_create_id
from crmsync.engine.status import WriteStatus
from crmsync.hooks.errors import (
    ApiError,
    AuthError,
    Conflict,
    NotFound,
    PreconditionFailed,
    RateLimited,
    ValidationError,
)
from crmsync.mapping.capabilities import Assignment, capability
from crmsync.mapping.model import Mapping as FlowMapping
from crmsync.mapping.model import Side

if TYPE_CHECKING:
    from crmsync.flows.refs import RefResolver
    from crmsync.hooks.chargebee import ChargebeeHook
    from crmsync.hooks.client import SyncClient
    from crmsync.store.plan import StoredPlanRow

log = logging.getLogger(__name__)


def _planned_id(rid: str | None, op: Op) -> str:
    """The record id a planned write names: the target of an update or delete, the source
    of a create (transform plans none of them without it)."""
    if rid is None:
        raise ValueError(f"a planned {op} names no record id")
    return rid


@dataclass
class Outcome:
    status: WriteStatus  # DONE, STALE, REJECTED or FAILED
    result: dict[str, Any] | None = None
    error: str | None = None
    #: the write was refused for the API's rate limit (HTTP 429) after every retry: the
    #: upsert task counts these to alert "site blocked", from this flag, not the error text
    rate_limited: bool = False


def idempotency_key(*parts: str | None) -> str:
    """Same plan row, same key: a rerun of a create replays instead of creating again."""
    return hashlib.sha256("|".join(p or "" for p in parts).encode()).hexdigest()[:40]


def result_of(mapping: FlowMapping, side: Side, raw: dict[str, Any], meta: Meta) -> dict[str, Any]:
    """What a side holds after a write, in the shape update_links stores."""
    rec = side_record(mapping, side, raw, meta)
    return {"id": rec.id, "values": rec.values, "version": rec.version, "updated_at": rec.updated_at}


def _generation(row: StoredPlanRow) -> str:
    """Creates share a key across runs (a crash in one run, a rerun in the next must
    not create twice); a restore is a new generation of the record, so it gets its own."""
    return f"restore:{row['run_id']}" if row["action"] == "restore" else ""


def _fail(label: str, rid: str | None, err: ApiError) -> Outcome:
    if isinstance(err, AuthError):
        raise err  # a configuration problem: stop the task, do not blame the record
    status = (
        WriteStatus.REJECTED
        if isinstance(err, ValidationError)
        or (err.status is not None and 400 <= err.status < 500 and not err.retryable)
        else WriteStatus.FAILED
    )
    what = f"{label} {rid}" if rid else label
    fix = (
        "; correct the value named above and the record is retried when it changes"
        if status is WriteStatus.REJECTED
        else "; retried automatically next run"
    )
    refused = isinstance(err, RateLimited) or err.status == 429
    return Outcome(status, error=f"{what}: {err}{fix}", rate_limited=refused)


class ChargebeeWriter:
    """Writes to Chargebee, routing each field to the endpoint that accepts it."""

    side = Side.CHARGEBEE

    def __init__(
        self, mapping: FlowMapping, hook: ChargebeeHook, run_id: str, refs: RefResolver | None = None
    ) -> None:
        self.mapping = mapping
        self.hook = hook
        self.run_id = run_id
        self.refs = refs
        self._ensured = False
        self.cap = capability(mapping.chargebee.resource)
        self.resource = mapping.chargebee.resource
        self.label = f"Chargebee {mapping.chargebee.label}"
        self.rereads = 0
        #: retrieves made right before an assigning write (one per ``update_billing_info``);
        #: counted in ``rereads`` too, which the upsert task logs
        self.fresh_reads = 0

    def _gone(self, rid: str) -> str:
        """Why a write to a linked record that answers 404 was not made, and what follows.

        Chargebee deletes some records late (a customer is purged minutes after the delete
        request) and a 404 says only that the record is gone, not how: the write is
        dropped as stale (the base stays, nothing is held) and the flow's delete policy
        applies when the next run reads the delete (its event or a deleted record), as
        for any other delete. A 404 alone is never taken as the delete itself.
        """
        events = self.mapping.chargebee.delete_events or [
            e for e in self.mapping.chargebee.change_events if e.endswith("_deleted")
        ]
        signal = f"its {' / '.join(events)} event" if events else "the deleted record"
        return (
            f"{self.label} {rid} answered 404 (not found): it was deleted in Chargebee since it was "
            f"read, so it was not written; the next run reads {signal} and applies the delete policy "
            f"on_chargebee_delete: {self.mapping.delete.on_chargebee_delete.value}"
        )

    def _result(self, raw: dict[str, Any]) -> dict[str, Any]:
        result = result_of(self.mapping, Side.CHARGEBEE, raw, CHARGEBEE_META)
        if self.refs is not None and self.refs.active:
            raw_values = result["values"]
            result["values"] = self.refs.canonical_values(raw_values)
            pending = self.refs.pending(raw_values, result["values"])
            if pending:  # kept with the link until their flow links them (refs.resolve_link)
                result["pending_refs"] = pending
        return result

    def _ensure_parent(self) -> None:
        """Create the parent a create needs (e.g. the item family) once, if it is missing."""
        spec = self.mapping.chargebee.ensure
        if spec is None or self._ensured:
            return
        if self.hook.retrieve(spec.resource, spec.id) is None:
            with contextlib.suppress(Conflict):  # created concurrently by another worker
                self.hook.create(
                    spec.resource,
                    {"id": spec.id, **spec.params},
                    idempotency_key=idempotency_key("ensure", spec.resource, spec.id),
                )
        self._ensured = True

    def execute(self, row: StoredPlanRow, *, recovering: bool, reread: bool) -> Outcome:
        changes = json.loads(row["cb_changes"] or "{}")
        op = row["cb_op"]
        rid = row["cb_id"]
        try:
            if op == Op.CREATE:
                return self._create(row, changes, recovering)
            if op == Op.UPDATE:
                return self._update(_planned_id(rid, op), row, changes, reread)
            if op == Op.DELETE:
                with contextlib.suppress(NotFound):
                    self.hook.action(self.resource, _planned_id(rid, op), self.cap.delete_action)
                return Outcome(WriteStatus.DONE, {"id": rid, "deleted": True})
            raise ValueError(f"unknown op {op!r}")
        except ApiError as err:
            return _fail(self.label, rid or f"(new, for Customcrm {row['crm_id']})", err)

    def _create(self, row: StoredPlanRow, changes: dict[str, Any], recovering: bool) -> Outcome:
        new_id = chargebee_create_id(
            self.mapping,
            _planned_id(row["crm_id"], Op.CREATE),
            {**json.loads(row["merged"] or "{}"), **changes},
        )
        self._ensure_parent()
        params = {**self.mapping.chargebee.create_defaults, **to_side(self.mapping, Side.CHARGEBEE, changes)}
        existing = None
        if new_id and recovering:
            existing = self.hook.retrieve(self.resource, new_id)
        if existing is None:
            if new_id:
                params["id"] = new_id
            if self.cap.create_params is not None:
                params = {k: v for k, v in params.items() if k in self.cap.create_params}
            key = idempotency_key(self.mapping.flow, "cb-create", row["crm_id"], _generation(row))
            try:
                created = self.hook.create(self.resource, params, idempotency_key=key)
                # Fields the create endpoint does not take (an item's status) follow by update.
                return self._reconcile(created, changes)
            except Conflict:
                if not new_id:
                    raise
                existing = self.hook.retrieve(self.resource, new_id)
                if existing is None:
                    raise
        # The record exists (we made it before a crash): bring it to the planned values.
        return self._reconcile(existing, changes)

    def _reconcile(self, existing: dict[str, Any], changes: dict[str, Any]) -> Outcome:
        now = to_canonical(self.mapping, Side.CHARGEBEE, existing)
        diff = {k: v for k, v in changes.items() if now.get(k) != v}
        if not diff:
            return Outcome(WriteStatus.DONE, self._result(existing))
        raw = self._write_fields(str(existing["id"]), diff, {**now, **changes}, fresh=existing)
        return Outcome(WriteStatus.DONE, self._result(raw or existing))

    def _update(self, rid: str, row: StoredPlanRow, changes: dict[str, Any], reread: bool) -> Outcome:
        if_version = row["cb_if_version"]
        current: dict[str, Any] | None = None
        if reread and if_version:
            # No If-Match in Chargebee: re-read an old extract's record right before
            # writing so an edit made since the extract is not overwritten.
            self.rereads += 1
            current = self.hook.retrieve(self.resource, rid)
            if current is None:
                return Outcome(WriteStatus.STALE, error=self._gone(rid))
            if str(current.get("resource_version")) != if_version:
                return Outcome(
                    WriteStatus.STALE, error=f"{self.label} {rid} changed since it was read; synced next run"
                )
        merged = json.loads(row["merged"] or "{}")
        try:
            raw = self._write_fields(rid, changes, merged, fresh=current, if_version=if_version)
        except NotFound:
            return Outcome(WriteStatus.STALE, error=self._gone(rid))
        except _ChangedSinceRead as stale:
            return Outcome(WriteStatus.STALE, error=str(stale))
        return Outcome(WriteStatus.DONE, self._result(raw) if raw else None)

    def _write_fields(
        self,
        rid: str,
        changes: dict[str, Any],
        merged: dict[str, Any],
        *,
        fresh: dict[str, Any] | None = None,
        if_version: str | None = None,
    ) -> dict[str, Any] | None:
        """Send each changed field through the endpoint that accepts it.

        An endpoint that assigns (``capabilities.Assignment``: ``update_billing_info``
        removes every billing field a call does not send, as Chargebee documents) gets
        the whole mapped group (from the merged record) plus the current value of every
        field it covers that the mapping does not own, read fresh right before the write:
        a sync write never changes a field the mapping does not own. The fresh read is
        the stale-write guard too: a record whose ``resource_version`` moved since the
        extract (``if_version``) is not written (:class:`_ChangedSinceRead`), it is synced
        next run, unless it already holds every planned value (our own write applied
        before a crash or a lost response: nothing to send). Cost: one retrieve per
        assigning write, none when the stale-write re-read already fetched the record
        (``fresh``).
        """
        routes = self._routes(changes)
        assigning = {
            route: found
            for route, fields in routes.items()
            if (found := self.cap.assignment(route, [self.mapping.field(n).chargebee for n in fields]))
        }
        if assigning and fresh is None:
            # Read before any write of this row: our own writes below move resource_version.
            self.fresh_reads += 1
            self.rereads += 1
            fresh = self.hook.retrieve(self.resource, rid)
            if fresh is None:
                raise _ChangedSinceRead(self._gone(rid))
            if if_version and str(fresh.get("resource_version")) != if_version:
                now = to_canonical(self.mapping, Side.CHARGEBEE, fresh)
                if all(now.get(k) == v for k, v in changes.items()):
                    # Our own write, applied before a crash or a lost response: done.
                    return fresh
                raise _ChangedSinceRead(f"{self.label} {rid} changed since it was read; synced next run")
        raw: dict[str, Any] | None = None
        for route, fields in routes.items():
            assignment = assigning.get(route)
            if assignment is None:
                params = to_side(self.mapping, Side.CHARGEBEE, fields)
            else:
                assert fresh is not None
                params = self._assigned_params(assignment, fields, changes, merged, fresh)
            if route == "update":
                raw = self.hook.update(self.resource, rid, params)
            else:
                raw = self.hook.action(self.resource, rid, route, params)
        return raw

    def _routes(self, changes: dict[str, Any]) -> dict[str, dict[str, Any]]:
        """The changed fields by the endpoint that writes them (``update`` or an action)."""
        routes: dict[str, dict[str, Any]] = {}
        for name, value in changes.items():
            path = self.mapping.field(name).chargebee
            route = self.cap.update_route(path)
            if route is None:
                raise ValueError(f"{self.label}.{path} has no update endpoint")
            routes.setdefault(route, {})[name] = value
        return routes

    def _assigned_params(
        self,
        assignment: Assignment,
        fields: dict[str, Any],
        changes: dict[str, Any],
        merged: dict[str, Any],
        fresh: dict[str, Any],
    ) -> dict[str, Any]:
        """Params for an assigning call: the changed fields, every other mapped field the
        call covers (merged values: a half-cleared address is worse than one extra
        field), and the fresh value of every covered field the mapping does not own."""
        sent = [self.mapping.field(n).chargebee for n in fields]
        covered = set(assignment.covered(sent))
        whole = {
            f.name: merged.get(f.name, changes.get(f.name))
            for f in self.mapping.fields
            if f.chargebee in covered or f.chargebee.split(".", 1)[0] in covered
        }
        whole.update(fields)
        # A blank the call assigns is left out (the call clears what it does not get); a
        # clear of a field it does not assign (an order's tracking_id sent beside its
        # shipping address) is sent as one, or it would be lost while marked done.
        params = to_side(
            self.mapping,
            Side.CHARGEBEE,
            {
                k: v
                for k, v in whole.items()
                if v is not None or not {(p := self.mapping.field(k).chargebee), p.split(".", 1)[0]} & covered
            },
        )
        owned = {f.chargebee for f in self.mapping.fields}
        for path in sorted(covered):
            head = path.split(".", 1)[0]
            if path in owned or head in owned:
                continue  # the mapping's: sent above, or cleared on purpose (a clear is an edit)
            value = get_path(fresh, path)
            if value is not None:
                set_path(params, path, value)
        return params


class _ChangedSinceRead(Exception):
    """The fresh read before an assigning write shows the record changed since extract."""


#: Fields the Customcrm server keeps (contract names): never sent back in a PUT body.
_CRM_SERVER_FIELDS = frozenset({"Id", "Version", "CreatedAt", "UpdatedAt", "Deleted"})


class CustomcrmWriter:
    """Writes to Customcrm with If-Match, idempotency keys and an external reference."""

    side = Side.CUSTOMCRM

    def __init__(self, mapping: FlowMapping, hook: SyncClient, run_id: str) -> None:
        self.mapping = mapping
        self.hook = hook
        self.run_id = run_id
        self.resource = mapping.customcrm.resource
        self.label = f"Customcrm {mapping.customcrm.label}"
        self.ext_field = CUSTOMCRM_META.external_ref or "ExternalRef"
        self.rereads = 0
        #: GETs made right before a replacing (PUT) update; counted in ``rereads`` too
        self.fresh_reads = 0

    def _result(self, raw: dict[str, Any]) -> dict[str, Any]:
        return result_of(self.mapping, Side.CUSTOMCRM, raw, CUSTOMCRM_META)

    def execute(self, row: StoredPlanRow, *, recovering: bool, reread: bool) -> Outcome:
        changes = json.loads(row["crm_changes"] or "{}")
        op = row["crm_op"]
        rid = row["crm_id"]
        try:
            if op == Op.CREATE:
                return self._create(row, changes, recovering)
            if op == Op.UPDATE:
                return self._update(_planned_id(rid, op), changes, row["crm_if_version"])
            if op == Op.DELETE:
                try:
                    self.hook.delete(self.resource, _planned_id(rid, op), if_match=row["crm_if_version"])
                except NotFound:
                    pass
                except PreconditionFailed:
                    return Outcome(
                        WriteStatus.STALE,
                        error=f"{self.label} {rid} was edited after the delete "
                        "was planned; not deleted, synced next run",
                    )
                return Outcome(WriteStatus.DONE, {"id": rid, "deleted": True})
            raise ValueError(f"unknown op {op!r}")
        except ApiError as err:
            return _fail(self.label, rid or f"(for Chargebee {row['cb_id']})", err)

    def _create(self, row: StoredPlanRow, changes: dict[str, Any], recovering: bool) -> Outcome:
        cb_id = _planned_id(row["cb_id"], Op.CREATE)
        if recovering:
            found = [r for r in self.hook.find_own(self.resource, cb_id) if not r.get("Deleted")]
            if found:
                existing = found[0]
                now = to_canonical(self.mapping, Side.CUSTOMCRM, existing)
                diff = {k: v for k, v in changes.items() if now.get(k) != v}
                if diff:
                    return self._update(str(existing["Id"]), diff, existing.get("Version"))
                return Outcome(WriteStatus.DONE, self._result(existing))
        body = to_side(self.mapping, Side.CUSTOMCRM, changes)
        body[self.ext_field] = cb_id
        key = idempotency_key(self.mapping.flow, "crm-create", cb_id, _generation(row))
        created = self.hook.create(self.resource, body, idempotency_key=key)
        return Outcome(WriteStatus.DONE, self._result(created))

    def _replaces(self) -> bool:
        """Whether this CRM's update replaces the whole record (``update_method: PUT`` in
        the connection's extra); the contract's ``PATCH`` changes only the fields sent."""
        api = getattr(self.hook, "api", None)
        return getattr(api, "update_method", "PATCH") == "PUT"

    def _update(self, rid: str, changes: dict[str, Any], if_version: str | int | None) -> Outcome:
        body = to_side(self.mapping, Side.CUSTOMCRM, changes)
        if self._replaces():
            # A PUT removes every field it is not sent: send the record as it is now with
            # the changes on top, so fields the mapping does not own stay. One GET per
            # write; a record that moved since extract is stale (If-Match still guards
            # the gap between this read and the write).
            self.fresh_reads += 1
            self.rereads += 1
            current = self.hook.get(self.resource, rid)
            if current is None:
                return Outcome(WriteStatus.STALE, error=f"{self.label} {rid} was deleted since it was read")
            if if_version is not None and str(current.get(CUSTOMCRM_META.version or "Version")) != str(
                if_version
            ):
                return Outcome(
                    WriteStatus.STALE, error=f"{self.label} {rid} changed since it was read; synced next run"
                )
            body = {k: v for k, v in current.items() if k not in _CRM_SERVER_FIELDS} | body
        try:
            raw = self.hook.update(self.resource, rid, body, if_match=if_version)
        except PreconditionFailed:
            # Either someone edited the record since we read it, or our own earlier
            # attempt was applied and its response lost. Look before deciding.
            self.rereads += 1
            current = self.hook.get(self.resource, rid)
            if current is not None:
                now = to_canonical(self.mapping, Side.CUSTOMCRM, current)
                if all(now.get(k) == v for k, v in changes.items()):
                    return Outcome(WriteStatus.DONE, self._result(current))
            return Outcome(
                WriteStatus.STALE, error=f"{self.label} {rid} changed since it was read; synced next run"
            )
        except NotFound:
            return Outcome(WriteStatus.STALE, error=f"{self.label} {rid} was deleted since it was read")
        return Outcome(WriteStatus.DONE, self._result(raw))
