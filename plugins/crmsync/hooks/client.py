"""The one client interface both hooks implement: what a flow needs from either side.

:class:`SyncClient` is a structural :class:`typing.Protocol`: ``ChargebeeHook`` and
``CustomcrmHook`` satisfy it with thin adapter methods over their own API calls, so
the tasks and writers that only list, read, create, update, delete and find need not
know which side they talk to. What stays side-specific stays on the hook class
(Chargebee's record actions and event reads, Customcrm's connection-configured API
shape), and code that needs it takes that class.

Conventions every implementation keeps:

* ``since`` is Unix seconds (float, UTC); each hook converts it to its API's filter
  (Chargebee ``updated_at[after]`` in whole seconds, Customcrm ``updated_since`` as the
  connection's datetime format);
* records are returned as the hook's own dicts (Chargebee's unwrapped objects,
  Customcrm's records under the contract's field names);
* ``get`` answers ``None`` for a record that does not exist (404, or 410 for a tombstone);
* ``if_match`` is the version read at extract; a side without conditional writes
  (Chargebee) refuses one instead of silently writing unconditionally;
* ``find_own`` finds the records the sync itself created for ``ref``: Customcrm's
  external reference (``ExternalRef`` = the Chargebee id), Chargebee's deterministic
  create id (the id *is* the reference, so it is one retrieve).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Protocol


class SyncClient(Protocol):
    """List changed since, get, create, update, delete, find by the sync's own reference."""

    def listable(self, resource: str) -> bool:
        """Whether the API documents a list and a retrieve of ``resource``."""
        ...

    def iter_changed(
        self, resource: str, since: float | None, *, include_deleted: bool = True
    ) -> Iterator[list[dict[str, Any]]]:
        """Pages of records changed after ``since`` (Unix seconds; ``None``: everything),
        oldest first, deleted records included unless ``include_deleted`` is false."""
        ...

    def get(self, resource: str, record_id: str, /) -> dict[str, Any] | None:
        """One record, or ``None`` when it does not exist."""
        ...

    def create(
        self, resource: str, params: Mapping[str, Any], /, *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """Create a record; the same ``idempotency_key`` makes a replay harmless."""
        ...

    def update(
        self,
        resource: str,
        record_id: str,
        params: Mapping[str, Any],
        /,
        *,
        if_match: int | str | None = None,
    ) -> dict[str, Any]:
        """Update a record and return it."""
        ...

    def delete(self, resource: str, record_id: str, /, *, if_match: int | str | None = None) -> None:
        """Delete a record; one that never existed raises ``NotFound``."""
        ...

    def find_own(self, resource: str, ref: str, /) -> list[dict[str, Any]]:
        """The records the sync created for ``ref`` (deleted ones included where listed)."""
        ...


__all__ = ["SyncClient"]
