"""Flows run in dependency order, derived from the mappings' references (issue 13)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest
from crmsync.mapping.model import MappingError, load_mappings
from crmsync.mapping.order import dependency_order, flow_order
from hypothesis import given
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[3]


@dataclass
class Fake:
    flow: str
    depends_on: list[str] = field(default_factory=list)


def test_shipped_flows_run_after_the_flows_they_reference() -> None:
    order = flow_order(ROOT / "include/mappings")
    mappings = load_mappings(ROOT / "include/mappings")
    assert sorted(order) == sorted(m.flow for m in mappings)
    for m in mappings:
        for dep in m.depends_on:
            assert order.index(dep) < order.index(m.flow), (m.flow, dep, order)
    # the references the shipped mappings make today (a change here is a change of design)
    assert order.index("customer_business_entity") < order.index("contact_customer")
    assert order.index("contact_customer") < order.index("order_order")
    assert order.index("user_order") < order.index("order_order")


def test_ties_are_broken_by_name_so_the_order_is_stable() -> None:
    flows = [Fake("c"), Fake("a"), Fake("b", ["c"])]
    assert dependency_order(flows) == ["a", "c", "b"]
    assert dependency_order(reversed(flows)) == ["a", "c", "b"]


def test_a_reference_to_a_flow_not_loaded_orders_nothing() -> None:
    assert dependency_order([Fake("b", ["elsewhere"]), Fake("a")]) == ["a", "b"]


def test_a_cycle_is_a_mapping_error_naming_its_flows() -> None:
    with pytest.raises(MappingError, match=r"cycle.*: a, b$"):
        dependency_order([Fake("a", ["b"]), Fake("b", ["a"]), Fake("c")])


@st.composite
def acyclic(draw: st.DrawFn) -> list[Fake]:
    """Random DAGs: flow i may depend only on flows with a smaller index, then shuffled."""
    n = draw(st.integers(min_value=0, max_value=9))
    names = [f"f{i}" for i in range(n)]
    flows = [
        Fake(name, sorted(draw(st.sets(st.sampled_from(names[:i])) if i else st.just(set()))))
        for i, name in enumerate(names)
    ]
    return draw(st.permutations(flows))


@given(acyclic())
def test_every_flow_once_and_after_each_dependency(flows: list[Fake]) -> None:
    order = dependency_order(flows)
    assert sorted(order) == sorted(f.flow for f in flows)
    for f in flows:
        for dep in f.depends_on:
            assert order.index(dep) < order.index(f.flow)
    assert dependency_order(list(reversed(flows))) == order  # independent of file order
