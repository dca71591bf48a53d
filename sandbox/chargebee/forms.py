"""Bracket-notation form/query parsing, the way Chargebee reads parameters.

Chargebee takes ``application/x-www-form-urlencoded`` bodies and query strings whose
keys nest with brackets::

    billing_address[city]=Oslo            -> {"billing_address": {"city": "Oslo"}}
    updated_at[after]=1700000000          -> {"updated_at": {"after": "1700000000"}}
    order_line_items[status][0]=shipped   -> {"order_line_items": {"status": ["shipped"]}}
    applicable_items[0]=a&applicable_items[1]=b -> {"applicable_items": ["a", "b"]}

:func:`parse_pairs` builds that nested structure (digit-only key sets become lists);
:func:`rows` turns Chargebee's column-wise arrays (``x[id][0]``, ``x[status][0]``) into a
list of row dicts. JSON-valued parameters (``meta_data``, ``id[in]``) are decoded by
:func:`parse_json_value`, which also accepts the Python-literal form the official Python
SDK sends for dicts and ``in`` lists (it ``str()``-s them).
"""

from __future__ import annotations

import ast
import json
import re
from typing import Any
from urllib.parse import parse_qsl

from sandbox.chargebee.errors import ApiError, wrong_value

_KEY_RE = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_PART_RE = re.compile(r"\[([^\[\]]*)\]")


def split_key(key: str) -> list[str]:
    """``"a[b][0]"`` -> ``["a", "b", "0"]``; raises 400 for malformed keys."""
    match = _KEY_RE.match(key)
    if not match:
        raise wrong_value(key, "malformed parameter name")
    return [match.group(1), *_PART_RE.findall(match.group(2))]


def parse_pairs(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Nest ``(key, value)`` pairs by their bracket paths; last value wins on repeats."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        parts = split_key(key)
        node = root
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if last:
                if isinstance(node.get(part), dict):
                    raise wrong_value(key, "conflicts with a nested parameter of the same name")
                node[part] = value
            else:
                child = node.setdefault(part, {})
                if not isinstance(child, dict):
                    raise wrong_value(key, "conflicts with a scalar parameter of the same name")
                node = child
    return _listify(root)


def _listify(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    converted = {k: _listify(v) for k, v in node.items()}
    if converted and all(k.isdigit() for k in converted):
        return [converted[k] for k in sorted(converted, key=int)]
    return converted


def parse_query(query: str) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    pairs = parse_qsl(query, keep_blank_values=True)
    return parse_pairs(pairs), pairs


def parse_form(body: bytes) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(400, "param_wrong_value", "request body is not valid UTF-8") from exc
    pairs = parse_qsl(text, keep_blank_values=True)
    return parse_pairs(pairs), pairs


def flat_keys(node: Any, prefix: str = "") -> list[str]:
    """All leaf parameter names in bracket form (for unknown-parameter errors)."""
    if isinstance(node, dict):
        out: list[str] = []
        for key, value in node.items():
            out.extend(flat_keys(value, f"{prefix}[{key}]" if prefix else key))
        return out
    if isinstance(node, list):
        out = []
        for i, value in enumerate(node):
            out.extend(flat_keys(value, f"{prefix}[{i}]"))
        return out
    return [prefix]


def rows(value: Any, param: str) -> list[dict[str, Any]]:
    """Column-wise arrays -> rows: ``{"id": ["a","b"], "status": ["x"]}`` -> ``[{id:a,status:x},{id:b}]``.

    Also accepts an already row-wise list of dicts.
    """
    if value is None:
        return []
    if isinstance(value, list):
        if all(isinstance(v, dict) for v in value):
            return [dict(v) for v in value]
        raise wrong_value(param, "expected indexed sub-parameters like " + f"{param}[id][0]")
    if not isinstance(value, dict):
        raise wrong_value(param, "expected indexed sub-parameters like " + f"{param}[id][0]")
    out: list[dict[str, Any]] = []
    for column, cells in value.items():
        if isinstance(cells, dict):
            if not all(k.isdigit() for k in cells):
                raise wrong_value(f"{param}[{column}]", "expected an index like [0]")
            cells = [cells[k] for k in sorted(cells, key=int)]
        if not isinstance(cells, list):
            raise wrong_value(f"{param}[{column}]", "expected an index like [0]")
        for i, cell in enumerate(cells):
            while len(out) <= i:
                out.append({})
            out[i][column] = cell
    return out


def parse_json_value(raw: Any, param: str) -> Any:
    """Decode a JSON parameter; falls back to a Python literal (what the Python SDK sends)."""
    if not isinstance(raw, str):
        return raw
    try:
        return json.loads(raw)
    except ValueError:
        pass
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        raise wrong_value(param, "invalid JSON") from None


def parse_list_value(raw: Any, param: str) -> list[str]:
    """``'["a","b"]'`` (or ``"['a', 'b']"`` from the Python SDK) -> ``["a", "b"]``."""
    if isinstance(raw, list):
        return [str(v) for v in raw]
    value = parse_json_value(raw, param)
    if not isinstance(value, list):
        raise wrong_value(param, 'expected a JSON array like ["a","b"]')
    return [str(v) for v in value]
