"""The decision of change detection: changed since the last sync, not the sync's own write."""

from __future__ import annotations

from crmsync.triggers.decide import Seen, unsynced
from hypothesis import given
from hypothesis import strategies as st

ids = st.sampled_from(["a", "b", "c", "d"])
versions = st.one_of(st.none(), st.sampled_from(["1", "2", "3"]))
seen_records = st.lists(st.builds(Seen, ids, versions, st.floats(0, 200)), max_size=12)
linked_maps = st.dictionaries(ids, st.sets(st.sampled_from(["1", "2", "3"]), max_size=2), max_size=4)


def test_an_edit_after_the_watermark_counts() -> None:
    rec = Seen("a", "5", 120.0)
    assert unsynced([rec], {"a": {"4"}}, since=100.0) == [rec]


def test_the_syncs_own_write_does_not_count() -> None:
    assert unsynced([Seen("a", "5", 120.0)], {"a": {"5"}}, since=100.0) == []


def test_an_unlinked_record_counts_and_a_change_before_the_watermark_does_not() -> None:
    new, old = Seen("n", "1", 150.0), Seen("o", "1", 50.0)
    assert unsynced([new, old], {}, since=100.0) == [new]


def test_a_flow_never_synced_announces_nothing() -> None:
    assert unsynced([Seen("a", "1", 150.0)], {}, since=None) == []


def test_an_announced_version_is_not_announced_again_but_a_newer_one_is() -> None:
    assert unsynced([Seen("a", "1", 150.0)], {}, since=100.0, announced={("a", "1")}) == []
    assert unsynced([Seen("a", "2", 160.0)], {}, since=100.0, announced={("a", "1")}) == [
        Seen("a", "2", 160.0)
    ]


@given(seen_records, linked_maps, st.one_of(st.none(), st.floats(0, 200)))
def test_what_counts_is_exactly_the_unsynced_changes(
    seen: list[Seen], linked: dict[str, set[str]], since: float | None
) -> None:
    out = unsynced(seen, linked, since)
    if since is None:
        assert out == []
        return
    for rec in out:
        assert rec.changed_at >= int(since)
        assert rec.version is None or rec.version not in linked.get(rec.id, set())
    assert len({(r.id, r.version) for r in out}) == len(out)
    expected = {
        (r.id, r.version)
        for r in seen
        if r.changed_at >= int(since) and not (r.version is not None and r.version in linked.get(r.id, set()))
    }
    assert {(r.id, r.version) for r in out} == expected
