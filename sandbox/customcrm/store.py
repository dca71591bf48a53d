"""In-memory state of the Customcrm sandbox, its clock, keyset paging and persistence.

Everything that touches the records goes through ``Store`` under one lock, so a write
(assign the timestamp, change the record, persist) is atomic with respect to every
read. That is what makes the feed trustworthy: ``UpdatedAt`` values are handed out
strictly increasing *and* committed in that order, so a client that saw a record with
``UpdatedAt = T`` will never later find a different record committed with an earlier
timestamp, and a keyset cursor over ``(UpdatedAt, Id)`` can never skip a record that is
edited while a client pages (the edit moves it *ahead* of the cursor).
"""

from __future__ import annotations

import base64
import binascii
import bisect
import copy
import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sandbox.common.jsonstore import atomic_write_json, read_json
from sandbox.customcrm.schema import READ_ONLY, RESOURCES, ResourceSpec, blank_record

STATE_FORMAT = "customcrm-sandbox/1"
#: Idempotency keys remembered (oldest evicted first); plenty for any test or demo run.
MAX_IDEMPOTENCY_KEYS = 20_000
_TS_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"

Record = dict[str, Any]


def format_ts(moment: datetime) -> str:
    """Canonical timestamp text: UTC, microseconds, ``Z``; sorts like the instant it names."""
    return moment.astimezone(UTC).strftime(_TS_FORMAT)


def parse_ts(text: str) -> datetime:
    """Parse an ISO-8601 timestamp; a value without an offset is taken as UTC."""
    moment = datetime.fromisoformat(text.strip())
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


class CursorError(ValueError):
    """The client sent a cursor this server did not issue."""


