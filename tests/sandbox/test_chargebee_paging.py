"""Property: keyset paging over ``sort_by[asc]=updated_at`` never skips a record.

Drives the sandbox's list engine directly (no HTTP) so hypothesis can try many
interleavings of pages, edits, creates, deletes and clock moves quickly.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from sandbox.chargebee.listing import ListSpec, list_page
from sandbox.chargebee.store import ChargebeeState
from sandbox.common.clock import Clock

SPEC = ListSpec({"updated_at": "timestamp", "id": "string"})

ops = st.lists(
    st.one_of(
        st.tuples(st.just("edit"), st.integers(0, 10_000)),
        st.tuples(st.just("create"), st.integers(0, 10_000)),
        st.tuples(st.just("delete"), st.integers(0, 10_000)),
        st.tuples(st.just("tick"), st.integers(0, 3)),
    ),
    max_size=6,
)


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(0, 40),
    limit=st.integers(1, 7),
    same_second=st.booleans(),
    between_pages=st.lists(ops, min_size=1, max_size=12),
    include_deleted=st.booleans(),
)
def test_keyset_paging_never_skips(
    n: int, limit: int, same_second: bool, between_pages: list[list[tuple[str, int]]], include_deleted: bool
) -> None:
    clock = Clock(base=lambda: 1_700_000_000.0)
    state = ChargebeeState(None, clock=clock)
    for i in range(n):
        ts = 1_699_990_000 if same_second else 1_699_990_000 + (i * 7919) % 50
        state.admin_upsert("customers", {"id": f"c{i:03d}", "updated_at": ts}, touch=False, emit=False)
    initial = {rid for rid, rec in state.table("customers").items()}
    deleted: set[str] = set()
    seen: set[str] = set()
    query: dict[str, Any] = {"limit": str(limit), "sort_by": {"asc": "updated_at"}}
    if include_deleted:
        query["include_deleted"] = "true"
    for step in range(1000):
        body = list_page("customers", state.records("customers"), query, SPEC)
        seen |= {e["customer"]["id"] for e in body["list"]}
        assert all(e["customer"]["updated_at"] is not None for e in body["list"])
        if "next_offset" not in body:
            break
        query["offset"] = body["next_offset"]
        # Mutate between the first pages only: endless creates would outrun any reader.
        for op, arg in between_pages[step] if step < len(between_pages) else []:
            ids = sorted(state.table("customers"))
            if op == "tick":
                clock.advance(arg)
            elif op == "create":
                state.insert("customers", {"id": f"new{arg}-{step}"})
            elif ids and op == "edit":
                rec = state.table("customers")[ids[arg % len(ids)]]
                state.touch("customers", rec)
            elif ids and op == "delete":
                rid = ids[arg % len(ids)]
                rec = state.table("customers")[rid]
                if not rec.get("deleted"):
                    state.mark_deleted("customers", rec)
                    deleted.add(rid)
    else:
        raise AssertionError("paging did not terminate")
    must_see = initial if include_deleted else initial - deleted
    assert must_see <= seen
