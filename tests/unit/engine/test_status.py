"""The status enums keep the strings the link store holds (no migration, no behaviour change)."""

from __future__ import annotations

from crmsync.engine.status import (
    APPROVAL_KINDS,
    WRITE_FAILURES,
    HoldKind,
    RunStatus,
    WriteStatus,
    hold_kind_of_write,
)


def test_values_are_the_stored_strings() -> None:
    assert [s.value for s in WriteStatus] == ["pending", "in_flight", "done", "stale", "rejected", "failed"]
    kinds = ["invalid", "ambiguous", "waiting", "ref_pending", "rejected", "failed", "approval"]
    assert [k.value for k in HoldKind] == [*kinds, "approved", "declined"]
    # a held delete's decision is its kind (store/approvals.py), as stored before these members
    assert APPROVAL_KINDS == ("approval", "approved", "declined")
    assert [r.value for r in RunStatus] == ["running", "planned", "finished"]
    assert set(WRITE_FAILURES) == {"rejected", "failed"}


def test_members_compare_and_hash_as_their_strings() -> None:
    # rows read back from the store are plain str: lookups in sets and dicts must still hit
    assert "done" in {None, WriteStatus.DONE}
    assert {"waiting": 1}[HoldKind.WAITING] == 1
    assert str(RunStatus.FINISHED) == "finished"


def test_hold_kind_of_a_failed_write() -> None:
    assert hold_kind_of_write("rejected") is HoldKind.REJECTED
    assert hold_kind_of_write(WriteStatus.REJECTED) is HoldKind.REJECTED
    assert hold_kind_of_write("failed") is HoldKind.FAILED
    # anything else not landed is retried next run, as before
    assert hold_kind_of_write("in_flight") is HoldKind.FAILED