def encode_cursor(updated_at: str, record_id: str) -> str:
    """Opaque keyset cursor naming the last record a page returned."""
    raw = json.dumps({"v": 1, "u": updated_at, "i": record_id}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[str, str]:
    """Inverse of ``encode_cursor``; raises ``CursorError`` on anything else."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        data = json.loads(raw)
        key = (str(data["u"]), str(data["i"]))
        parse_ts(key[0])
    except (binascii.Error, ValueError, KeyError, TypeError) as exc:
        raise CursorError("cursor is not one this server issued") from exc
    return key


@dataclass(frozen=True)
class Page:
    """One page of a list response."""

    items: list[Record]
    next_cursor: str | None


@dataclass
class StoredResponse:
    """A remembered write response, replayed for a repeated ``Idempotency-Key``."""

    fingerprint: str
    status: int
    body: Any
    headers: dict[str, str]

    def to_json(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "status": self.status,
            "body": self.body,
            "headers": self.headers,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StoredResponse:
        return cls(data["fingerprint"], int(data["status"]), data["body"], dict(data["headers"]))


class Store:
    """All records of all resources, persisted to one JSON file.

    ``state_path`` None keeps everything in memory (handy in unit tests).
    ``flush_interval`` 0 writes the file after every change (durable; the default);
    a positive value coalesces writes in a background thread (for large benchmarks,
    where rewriting a big file per request would dominate).
    """

    def __init__(
        self,
        state_path: Path | None,
        seed_path: Path | None = None,
        *,
        flush_interval: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.lock = threading.RLock()
        self.clock = clock
        self.state_path = state_path
        self.seed_path = seed_path
        self.flush_interval = flush_interval
        self._records: dict[str, dict[str, Record]] = {}
        self._index: dict[str, list[tuple[str, str]]] = {}
        self._counters: dict[str, int] = {}
        self._clock: datetime = datetime(1970, 1, 1, tzinfo=UTC)
        self.idempotency: OrderedDict[str, StoredResponse] = OrderedDict()
        self._dirty = False
        self._depth = 0
        self._pending = False
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None
        saved = read_json(state_path) if state_path is not None else None
        if saved is not None:
            self._load_state(saved)
        else:
            self._load_seed(seed_path)
            self._changed()
        if flush_interval > 0:
            self._flusher = threading.Thread(target=self._flush_loop, name="customcrm-flush", daemon=True)
            self._flusher.start()

    # ------------------------------------------------------------------ loading
    def _clear(self) -> None:
        self._records = {name: {} for name in RESOURCES}
        self._index = {name: [] for name in RESOURCES}
        self._counters = {name: 0 for name in RESOURCES}
        self._clock = datetime(1970, 1, 1, tzinfo=UTC)
        self.idempotency.clear()

    def _add_loaded(self, resource: str, raw: Record) -> None:
        """Insert a record from a seed or state file, filling whatever the file left out."""
        spec = RESOURCES[resource]
        record: Record = {"Id": raw["Id"], **blank_record(spec)}
        for name, value in raw.items():
            if name in record or name in READ_ONLY:
                record[name] = value
            else:
                raise ValueError(f"{resource}/{raw['Id']}: unknown field {name!r} in seed or state file")
        created = (
            raw.get("CreatedAt")
            or raw.get("UpdatedAt")
            or format_ts(datetime.fromtimestamp(self.clock(), UTC))
        )
        record["Version"] = int(raw.get("Version") or 1)
        record["CreatedAt"] = format_ts(parse_ts(created))
        record["UpdatedAt"] = format_ts(parse_ts(raw.get("UpdatedAt") or created))
        record["Deleted"] = bool(raw.get("Deleted", False))
        record.setdefault("ExternalRef", None)
        if record["Id"] in self._records[resource]:
            raise ValueError(f"{resource}: duplicate Id {record['Id']}")
        self._records[resource][record["Id"]] = record
        self._index[resource].append((record["UpdatedAt"], record["Id"]))
        self._clock = max(self._clock, parse_ts(record["UpdatedAt"]))
        number = _id_number(spec, record["Id"])
        if number is not None:
            self._counters[resource] = max(self._counters[resource], number)

    def _load_seed(self, seed_path: Path | None) -> None:
        self._clear()
        if seed_path is not None:
            data = json.loads(Path(seed_path).read_text(encoding="utf-8"))
            for resource, records in data.items():
                if resource.startswith("_"):
                    continue  # comments / metadata
                if resource not in RESOURCES:
                    raise ValueError(f"seed names unknown resource {resource!r}")
                for raw in records:
                    self._add_loaded(resource, raw)
        for index in self._index.values():
            index.sort()

    def _load_state(self, data: dict[str, Any]) -> None:
        if data.get("format") != STATE_FORMAT:
            raise ValueError(f"{self.state_path}: not a {STATE_FORMAT} state file")
        self._clear()
        for resource, records in data["records"].items():
            for raw in records:
                self._add_loaded(resource, raw)
        for index in self._index.values():
            index.sort()
        self._counters.update({k: max(v, self._counters.get(k, 0)) for k, v in data["counters"].items()})
        self._clock = max(self._clock, parse_ts(data["clock"]))
        for key, stored in data.get("idempotency", []):
            self.idempotency[key] = StoredResponse.from_json(stored)

    def reset(self) -> None:
        """Back to the seed (or empty): records, counters, clock and idempotency keys."""
        with self.lock:
            self._load_seed(self.seed_path)
            self._changed()

    # ------------------------------------------------------------- persistence
    def snapshot(self, *, deep: bool = True) -> dict[str, Any]:
        """The whole state as JSON-ready data.

        ``deep`` copies it so it can be used outside the lock; the writer, which runs
        under the lock, skips the copy.
        """
        with self.lock:
            data = {
                "format": STATE_FORMAT,
                "clock": format_ts(self._clock),
                "counters": self._counters,
                "records": {
                    r: sorted(recs.values(), key=lambda x: x["Id"]) for r, recs in self._records.items()
                },
                "idempotency": [[k, v.to_json()] for k, v in self.idempotency.items()],
            }
            return copy.deepcopy(data) if deep else data

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Hold the lock and persist once at the end.

        A create and the idempotency record of its response must reach the file
        together: were the process killed in between, a retry with the same key would
        create the record a second time.
        """
        with self.lock:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0 and self._pending:
                    self._pending = False
                    self._changed()

    def _changed(self) -> None:
        """Called under the lock after every change: persist now or mark for the flusher."""
        if self.state_path is None:
            return
        if self._depth > 0:
            self._pending = True
        elif self.flush_interval > 0:
            self._dirty = True
        else:
            self._write(self.snapshot(deep=False))

    def _write(self, data: dict[str, Any]) -> None:
        """Atomic replace: a reader (or a crash) sees the old file or the new one, never half."""
        assert self.state_path is not None
        atomic_write_json(self.state_path, data, indent=1)

    def flush(self) -> None:
        """Write pending changes now (no-op in write-through mode)."""
        with self.lock:
            if self._dirty and self.state_path is not None:
                self._dirty = False
                self._write(self.snapshot(deep=False))

    def _flush_loop(self) -> None:
        while not self._stop.wait(self.flush_interval):
            self.flush()

    def close(self) -> None:
        """Stop the background flusher (if any) and write what is pending."""
        self._stop.set()
        if self._flusher is not None:
            self._flusher.join(timeout=5)
        self.flush()

    # ------------------------------------------------------------------ clock
    def _tick(self) -> str:
        """Next ``UpdatedAt``: wall-clock time, nudged forward to stay strictly increasing."""
        now = datetime.fromtimestamp(self.clock(), UTC)
        if now <= self._clock:
            now = self._clock + timedelta(microseconds=1)
        self._clock = now
        return format_ts(now)

    # ------------------------------------------------------------------ reads
    def get(self, resource: str, record_id: str) -> Record | None:
        """A copy of one record (tombstones included) or None."""
        with self.lock:
            record = self._records[resource].get(record_id)
            return copy.deepcopy(record) if record is not None else None

    def all(self, resource: str) -> list[Record]:
        """Every record of a resource, tombstones included, by Id."""
        with self.lock:
            return [copy.deepcopy(r) for _, r in sorted(self._records[resource].items())]

    def count(self, resource: str) -> int:
        with self.lock:
            return len(self._records[resource])

    def ref_problem(self, resource: str, record_id: str) -> str | None:
        """Why ``record_id`` cannot be referenced, or None when it names a live record."""
        with self.lock:
            record = self._records[resource].get(record_id)
        if record is None:
            return f"no {resource} record with Id {record_id}"
        if record["Deleted"]:
            return f"{resource} record {record_id} is deleted"
        return None

    def find_live(
        self, resource: str, field: str, value: str, *, exclude_id: str | None = None
    ) -> Record | None:
        """First live record whose ``field`` equals ``value`` ignoring case and outer blanks."""
        wanted = value.strip().casefold()
        with self.lock:
            for record in self._records[resource].values():
                current = record.get(field)
                if (
                    not record["Deleted"]
                    and record["Id"] != exclude_id
                    and isinstance(current, str)
                    and current.strip().casefold() == wanted
                ):
                    return record
        return None

    def list_page(
        self,
        resource: str,
        *,
        updated_since: datetime | None,
        after: tuple[str, str] | None,
        limit: int,
        include_deleted: bool,
        filters: Iterable[tuple[str, str, bool]] = (),
    ) -> Page:
        """One page ordered by ``(UpdatedAt, Id)``, strictly after the cursor key.

        ``updated_since`` is inclusive (``UpdatedAt >= updated_since``) so a client can
        pass back the last timestamp it saw without losing a record; it re-reads that
        one record at most.
        """
        wanted = [(field, value.strip().casefold() if ci else value, ci) for field, value, ci in filters]
        with self.lock:
            index = self._index[resource]
            start = 0
            if updated_since is not None:
                start = bisect.bisect_left(index, (format_ts(updated_since), ""))
            if after is not None:
                start = max(start, bisect.bisect_right(index, after))
            items: list[Record] = []
            more = False
            for key in _islice(index, start):
                record = self._records[resource][key[1]]
                if record["Deleted"] and not include_deleted:
                    continue
                if not all(_matches(record.get(f), v, ci) for f, v, ci in wanted):
                    continue
                if len(items) == limit:
                    more = True
                    break
                items.append(copy.deepcopy(record))
        next_cursor = encode_cursor(items[-1]["UpdatedAt"], items[-1]["Id"]) if more else None
        return Page(items, next_cursor)

    # ------------------------------------------------------------------ writes
    def _reindex(self, resource: str, old_key: tuple[str, str] | None, record: Record) -> None:
        index = self._index[resource]
        if old_key is not None:
            pos = bisect.bisect_left(index, old_key)
            if pos < len(index) and index[pos] == old_key:
                del index[pos]
        # New timestamps are always the largest, so this is an append in practice.
        bisect.insort(index, (record["UpdatedAt"], record["Id"]))

    def next_id(self, resource: str) -> str:
        """Allocate the next server-assigned Id, e.g. ``CON-000041``."""
        with self.lock:
            spec = RESOURCES[resource]
            while True:
                self._counters[resource] += 1
                candidate = f"{spec.prefix}-{self._counters[resource]:06d}"
                if candidate not in self._records[resource]:
                    return candidate

    def create(self, resource: str, values: dict[str, Any], *, record_id: str | None = None) -> Record:
        """Insert a new record (values already validated by the caller)."""
        spec = RESOURCES[resource]
        with self.lock:
            new_id = record_id or self.next_id(resource)
            if new_id in self._records[resource]:
                raise KeyError(new_id)
            now = self._tick()
            record: Record = {"Id": new_id, **blank_record(spec)}
            record.update(values)
            for name in spec.default_from_id:
                if record.get(name) in (None, ""):
                    record[name] = new_id
            record.update({"Version": 1, "CreatedAt": now, "UpdatedAt": now})
            record["Deleted"] = bool(values.get("Deleted", False))
            self._records[resource][new_id] = record
            self._reindex(resource, None, record)
            self._changed()
            return copy.deepcopy(record)

    def update(self, resource: str, record_id: str, values: dict[str, Any]) -> Record:
        """Apply ``values`` to an existing record: Version + 1 and a new UpdatedAt."""
        with self.lock:
            record = self._records[resource][record_id]
            old_key = (record["UpdatedAt"], record["Id"])
            record.update(values)
            record["Version"] += 1
            record["UpdatedAt"] = self._tick()
            self._reindex(resource, old_key, record)
            self._changed()
            return copy.deepcopy(record)

    def remove(self, resource: str, record_id: str) -> None:
        """Hard delete (admin only): the record vanishes without a tombstone."""
        with self.lock:
            record = self._records[resource].pop(record_id)
            key = (record["UpdatedAt"], record["Id"])
            index = self._index[resource]
            pos = bisect.bisect_left(index, key)
            if pos < len(index) and index[pos] == key:
                del index[pos]
            self._changed()

    # ------------------------------------------------------------- idempotency
    def remember(self, key: str, response: StoredResponse) -> None:
        """Keep a write's response for replay (caller holds the lock across write + remember)."""
        with self.lock:
            self.idempotency[key] = response
            self.idempotency.move_to_end(key)
            while len(self.idempotency) > MAX_IDEMPOTENCY_KEYS:
                self.idempotency.popitem(last=False)
            self._changed()


def request_fingerprint(method: str, path: str, body: bytes) -> str:
    """What a replayed request must match: same method, path and JSON body (key order ignored)."""
    try:
        canonical = json.dumps(json.loads(body or b"null"), sort_keys=True, separators=(",", ":"))
    except ValueError:
        canonical = body.decode("utf-8", "replace")
    return hashlib.sha256(f"{method} {path}\n{canonical}".encode()).hexdigest()


def _islice(index: list[tuple[str, str]], start: int) -> Iterator[tuple[str, str]]:
    for pos in range(start, len(index)):
        yield index[pos]


def _matches(current: Any, wanted: str, case_insensitive: bool) -> bool:
    if not isinstance(current, str):
        return False
    return (current.strip().casefold() if case_insensitive else current) == wanted


def _id_number(spec: ResourceSpec, record_id: str) -> int | None:
    prefix = f"{spec.prefix}-"
    if record_id.startswith(prefix) and record_id[len(prefix) :].isdigit():
        return int(record_id[len(prefix) :])
    return None
