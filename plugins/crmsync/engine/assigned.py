"""Values Chargebee assigns when the sync creates a record there. Pure: no I/O.

When the sync creates a Chargebee record from a Customcrm one, Chargebee fills fields the
create does not take: an order's ``document_number``, totals, currency and customer come
from its invoice. Where the mapping says such a field flows to Customcrm only (and edits
there are restored), the assigned value is what Customcrm must hold, and it is written in
the same run, by ``upsert_customcrm`` (which runs after ``upsert_chargebee`` for this
reason). It is the new base, not an edit: written a run later it would read as an edit
made in Customcrm, be "reverted", and the audit would blame a person for a value nobody
touched (issue 11 item 3). Fields whose read-only edits are kept (``read_only_edits:
keep``), such as a contact's company when Chargebee put the customer in its default
business entity, keep the Customcrm value on purpose and are left alone here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from crmsync.mapping.model import Mapping as FlowMapping
from crmsync.mapping.model import ReadOnlyEdits, Side
from crmsync.mapping.transforms import Canonical

#: the note kind (plan row detail) and audit kind of a value written this way
ASSIGNED_ON_CREATE = "assigned_on_create"


@dataclass(frozen=True)
class Assigned:
    """One field Chargebee assigned at creation that Customcrm must take."""

    field: str
    customcrm: Canonical
    chargebee: Canonical

    def message(self, mapping: FlowMapping, cb_id: str) -> str:
        f = mapping.field(self.field)
        return (
            f"{self.field}: value assigned by Chargebee when the sync created {mapping.chargebee.label} "
            f"{cb_id} ({f.chargebee} {self.chargebee!r}); written to Customcrm {f.customcrm} (was "
            f"{self.customcrm!r}) because the mapping lets {self.field} flow to Customcrm only. "
            "No one edited it."
        )


def assigned_on_create(
    mapping: FlowMapping,
    sent: Mapping[str, Canonical],
    created: Mapping[str, Canonical],
    crm: Mapping[str, Canonical],
) -> list[Assigned]:
    """Fields of a just-created Chargebee record that Customcrm must now take.

    ``sent``: the canonical changes the create carried; ``created``: the created record's
    canonical values (references translated); ``crm``: the Customcrm record as planned.
    A field qualifies when the create could not set it (not sent, and it does not flow
    into Chargebee), it flows into Customcrm, Customcrm edits to it are restored, and the
    two values differ. A blank assigned value never overwrites (nothing was assigned).
    """
    out: list[Assigned] = []
    for f in mapping.fields:
        if f.name in sent or f.direction.writes(Side.CHARGEBEE) or not f.direction.writes(Side.CUSTOMCRM):
            continue
        if (f.read_only_edits or mapping.read_only_edits) is not ReadOnlyEdits.RESTORE:
            continue
        if f.name not in created:
            continue  # not returned: unknown, nothing to write
        value = created[f.name]
        if value is None or value == crm.get(f.name):
            continue
        out.append(Assigned(f.name, crm.get(f.name), value))
    return out
