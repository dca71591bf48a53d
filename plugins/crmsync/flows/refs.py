"""Fields that hold the id of another flow's record (an order's customer, an order's owner):
the link lookups behind :mod:`crmsync.engine.refs`.

The decisions (what a reference translates to, when a record waits, what a link's
pending references become) are pure functions in :mod:`crmsync.engine.refs`; this
module reads, and caches for one task run, the referenced flows' links they need.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy.engine import Engine

from crmsync.engine import refs as engine_refs
from crmsync.engine.canonical import SideRecord
from crmsync.engine.plan import Decision, LinkState
from crmsync.engine.refs import KnownLinks, RefKey, Translated, unresolved
from crmsync.engine.settle import PENDING_REFS
from crmsync.mapping.model import Mapping as FlowMapping
from crmsync.mapping.model import Side
from crmsync.mapping.transforms import Canonical
from crmsync.store.links import LinkStore


class RefResolver:
    """Batch lookups of the referenced flows' links; cached for one task run."""

    def __init__(self, engine: Engine, mapping: FlowMapping) -> None:
        self.engine = engine
        self.mapping = mapping
        self._cb_to_crm: dict[RefKey, str | None] = {}
        self._crm_to_cb: dict[RefKey, str | None] = {}
        self.known = KnownLinks(self._cb_to_crm, self._crm_to_cb)

    @property
    def active(self) -> bool:
        return bool(self.mapping.refs)

    def _load(self, side: Side, keys: Iterable[RefKey]) -> KnownLinks:
        """Read the links of ``keys`` (ids of ``side``) not read yet, one query per flow."""
        cache = self._cb_to_crm if side is Side.CHARGEBEE else self._crm_to_cb
        todo: dict[str, set[str]] = {}
        for flow, i in keys:
            if (flow, i) not in cache:
                todo.setdefault(flow, set()).add(i)
        for flow, ids in todo.items():
            found = LinkStore(self.engine, flow).partners(side, sorted(ids))
            for i in ids:
                cache[(flow, i)] = found.get(i)
        return self.known

    def prefetch(self, records: Iterable[SideRecord]) -> None:
        """One query per referenced flow for a batch of records."""
        self._load(Side.CHARGEBEE, engine_refs.chargebee_lookups(self.mapping, records))

    def translated(self, rec: SideRecord) -> Translated:
        """A Chargebee record's references translated, and why it waits or is ref-pending."""
        if rec.side is not Side.CHARGEBEE or not self.active:
            return Translated(rec)
        links = self._load(Side.CHARGEBEE, engine_refs.chargebee_lookups(self.mapping, [rec]))
        return engine_refs.translate_record(self.mapping, rec, links)

    def canonical(self, rec: SideRecord) -> tuple[SideRecord, str | None]:
        """Translate a Chargebee record's references; the reason it must wait, if any."""
        t = self.translated(rec)
        return t.record, t.hard

    def canonical_soft(self, rec: SideRecord) -> tuple[SideRecord, str | None, str | None]:
        """As :meth:`canonical`, plus why an optional reference is not synced yet."""
        t = self.translated(rec)
        return t.record, t.hard, t.soft

    def canonical_values(self, values: dict[str, Canonical]) -> dict[str, Canonical]:
        """The same translation for values a Chargebee write returned."""
        return self.translated(SideRecord(Side.CHARGEBEE, "-", values)).record.values

    def pending(self, raw: dict[str, Canonical], translated: dict[str, Canonical]) -> dict[str, str]:
        """The references of a record Chargebee returned that had no link to translate to."""
        return engine_refs.pending_refs(self.mapping, raw, translated)

    def resolve_link(self, state: LinkState) -> LinkState:
        """A link's pending references translated (:func:`crmsync.engine.refs.resolve_link`)."""
        if PENDING_REFS not in state.base and PENDING_REFS not in state.cb_snapshot:
            return state
        links = self._load(Side.CHARGEBEE, engine_refs.pending_lookups(self.mapping, state))
        return engine_refs.resolve_link(self.mapping, state, links)

    def to_chargebee(self, changes: dict[str, Canonical]) -> tuple[dict[str, Canonical], str | None]:
        """Customcrm ids in changes bound for Chargebee → Chargebee ids (or why not yet)."""
        links = self._load(Side.CUSTOMCRM, engine_refs.customcrm_lookups(self.mapping, changes))
        return engine_refs.to_chargebee(self.mapping, changes, links)

    def translate_decision(self, d: Decision, crm: SideRecord | None) -> Decision:
        """A decision's writes to Chargebee with Chargebee ids, or the source waiting."""
        links = self._load(Side.CUSTOMCRM, engine_refs.decision_lookups(self.mapping, d))
        return engine_refs.translate_decision(self.mapping, d, crm, links)


__all__ = ["PENDING_REFS", "RefResolver", "unresolved"]
