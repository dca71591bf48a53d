"""The statuses a plan row's write, a held record and a run go through. Pure: no I/O.

Each is a :class:`~enum.StrEnum` whose values are the strings stored in the link store
(``crmsync_plan.crm_status``/``cb_status``, ``crmsync_quarantine.kind`` and
``crmsync_plan.hold_kind``, ``crmsync_run.status``): a member compares equal to its
string, so rows written before these enums existed read the same, and every value written
is the same string as before.
"""

from __future__ import annotations

from enum import StrEnum


class WriteStatus(StrEnum):
    """One side's write of a plan row (None in the store: nothing to write there)."""

    PENDING = "pending"  # planned, not attempted
    IN_FLIGHT = "in_flight"  # a create written ahead: its fate is unknown until looked up
    DONE = "done"  # written (or found already written)
    STALE = "stale"  # the record changed (or was deleted) since it was read: synced next run
    REJECTED = "rejected"  # the API refused the data: a person must fix the record
    FAILED = "failed"  # the API could not be reached within the retry budget: retried next run


#: Statuses of a write that did not land and that hold the source record (stale needs no hold).
WRITE_FAILURES = (WriteStatus.REJECTED, WriteStatus.FAILED)


class HoldKind(StrEnum):
    """Why a record is held in quarantine (and whether it is retried without changing)."""

    INVALID = "invalid"  # its data fails the mapping's validation: retried when it changes
    AMBIGUOUS = "ambiguous"  # several candidates matched: retried every run
    WAITING = "waiting"  # a required reference is not linked yet: retried every run
    REF_PENDING = "ref_pending"  # an optional reference is not linked yet: retried a few times
    REJECTED = "rejected"  # the API rejected its write: retried when it changes
    FAILED = "failed"  # its write failed (API unreachable): retried every run
    #: a delete held for a person's decision (delete policy ``approve``), on the deleted
    #: record: retried every run, nothing written until someone approves or rejects it
    APPROVAL = "approval"
    #: that held delete, approved by a person (store/approvals.py): the next run deletes
    #: the linked record, then releases the row
    APPROVED = "approved"
    #: that held delete, rejected by a person: the next run ends the link and keeps the
    #: linked record, then releases the row
    DECLINED = "declined"


#: The kinds of a delete held under policy ``approve``, waiting or decided: the engine, the
#: approvals store and the Sync page compare a row's kind with these, never its reason.
APPROVAL_KINDS = (HoldKind.APPROVAL, HoldKind.APPROVED, HoldKind.DECLINED)


def hold_kind_of_write(status: str) -> HoldKind:
    """The hold of a source record whose write to the other side ended with ``status``.

    A write the API rejected holds the record as ``rejected`` (retried only when the record
    changes: the same data would be rejected again and spend API calls); any other failure
    as ``failed`` (retried next run).
    """
    return HoldKind.REJECTED if status == WriteStatus.REJECTED else HoldKind.FAILED


class RunStatus(StrEnum):
    """A run of one flow (``crmsync_run.status``)."""

    RUNNING = "running"  # extract began
    PLANNED = "planned"  # transform finished: its plan may be executed
    FINISHED = "finished"  # update_links finished: links, holds and watermarks written
