"""State of one sandbox Chargebee site: records, versions, events, idempotency.

One :class:`ChargebeeState` per server, guarded by one re-entrant lock (``state.lock``);
the HTTP layer holds it for the whole of an API call, so every request sees and leaves a
consistent state. After each mutating call :meth:`ChargebeeState.commit` writes the JSON
file atomically, so a restart - or a crash test that kills the server - keeps the data.
Writing the whole file costs time proportional to the site's size, so with
``persist_interval=None`` (auto) a small site is saved on every write and a big one
(a save slower than 50 ms) at most once a second by a background flusher, plus on stop.

Versioning mirrors Chargebee: every write sets ``updated_at`` (Unix seconds, never
moving backwards for a record) and ``resource_version`` (Unix milliseconds, strictly
increasing across the site, so two writes in the same millisecond still differ).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sandbox.chargebee import models
from sandbox.chargebee.models import SPECS, public
from sandbox.common.clock import Clock
from sandbox.common.jsonstore import atomic_write_json, read_json

log = logging.getLogger("sandbox.chargebee.store")

FORMAT = 1
_B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

#: Site settings for orders. ``current`` (every site since 2021-10-01): Chargebee generates
#: orders from paid invoices and refuses ``POST /orders``; ``legacy``: the manual create
#: of legacy order management is allowed.
CURRENT_ORDER_MANAGEMENT = "current"
LEGACY_ORDER_MANAGEMENT = "legacy"
ORDER_MANAGEMENT = (CURRENT_ORDER_MANAGEMENT, LEGACY_ORDER_MANAGEMENT)


#: Seconds between ``POST /customers/{id}/delete`` and the customer's purge. Chargebee's
#: "Delete a customer": "This operation schedules the customer resource for deletion, and
#: it is permanently deleted after a few minutes." A site setting (kept by ``reset``).
DEFAULT_CUSTOMER_PURGE_SECONDS = 300.0


def check_purge_seconds(value: object) -> float:
    """The setting as seconds (>= 0), or ValueError."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"customer_purge_seconds must be a number of seconds >= 0, not {value!r}")
    return float(value)


def check_order_management(value: object) -> str:
    """The setting, or ValueError naming the accepted values."""
    if value not in ORDER_MANAGEMENT:
        raise ValueError(f"order_management must be one of {list(ORDER_MANAGEMENT)}, not {value!r}")
    return str(value)


#: Resources whose seeded records get their ``*_created`` event, dated at their ``created_at``.
SEED_EVENTS = {"business_entities": "business_entity_created"}

# Seed keys accepted as aliases of resource names (seed files are written by hand).
SEED_ALIASES = {
    "customer": "customers",
    "item_family": "item_families",
    "item": "items",
    "business_entity": "business_entities",
    "invoice": "invoices",
    "order": "orders",
}


def _b62(data: bytes, length: int) -> str:
    n = int.from_bytes(data, "big")
    out = []
    for _ in range(length):
        n, r = divmod(n, 62)
        out.append(_B62[r])
    return "".join(out)


