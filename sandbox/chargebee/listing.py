"""List endpoints: filters, sorting and keyset paging with an opaque ``next_offset``.

Chargebee's ``next_offset`` is a position, not a row count: the sandbox encodes the sort
key of the last record returned (value, creation sequence) in an opaque token, and the
next page starts strictly after it. Because a record's sort value only ever grows when
it is edited (``updated_at`` never moves back), a record edited while a client pages
through ``sort_by[asc]=updated_at`` moves *behind* the cursor and shows up again later -
it can be seen twice, but it is never skipped. (Descending sorts can skip edited records,
as on any keyset API; incremental readers use ascending order.)
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from sandbox.chargebee.errors import ApiError, wrong_value
from sandbox.chargebee.forms import parse_list_value
from sandbox.chargebee.models import SPECS, public

MAX_LIMIT = 100
DEFAULT_LIMIT = 10

STRING_OPS = frozenset({"is", "is_not", "starts_with", "in", "not_in", "is_present"})
ENUM_OPS = frozenset({"is", "is_not", "in", "not_in", "is_present"})
BOOL_OPS = frozenset({"is", "is_present"})
TS_OPS = frozenset({"after", "before", "on", "between", "is_present"})
NUM_OPS = frozenset({"is", "is_not", "lt", "lte", "gt", "gte", "between", "is_present"})

OPS = {"string": STRING_OPS, "enum": ENUM_OPS, "boolean": BOOL_OPS, "timestamp": TS_OPS, "number": NUM_OPS}

# Parameters every list accepts besides filters.
COMMON_PARAMS = frozenset({"limit", "offset", "sort_by", "include_deleted", "include_site_level_resources"})


@dataclass(frozen=True)
class ListSpec:
    """Filterable fields of one list endpoint: name -> kind (string/enum/boolean/timestamp/number)."""

    filters: Mapping[str, str]
    case_insensitive: frozenset[str] = frozenset({"email"})


def _encode_cursor(field: str, direction: str, key: tuple[int, Any, int]) -> str:
    raw = json.dumps([field, direction, key[0], key[1], key[2]], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(token: str) -> tuple[str, str, tuple[int, Any, int]]:
    try:
        padded = token + "=" * (-len(token) % 4)
        field, direction, present, value, seq = json.loads(base64.urlsafe_b64decode(padded.encode()))
        return str(field), str(direction), (int(present), value, int(seq))
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise wrong_value("offset", "invalid offset value") from None


def _sort_key(rec: Mapping[str, Any], field: str) -> tuple[int, Any, int]:
    value = rec.get(field)
    seq = int(rec.get("_seq", 0))
    if field == "_seq":
        return (1, seq, seq)
    if value is None:
        return (0, 0, seq)
    return (1, value, seq)


def _to_int(raw: Any, param: str) -> int:
    try:
        return int(str(raw).strip())
    except ValueError:
        raise wrong_value(param, "must be a Unix timestamp / integer") from None


def _bool(raw: Any, param: str) -> bool:
    value = str(raw).strip().lower()
    if value in ("true", "false"):
        return value == "true"
    raise wrong_value(param, "must be true or false")


def build_predicate(
    query: Mapping[str, Any], spec: ListSpec, extra_ignored: Iterable[str] = ()
) -> Callable[[Mapping[str, Any]], bool]:
    """Compile the filter parameters of ``query`` into one record predicate (400 on bad input)."""
    checks: list[Callable[[Mapping[str, Any]], bool]] = []
    ignored = COMMON_PARAMS | set(extra_ignored)
    for field, ops in query.items():
        if field in ignored:
            continue
        kind = spec.filters.get(field)
        if kind is None:
            raise ApiError(400, "param_not_allowed", f"{field} : is not a supported filter", param=field)
        if not isinstance(ops, dict):
            raise wrong_value(field, f"use an operator, e.g. {field}[is]=value")
        for op, raw in ops.items():
            param = f"{field}[{op}]"
            if op not in OPS[kind]:
                raise wrong_value(param, f"operator {op!r} is not supported for {field}")
            checks.append(_compile(field, kind, op, raw, param, field in spec.case_insensitive))

    def predicate(rec: Mapping[str, Any]) -> bool:
        return all(check(rec) for check in checks)

    return predicate


def _compile(
    field: str, kind: str, op: str, raw: Any, param: str, fold: bool
) -> Callable[[Mapping[str, Any]], bool]:
    if op == "is_present":
        want = _bool(raw, param)
        return lambda r: (r.get(field) not in (None, "")) == want

    if kind in ("string", "enum"):
        norm: Callable[[Any], Any] = (lambda v: str(v).lower()) if fold else (lambda v: str(v))
        if op in ("in", "not_in"):
            values = {norm(v) for v in parse_list_value(raw, param)}
            if op == "in":
                return lambda r: r.get(field) is not None and norm(r.get(field)) in values
            return lambda r: r.get(field) is None or norm(r.get(field)) not in values
        target = norm(raw)
        if op == "is":
            return lambda r: r.get(field) is not None and norm(r.get(field)) == target
        if op == "is_not":
            return lambda r: r.get(field) is None or norm(r.get(field)) != target
        return lambda r: r.get(field) is not None and norm(r.get(field)).startswith(target)

    if kind == "boolean":
        want = _bool(raw, param)
        return lambda r: bool(r.get(field)) == want

    if op == "between":
        bounds = parse_list_value(raw, param)
        if len(bounds) != 2:
            raise wrong_value(param, "expects [from, to]")
        lo, hi = _to_int(bounds[0], param), _to_int(bounds[1], param)
        return lambda r: r.get(field) is not None and lo <= int(r[field]) <= hi

    value = _to_int(raw, param)
    if kind == "timestamp":
        if op == "after":
            return lambda r: r.get(field) is not None and int(r[field]) > value
        if op == "before":
            return lambda r: r.get(field) is not None and int(r[field]) < value
        day = time.gmtime(value)[:3]
        return lambda r: r.get(field) is not None and time.gmtime(int(r[field]))[:3] == day

    comparisons: dict[str, Callable[[int, int], bool]] = {
        "is": lambda a, b: a == b,
        "is_not": lambda a, b: a != b,
        "lt": lambda a, b: a < b,
        "lte": lambda a, b: a <= b,
        "gt": lambda a, b: a > b,
        "gte": lambda a, b: a >= b,
    }
    compare = comparisons[op]
    return lambda r: r.get(field) is not None and compare(int(r[field]), value)


def parse_limit(query: Mapping[str, Any]) -> int:
    raw = query.get("limit")
    if raw is None or raw == "":
        return DEFAULT_LIMIT
    try:
        limit = int(str(raw))
    except ValueError:
        raise wrong_value("limit", "must be an integer") from None
    if limit < 1:
        raise wrong_value("limit", "cannot be less than 1")
    if limit > MAX_LIMIT:
        raise wrong_value("limit", f"cannot be more than {MAX_LIMIT}")
    return limit


def parse_sort(query: Mapping[str, Any], resource: str) -> tuple[str, str]:
    spec = SPECS[resource]
    sort = query.get("sort_by")
    if sort is None:
        return spec.default_sort
    if not isinstance(sort, dict) or len(sort) != 1:
        raise wrong_value("sort_by", "use sort_by[asc]=<attribute> or sort_by[desc]=<attribute>")
    direction, field = next(iter(sort.items()))
    if direction not in ("asc", "desc"):
        raise wrong_value(f"sort_by[{direction}]", "direction must be asc or desc")
    if field not in spec.sortable:
        raise wrong_value(
            f"sort_by[{direction}]", f"cannot sort by {field!r}; allowed: {', '.join(sorted(spec.sortable))}"
        )
    return str(field), str(direction)


def list_page(
    resource: str,
    records: Iterable[Mapping[str, Any]],
    query: Mapping[str, Any],
    spec: ListSpec,
    *,
    include_deleted_default: bool = False,
    hide: Callable[[Mapping[str, Any]], bool] | None = None,
    extra_ignored: Iterable[str] = (),
) -> dict[str, Any]:
    """One page of ``resource`` as Chargebee's list envelope.

    ``hide`` drops records before filtering (the sandbox's simulated list lag).
    """
    limit = parse_limit(query)
    field, direction = parse_sort(query, resource)
    raw_inc = query.get("include_deleted")
    include_deleted = include_deleted_default if raw_inc in (None, "") else _bool(raw_inc, "include_deleted")
    predicate = build_predicate(query, spec, extra_ignored)
    cursor_key: tuple[int, Any, int] | None = None
    token = query.get("offset")
    if token:
        c_field, c_dir, cursor_key = _decode_cursor(str(token))
        if (c_field, c_dir) != (field, direction):
            raise wrong_value("offset", "offset does not belong to this sort order")
    selected = [
        r
        for r in records
        if (include_deleted or not r.get("deleted")) and (hide is None or not hide(r)) and predicate(r)
    ]
    reverse = direction == "desc"
    try:
        selected.sort(key=lambda r: _sort_key(r, field), reverse=reverse)
    except TypeError:
        selected.sort(key=lambda r: (lambda k: (k[0], str(k[1]), k[2]))(_sort_key(r, field)), reverse=reverse)
    if cursor_key is not None:
        ck = cursor_key
        if reverse:
            selected = [r for r in selected if _cmp_key(_sort_key(r, field), ck) < 0]
        else:
            selected = [r for r in selected if _cmp_key(_sort_key(r, field), ck) > 0]
    page = selected[:limit]
    obj = SPECS[resource].object
    body: dict[str, Any] = {"list": [{obj: public(dict(r))} for r in page]}
    if len(selected) > limit:
        body["next_offset"] = _encode_cursor(field, direction, _sort_key(page[-1], field))
    return body


def _cmp_key(a: tuple[int, Any, int], b: tuple[int, Any, int]) -> int:
    try:
        return (a > b) - (a < b)
    except TypeError:
        sa = (a[0], str(a[1]), a[2])
        sb = (b[0], str(b[1]), b[2])
        return (sa > sb) - (sa < sb)
