"""Fields that hold the id of another flow's record (an order's customer, an order's owner).

Such a field is compared in its Customcrm form: a Chargebee id is translated to the
Customcrm id it is linked to, through the links of the referenced flow, before the
merge; a value written to Chargebee is translated back. A record whose required
reference is not linked yet waits, with a reason, and is retried by the next run: this
is how flows that depend on each other converge whatever order they run in.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from sqlalchemy.engine import Engine

from crmsync.engine.canonical import SideRecord
from crmsync.engine.plan import NEEDS_A_PERSON, LinkState
from crmsync.engine.settle import PENDING_REFS
from crmsync.mapping.model import FieldMap, Side
from crmsync.mapping.model import Mapping as FlowMapping
from crmsync.mapping.transforms import Canonical
from crmsync.store.links import LinkStore


def unresolved(f: FieldMap, cb_value: str, hints: dict[str, str]) -> str:
    """Why a Chargebee record's reference ``f`` has no Customcrm record, and what makes it
    resolve: another flow's next run, or (``ref_missing_fix``) a person, named with the
    record's own values (an order's owner: the user its ``created_by`` names)."""
    if f.ref_missing_fix:
        fix = f.ref_missing_fix
        for path in f.hint_paths:
            fix = fix.replace("{" + path + "}", repr(hints[path]) if path in hints else f"(no {path})")
        return f"its {f.customcrm} cannot be set: {fix}{NEEDS_A_PERSON}"
    return (
        f"its {f.name} (Chargebee {f.chargebee} {cb_value}) is not linked yet: flow {f.ref} links it when "
        "it runs (if it stays unlinked, that flow's run summary says why)"
    )


class RefResolver:
    """Batch lookups of the referenced flows' links; cached for one task run."""

    def __init__(self, engine: Engine, mapping: FlowMapping) -> None:
        self.engine = engine
        self.mapping = mapping
        self._cb_to_crm: dict[tuple[str, str], str | None] = {}
        self._crm_to_cb: dict[tuple[str, str], str | None] = {}

    @property
    def active(self) -> bool:
        return bool(self.mapping.refs)

    def _load(self, flow: str, side: Side, ids: Iterable[str]) -> None:
        cache = self._cb_to_crm if side is Side.CHARGEBEE else self._crm_to_cb
        todo = sorted({i for i in ids if (flow, i) not in cache})
        if todo:
            for k, v in LinkStore(self.engine, flow).partners(side, todo).items():
                cache[(flow, k)] = v
        for i in todo:
            cache.setdefault((flow, i), None)

    def prefetch(self, records: Iterable[SideRecord]) -> None:
        """One query per referenced flow for a batch of records."""
        wanted: dict[tuple[str, Side], set[str]] = {}
        for rec in records:
            for f in self.mapping.refs:
                value = rec.values.get(f.name)
                if value is not None and f.ref:
                    wanted.setdefault((f.ref, rec.side), set()).add(str(value))
        for (flow, side), ids in wanted.items():
            if side is Side.CHARGEBEE:
                self._load(flow, side, ids)

    def canonical(self, rec: SideRecord) -> tuple[SideRecord, str | None]:
        """Translate a Chargebee record's references; the reason it must wait, if any."""
        rec, hard, _soft = self.canonical_soft(rec)
        return rec, hard

    def canonical_soft(self, rec: SideRecord) -> tuple[SideRecord, str | None, str | None]:
        """As :meth:`canonical`, plus why an optional reference is not synced yet.

        A record with an unresolved optional reference syncs its other fields now and is
        also held as ``waiting``, so the next run retries the reference without needing
        the record to change.
        """
        if rec.side is not Side.CHARGEBEE or not self.active:
            return rec, None, None
        values = dict(rec.values)
        waits: list[str] = []
        soft: list[str] = []
        for f in self.mapping.refs:
            raw = values.get(f.name)
            if raw is None or not f.ref:
                continue
            key = (f.ref, str(raw))
            if key not in self._cb_to_crm:
                self._load(f.ref, Side.CHARGEBEE, [str(raw)])
            crm_id = self._cb_to_crm.get(key)
            if crm_id is None:
                (waits if f.ref_required else soft).append(unresolved(f, str(raw), rec.hints))
                # Not linked yet is unknown, not empty: the merge must not read it as a
                # clear of the Customcrm value (a contact's company, an order's owner).
                del values[f.name]
                continue
            values[f.name] = crm_id
        return replace(rec, values=values), ("; ".join(waits) or None), ("; ".join(soft) or None)

    def canonical_values(self, values: dict[str, Canonical]) -> dict[str, Canonical]:
        """The same translation for values a Chargebee write returned."""
        rec, _ = self.canonical(SideRecord(Side.CHARGEBEE, "-", values))
        return rec.values

    def pending(self, raw: dict[str, Canonical], translated: dict[str, Canonical]) -> dict[str, str]:
        """The references of a record Chargebee returned that had no link to translate to."""
        return {
            f.name: str(raw[f.name])
            for f in self.mapping.refs
            if raw.get(f.name) is not None and translated.get(f.name) is None
        }

    def resolve_link(self, state: LinkState) -> LinkState:
        """A link whose created record carried references not linked at the time, with
        those references translated now that their flow may have linked them.

        Why: a customer created from a company-less contact gets Chargebee's default
        business entity. When that entity was not linked yet, the link's base recorded
        no company; read later, once the entity is linked, the customer's entity would
        look like an edit made in Chargebee and fill the entity's company into the
        contact, so the outcome would depend on which DAG ran first. With the pending
        reference translated, the base holds what the created record held, as it does
        when the entity was linked first. Unresolved ones are left out (unknown: the merge
        never reads them as a clear); the marker itself never reaches the merge
        (update_links carries it forward).
        """
        if PENDING_REFS not in state.base and PENDING_REFS not in state.cb_snapshot:
            return state
        base = self._resolve_pending(state.base, unknown=False)
        return replace(state, base=base, cb_snapshot=self._resolve_pending(state.cb_snapshot, unknown=True))

    def _resolve_pending(self, values: dict[str, Canonical], *, unknown: bool) -> dict[str, Canonical]:
        """``values`` with pending references translated; one still not linked reads as
        blank in a base (nothing agreed) and, with ``unknown``, is left out of a snapshot
        (what Chargebee holds there is unknown: never read as a clear)."""
        out = dict(values)
        pending = out.pop(PENDING_REFS, None)
        if not isinstance(pending, dict):
            return out
        by_name = {f.name: f for f in self.mapping.refs}
        for name, raw in pending.items():
            f = by_name.get(name)
            if f is None or not f.ref or out.get(name) is not None:
                continue
            key = (f.ref, str(raw))
            if key not in self._cb_to_crm:
                self._load(f.ref, Side.CHARGEBEE, [str(raw)])
            crm_id = self._cb_to_crm.get(key)
            if crm_id is not None:
                out[name] = crm_id
            elif unknown:
                out.pop(name, None)
            else:
                out[name] = None
        return out

    def to_chargebee(self, changes: dict[str, Canonical]) -> tuple[dict[str, Canonical], str | None]:
        """Customcrm ids in changes bound for Chargebee → Chargebee ids (or why not yet)."""
        out = dict(changes)
        waits = []
        for f in self.mapping.refs:
            if f.name not in changes or changes[f.name] is None or not f.ref:
                continue
            key = (f.ref, str(changes[f.name]))
            if key not in self._crm_to_cb:
                self._load(f.ref, Side.CUSTOMCRM, [str(changes[f.name])])
            cb_id = self._crm_to_cb.get(key)
            if cb_id is None:
                waits.append(
                    f"its {f.customcrm} {changes[f.name]} is not linked to Chargebee yet: flow {f.ref} "
                    "links it when it runs (if it stays unlinked, that flow's run summary says why)"
                )
            out[f.name] = cb_id
        return out, ("; ".join(waits) or None)
