"""Chargebee bracket-notation form encoding.

The property test decodes what ``encode_form`` produced (after a real url-encode /
parse round trip) with an independent bracket-notation parser and checks it equals
the input in Chargebee's normal form: scalars as strings, ``None`` dropped,
``meta_data`` as JSON, and list indices *last* (``items[id][0]``), the way Chargebee's
API and official SDK lay out lists of objects.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from enum import Enum
from typing import Any
from urllib.parse import parse_qsl, urlencode

import pytest
from crmsync.hooks.chargebee import JSON_KEYS, encode_form
from hypothesis import given, settings
from hypothesis import strategies as st

# ----------------------------------------------------------------- the oracle

_SEGMENT = re.compile(r"\[([^\[\]]*)\]")


class Leaf:
    """A decoded value (string, or parsed JSON for meta_data)."""

    def __init__(self, value: Any) -> None:
        self.value = value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Leaf) and other.value == self.value

    def __repr__(self) -> str:
        return f"Leaf({self.value!r})"


def parse_brackets(pairs: list[tuple[str, str]]) -> dict[Any, Any]:
    """``[("a[b][0]", "x")]`` → ``{"a": {"b": {0: Leaf("x")}}}``."""
    out: dict[Any, Any] = {}
    for key, value in pairs:
        head = key.split("[", 1)[0]
        rest = _SEGMENT.findall(key[len(head) :])
        path: list[Any] = [head] + [int(s) if s.isdigit() else s for s in rest]
        names = [p for p in path if isinstance(p, str)]
        leaf = Leaf(json.loads(value)) if names[-1] in JSON_KEYS else Leaf(value)
        node = out
        for part in path[:-1]:
            node = node.setdefault(part, {})
        assert path[-1] not in node, f"duplicate key {key}"
        node[path[-1]] = leaf
    return out


def _scalar(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def _push(tree: Any, index: int) -> Any:
    if isinstance(tree, Leaf):
        return {index: tree}
    return {k: _push(v, index) for k, v in tree.items()}


def _merge(a: dict[Any, Any], b: dict[Any, Any]) -> dict[Any, Any]:
    for k, v in b.items():
        if k in a and isinstance(a[k], dict) and isinstance(v, dict):
            _merge(a[k], v)
        else:
            assert k not in a
            a[k] = v
    return a


_ABSENT = object()


def normal_form(value: Any, name: str) -> Any:
    """What ``parse_brackets(encode_form(...))`` must give back for ``value``."""
    if value is None:
        return _ABSENT
    if name in JSON_KEYS and isinstance(value, dict | list):
        return Leaf(value)
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            n = normal_form(v, k)
            if n is not _ABSENT and n != {}:
                out[k] = n
        return out
    if isinstance(value, list):
        out = {}
        for i, item in enumerate(value):
            n = normal_form(item, name)
            if n is not _ABSENT and n != {}:
                _merge(out, _push(n, i))
        return out
    return Leaf(_scalar(value))


# ------------------------------------------------------------- the strategies

names = st.from_regex(r"[a-z][a-z0-9_]{0,7}", fullmatch=True).filter(lambda s: s not in JSON_KEYS)
text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
scalars = st.none() | st.booleans() | st.integers(-(10**12), 10**12) | text
json_values = st.dictionaries(names, st.none() | st.booleans() | st.integers() | text, max_size=3)
nested = st.recursive(
    st.dictionaries(names, scalars, max_size=3),
    lambda inner: st.dictionaries(names, scalars | inner, max_size=3),
    max_leaves=8,
)
values = (
    scalars
    | nested
    | st.lists(scalars, max_size=4)
    | st.lists(
        st.dictionaries(names, scalars | st.dictionaries(names, scalars, max_size=2), max_size=3), max_size=3
    )
)
params = st.builds(
    lambda base, meta: {**base, **({"meta_data": meta} if meta is not None else {})},
    st.dictionaries(names, values, max_size=5),
    st.none() | json_values,
)


@settings(max_examples=300, deadline=None)
@given(params)
def test_encoding_round_trips_through_bracket_notation(p: dict[str, Any]) -> None:
    pairs = encode_form(p)
    wire = urlencode(pairs)
    back = parse_qsl(wire, keep_blank_values=True)
    assert back == pairs
    assert parse_brackets(back) == normal_form(p, "")


@given(st.dictionaries(names, values, max_size=4))
def test_keys_are_unique_and_never_empty_values_for_none(p: dict[str, Any]) -> None:
    keys = [k for k, _ in encode_form(p)]
    assert len(keys) == len(set(keys))


# ------------------------------------------------------------------ examples


def test_documented_examples() -> None:
    pairs = encode_form(
        {
            "id": "cust_1",
            "first_name": "Åse",
            "auto_collection": None,
            "taxability": "taxable",
            "consolidated_invoicing": False,
            "billing_address": {"city": "Oslo", "line2": None, "zip": 150},
            "meta_data": {"crm_id": "C-1", "tags": ["a"]},
            "order_line_items": [{"id": "li_1", "status": "shipped"}, {"id": "li_2"}],
            "coupon_ids": ["c1", "c2"],
        }
    )
    assert pairs == [
        ("id", "cust_1"),
        ("first_name", "Åse"),
        ("taxability", "taxable"),
        ("consolidated_invoicing", "false"),
        ("billing_address[city]", "Oslo"),
        ("billing_address[zip]", "150"),
        ("meta_data", '{"crm_id":"C-1","tags":["a"]}'),
        ("order_line_items[id][0]", "li_1"),
        ("order_line_items[status][0]", "shipped"),
        ("order_line_items[id][1]", "li_2"),
        ("coupon_ids[0]", "c1"),
        ("coupon_ids[1]", "c2"),
    ]


def test_dict_in_dict_and_list_in_dict() -> None:
    assert encode_form({"a": {"b": {"c": 1}, "l": [True, None, 2]}}) == [
        ("a[b][c]", "1"),
        ("a[l][0]", "true"),
        ("a[l][2]", "2"),
    ]


def test_metadata_string_passes_through() -> None:
    assert encode_form({"metadata": '{"x":1}'}) == [("metadata", '{"x":1}')]


class Colour(Enum):
    RED = "red"


def test_scalar_types() -> None:
    when = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    assert encode_form(
        {
            "e": Colour.RED,
            "d": Decimal("1.50"),
            "f": 2.5,
            "t": when,
            "t2": when.astimezone(timezone(timedelta(hours=2))),
        }
    ) == [("e", "red"), ("d", "1.50"), ("f", "2.5"), ("t", "1704164645"), ("t2", "1704164645")]


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"t": datetime(2024, 1, 1)}, ValueError),  # naive: ambiguous
        ({"f": float("nan")}, ValueError),
        ({"x": object()}, TypeError),
        ({"a[b]": 1}, ValueError),  # a bracket in a name would forge another field
        ({"a": {"b=c": 1}}, ValueError),
        ({"a": [[1, 2]]}, TypeError),  # not expressible in Chargebee's notation
        ({"a": [{"b": [1]}]}, TypeError),
    ],
)
def test_rejects_what_cannot_be_encoded(params: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        encode_form(params)