class ChargebeeState:
    """All records of one site plus counters, persisted to ``path`` (if given)."""

    def __init__(
        self,
        path: str | Path | None,
        *,
        seed: dict[str, Any] | None = None,
        clock: Clock | None = None,
        idempotency_ttl: float = 1800.0,  # Chargebee's documented 30 minutes
        max_events: int = 50000,
        persist_interval: float | None = None,
        order_management: str = CURRENT_ORDER_MANAGEMENT,
        customer_purge_seconds: float = DEFAULT_CUSTOMER_PURGE_SECONDS,
    ) -> None:
        #: a site setting, not data: kept by ``reset`` (see :meth:`schedule_purge`)
        self.customer_purge_seconds = check_purge_seconds(customer_purge_seconds)
        #: a site setting, not data: kept by ``reset`` (see :data:`ORDER_MANAGEMENT`)
        self.order_management = check_order_management(order_management)
        self.path = Path(path) if path else None
        self.persist_interval = persist_interval
        self._dirty = False
        self._last_save_seconds = 0.0
        self._flusher: threading.Thread | None = None
        self._closing = threading.Event()
        self.seed = copy.deepcopy(seed) if seed else {}
        self.clock = clock or Clock()
        self.idempotency_ttl = idempotency_ttl
        self.max_events = max_events
        self.lock = threading.RLock()
        self.data: dict[str, Any] = self._empty()
        loaded = read_json(self.path) if self.path else None
        if loaded:
            self._adopt(loaded)
        else:
            self.load_seed(self.seed)
            self.save()

    # ----------------------------------------------------------------- persistence
    @staticmethod
    def _empty() -> dict[str, Any]:
        return {
            "format": FORMAT,
            "seq": 0,
            "last_rv": 0,
            "counters": {},
            "resources": {name: {} for name in SPECS},
            "idempotency": {},
            # resource -> record id -> {"at": purge time (clock seconds)}: deletes that
            # Chargebee schedules (customers), applied by :meth:`purge_due`
            "purges": {},
        }

    def _adopt(self, loaded: dict[str, Any]) -> None:
        data = self._empty()
        data.update({k: v for k, v in loaded.items() if k in data})
        for name in SPECS:
            data["resources"].setdefault(name, {})
        self.data = data

    def save(self) -> None:
        """Write the whole state atomically now (no-op without a state file)."""
        if self.path is None:
            return
        with self.lock:
            started = time.perf_counter()
            self._purge_idempotency()
            atomic_write_json(self.path, self.data)
            self._dirty = False
            self._last_save_seconds = time.perf_counter() - started

    def commit(self) -> None:
        """Persist after a write: now, or soon via the flusher (see module docstring)."""
        if self.path is None:
            return
        interval = self.persist_interval
        if interval is None:
            interval = 0.0 if self._last_save_seconds < 0.05 else 1.0
        if interval <= 0:
            self.save()
            return
        with self.lock:
            self._dirty = True
            if self._flusher is None:
                self._flusher = threading.Thread(
                    target=self._flush_loop, args=(interval,), name="chargebee-state-flush", daemon=True
                )
                self._flusher.start()

    def _flush_loop(self, interval: float) -> None:
        while not self._closing.wait(interval):
            if self._dirty:
                try:
                    self.save()
                except OSError:
                    log.exception("could not save sandbox state to %s", self.path)

    def close(self) -> None:
        """Stop the flusher and write any pending changes."""
        self._closing.set()
        if self._flusher is not None:
            self._flusher.join(timeout=10)
            self._flusher = None
        if self._dirty:
            self.save()

    def reset(self) -> None:
        """Back to the seed: records, events, idempotency keys and counters."""
        with self.lock:
            self.data = self._empty()
            self.load_seed(self.seed)
            self.save()

    # ----------------------------------------------------------------- clock & versions
    def now(self) -> float:
        return self.clock.now()

    def now_s(self) -> int:
        return int(self.clock.now())

    def next_seq(self) -> int:
        self.data["seq"] += 1
        return int(self.data["seq"])

    def next_rv(self) -> int:
        rv = max(int(self.clock.now() * 1000), int(self.data["last_rv"]) + 1)
        self.data["last_rv"] = rv
        return rv

    def next_counter(self, name: str, start: int = 1) -> int:
        counters = self.data["counters"]
        counters[name] = int(counters.get(name, start - 1)) + 1
        return int(counters[name])

    def stamp(self, rec: dict[str, Any]) -> None:
        """Bump ``updated_at`` (never backwards) and ``resource_version`` (strictly up)."""
        rec["updated_at"] = max(self.now_s(), int(rec.get("updated_at") or 0))
        rec["resource_version"] = self.next_rv()

    def new_id(self, resource: str) -> str:
        """A Chargebee-looking id (16 base62 chars), deterministic for a given state."""
        n = self.next_counter(f"id:{resource}")
        digest = hashlib.sha256(f"{resource}:{n}:{self.data['seq']}".encode()).digest()
        return "AzZ" + _b62(digest, 13)

    # ----------------------------------------------------------------- records
    def table(self, resource: str) -> dict[str, dict[str, Any]]:
        return self.data["resources"][resource]  # type: ignore[no-any-return]

    def get(self, resource: str, record_id: str, *, include_deleted: bool = False) -> dict[str, Any] | None:
        rec = self.table(resource).get(record_id)
        if rec is None or (rec.get("deleted") and not include_deleted):
            return None
        return rec

    def insert(
        self, resource: str, rec: dict[str, Any], *, source: str = "api", emit: bool = True
    ) -> dict[str, Any]:
        """Add a new record: ``_seq``, ``created_at`` (where Chargebee has it), versions, event."""
        spec = SPECS[resource]
        rec["_seq"] = self.next_seq()
        if resource in models.HAS_CREATED_AT:
            rec.setdefault("created_at", self.now_s())
        rec["object"] = spec.object
        rec.setdefault("deleted", False)
        self.stamp(rec)
        self.table(resource)[rec["id"]] = rec
        if emit and spec.created_event:
            self.emit(spec.created_event, resource, rec, source=source)
        return rec

    def touch(
        self,
        resource: str,
        rec: dict[str, Any],
        *,
        event_type: str | None = None,
        source: str = "api",
        emit: bool = True,
    ) -> dict[str, Any]:
        """Record an edit: bump versions and emit ``event_type`` (default: the update event)."""
        self.stamp(rec)
        event = event_type or SPECS[resource].updated_event
        if emit and event:
            self.emit(event, resource, rec, source=source)
        return rec

    def mark_deleted(
        self, resource: str, rec: dict[str, Any], *, source: str = "api", emit: bool = True
    ) -> None:
        rec["deleted"] = True
        self.touch(resource, rec, event_type=SPECS[resource].deleted_event, source=source, emit=emit)

    # ----------------------------------------------------------------- scheduled deletes
    def schedule_purge(self, resource: str, rec: dict[str, Any], seconds: float) -> float:
        """Schedule ``rec`` to be purged ``seconds`` from now; returns the purge time.

        Until then the record is left exactly as it is: retrieved, listed and writable as
        before, its versions unchanged and no event (Chargebee's docs say nothing of a
        pending delete being visible; the stricter reading is that nothing shows it). A
        second delete keeps the first purge time (it does not postpone the purge).
        """
        pending = self.data["purges"].setdefault(resource, {})
        entry = pending.get(rec["id"])
        if entry is None:
            entry = pending[rec["id"]] = {"at": self.now() + float(seconds)}
        return float(entry["at"])

    def purge_pending(self, resource: str, record_id: str) -> float | None:
        """The purge time of a record scheduled for deletion, else None."""
        entry = self.data["purges"].get(resource, {}).get(record_id)
        return None if entry is None else float(entry["at"])

    def purge_due(self) -> int:
        """Purge every scheduled record whose time has come (by the site's clock).

        Called lazily before every API and admin call, so a test that moves the clock sees
        the purge on its next call. A purged record is gone as if it never existed (404,
        absent from every list, ``include_deleted`` too; its id can be used again) and one
        ``*_deleted`` event (source ``scheduled_job``) carries its last snapshot, marked
        ``deleted``. Returns how many were purged (the caller persists).
        """
        purges = self.data["purges"]
        if not any(purges.values()):
            return 0
        now = self.now()
        done = 0
        with self.lock:
            for resource, pending in purges.items():
                for rid in sorted((r for r, e in pending.items() if float(e["at"]) <= now), key=str):
                    del pending[rid]
                    rec = self.table(resource).pop(rid, None)
                    if rec is None or rec.get("deleted"):
                        continue  # removed by a test's wipe, or already deleted another way
                    rec["deleted"] = True
                    self.stamp(rec)
                    event = SPECS[resource].deleted_event
                    if event:
                        self.emit(event, resource, rec, source="scheduled_job")
                    done += 1
        return done

    # ----------------------------------------------------------------- events
    def emit(
        self,
        event_type: str,
        resource: str,
        rec: dict[str, Any],
        *,
        source: str = "api",
        occurred_at: int | None = None,
    ) -> dict[str, Any]:
        """Append an event carrying a snapshot of ``rec`` (as ``GET /events`` returns it)."""
        spec = SPECS[resource]
        seq = self.next_seq()
        event = {
            "id": f"ev_sbx{seq:012d}",
            "occurred_at": self.now_s() if occurred_at is None else int(occurred_at),
            "source": source,
            "object": "event",
            "api_version": "v2",
            "event_type": event_type,
            "webhook_status": "not_configured",
            "content": {spec.object: public(rec)},
            "_seq": seq,
        }
        events = self.table("events")
        events[event["id"]] = event
        # Events are added in ``_seq`` order and dicts keep insertion order: the oldest are
        # first. (Sorting every event on every write made a 100,000-record benchmark crawl
        # at 20 writes/s once the log was full.)
        while len(events) > self.max_events:
            del events[next(iter(events))]
        return event

    # ----------------------------------------------------------------- idempotency
    def _purge_idempotency(self) -> None:
        cutoff = self.now() - self.idempotency_ttl
        store = self.data["idempotency"]
        for key in [k for k, v in store.items() if v.get("at", 0) < cutoff]:
            del store[key]

    def idempotent_lookup(self, key: str) -> dict[str, Any] | None:
        entry = self.data["idempotency"].get(key)
        if entry and entry.get("at", 0) >= self.now() - self.idempotency_ttl:
            return entry  # type: ignore[no-any-return]
        return None

    def idempotent_store(self, key: str, fingerprint: str, status: int, body: Any) -> None:
        self.data["idempotency"][key] = {
            "fingerprint": fingerprint,
            "status": status,
            "body": body,
            "at": self.now(),
        }

    # ----------------------------------------------------------------- seeding / admin upserts
    def load_seed(self, seed: dict[str, Any] | None) -> None:
        """Load partial Chargebee records; missing resources are empty, defaults filled.

        Records without timestamps get ``created_at``/``updated_at`` one second apart,
        starting a day ago (so they are "old" data). An explicit ``"updated_at": null``
        is kept: it models legacy records that have no ``updated_at`` at all.
        """
        seed = seed or {}
        base = self.now_s() - 86400
        order = ["business_entities", "item_families", "items", "customers", "invoices", "orders"]
        by_resource: dict[str, list[dict[str, Any]]] = {}
        for key, records in seed.items():
            name = SEED_ALIASES.get(key, key)
            if name not in SPECS or name == "events":
                log.warning("seed: ignoring unknown resource %r", key)
                continue
            if isinstance(records, dict):
                records = [dict(v, id=v.get("id", k)) for k, v in records.items()]
            if not isinstance(records, list):
                log.warning("seed: %r is not a list; ignored", key)
                continue
            by_resource.setdefault(name, []).extend(r for r in records if isinstance(r, dict))
        i = 0
        for name in order:
            for raw in by_resource.get(name, []):
                i += 1
                rec = copy.deepcopy(raw)
                ts = base + i
                self._fill(name, rec, default_ts=ts)
                if "resource_version" not in rec:
                    ts_for_rv = rec.get("updated_at") or ts
                    rec["resource_version"] = int(ts_for_rv) * 1000 + (i % 1000)
                self.data["last_rv"] = max(int(self.data["last_rv"]), int(rec["resource_version"]))
                self.table(name)[rec["id"]] = rec
                if name in SEED_EVENTS:
                    # every entity of a real site was created at some point, and Chargebee
                    # publishes no other way to read one: the event history starts with it
                    created = int(rec["created_at"])
                    self.emit(SEED_EVENTS[name], name, rec, source="admin_console", occurred_at=created)
        if self.order_management == CURRENT_ORDER_MANAGEMENT:
            # Chargebee generates an order from every paid invoice: a seed's paid invoice
            # without one gets it, so a Customcrm order naming the invoice can find it.
            from sandbox.chargebee.resources import generate_missing_orders

            generate_missing_orders(self, source="system")

    def _fill(self, resource: str, rec: dict[str, Any], *, default_ts: int) -> None:
        """Defaults for a record arriving from a seed or the admin API."""
        spec = SPECS[resource]
        if not rec.get("id"):
            rec["id"] = self.new_id(resource)
        rec["id"] = str(rec["id"])
        rec["object"] = spec.object
        rec.setdefault("deleted", False)
        rec["_seq"] = self.next_seq()
        if resource in models.HAS_CREATED_AT:
            rec.setdefault("created_at", rec.get("updated_at") or default_ts)
        if "updated_at" not in rec:
            rec["updated_at"] = rec.get("created_at") or default_ts
        if resource == "customers":
            models.customer_defaults(rec)
        elif resource == "item_families":
            models.item_family_defaults(rec)
        elif resource == "items":
            models.item_defaults(rec)
            if rec.get("status") == "deleted":
                rec["deleted"] = True
        elif resource == "business_entities":
            models.business_entity_defaults(rec)
        elif resource == "invoices":
            rec.setdefault("date", rec.get("updated_at") or default_ts)
            customer = self.table("customers").get(str(rec.get("customer_id")))
            models.invoice_defaults(rec, default_ts, customer)
        elif resource == "orders":
            rec.setdefault("created_at", default_ts)
            if not rec.get("document_number"):
                rec["document_number"] = str(self.next_counter("order_document_number", 1000))
            elif str(rec["document_number"]).isdigit():
                counters = self.data["counters"]
                counters["order_document_number"] = max(
                    int(counters.get("order_document_number", 999)), int(rec["document_number"])
                )
            models.order_defaults(rec, default_ts)

    def admin_upsert(
        self, resource: str, patch: dict[str, Any], *, touch: bool = True, emit: bool = True
    ) -> dict[str, Any]:
        """Create or merge a record as a person editing in the Chargebee UI would.

        New ids get defaults and a ``*_created`` event; existing records are merged
        (top-level keys; ``null`` removes a key) and bumped like a real edit.
        ``"deleted": true`` marks the record deleted with the delete event.
        """
        spec = SPECS[resource]
        rec_id = patch.get("id")
        existing = self.table(resource).get(str(rec_id)) if rec_id else None
        if existing is None:
            rec = {k: v for k, v in patch.items() if v is not None}
            self._fill(resource, rec, default_ts=self.now_s())
            if touch:
                self.stamp(rec)
            self.table(resource)[rec["id"]] = rec
            if emit and spec.created_event:
                self.emit(spec.created_event, resource, rec, source="admin_console")
            return rec
        was_deleted = bool(existing.get("deleted"))
        for key, value in patch.items():
            if key in ("id", "object", "_seq"):
                continue
            if value is None:
                existing.pop(key, None)
            else:
                existing[key] = copy.deepcopy(value)
        for kind in ("billing_address", "shipping_address"):
            if isinstance(existing.get(kind), dict):
                existing[kind] = models.address(existing[kind], kind)
        if touch:
            self.stamp(existing)
        if emit:
            event = spec.updated_event
            if existing.get("deleted") and not was_deleted:
                event = spec.deleted_event
            elif was_deleted and not existing.get("deleted") and spec.created_event:
                event = spec.created_event
            if event:
                self.emit(event, resource, existing, source="admin_console")
        return existing

    def records(self, resource: str) -> Iterable[dict[str, Any]]:
        return self.table(resource).values()

    def remove(self, resource: str, record_id: str) -> dict[str, Any] | None:
        """Remove a record as if it had never existed (a test's wipe), its events too.

        Not a delete (that is :meth:`mark_deleted`, with its event): a site where a record
        vanished but its ``*_created`` event stayed would show a record no one can find.
        """
        removed = self.table(resource).pop(record_id, None)
        if removed is not None and resource != "events":
            key = SPECS[resource].object
            events = self.table("events")
            about = [
                eid
                for eid, e in events.items()
                if (e.get("content") or {}).get(key, {}).get("id") == record_id
            ]
            for event_id in about:
                del events[event_id]
        return removed

    def dump(self, resource: str) -> list[dict[str, Any]]:
        return [public(r) for r in sorted(self.records(resource), key=lambda r: r.get("_seq", 0))]

    def fingerprint(self, method: str, path: str, pairs: list[tuple[str, str]]) -> str:
        raw = json.dumps([method, path, sorted(pairs)], separators=(",", ":"))
        return hashlib.sha256(raw.encode()).hexdigest()
