"""Chargebee's API as the installed official SDK declares it, read with ``ast``.

The SDK's ``chargebee/models/<resource>/operations.py`` files are generated from
Chargebee's OpenAPI spec. Each operation is a method that calls
``request.send("post", request.uri_path("customers", id, "update_billing_info"), ...)``
or ``request.send_list_request(...)``; its ``params`` argument is annotated with a
TypedDict (``UpdateBillingInfoParams``) whose fields are either scalars, nested TypedDicts
(``billing_address`` -> ``billing_address[line1]``), lists of them (form index stripped:
``order_line_items[id][0]`` is ``order_line_items[id]``) or list filters
(``Filters.TimestampFilter`` -> ``updated_at[after]``, ``Filters.SortFilter`` ->
``sort_by[asc]``). Nothing is imported or executed: the files are parsed.

Custom fields (``cf_*``): the SDK does not mark which operations accept them (the only
trace is ``request.lowercase_keys`` keeping ``cf_`` keys as they are). Chargebee's docs
say custom fields exist on customers, subscriptions, items, item prices, plans and addons
(plans/addons: Product Catalog 1.0). ASSUMPTION, not from the SDK: ``cf_<name>`` is
accepted on those resources' create and update operations and, as ``cf_<name>[<op>]``, as
a filter of their list operation; nowhere else.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from importlib.util import find_spec
from pathlib import Path

# located, not imported: importing the SDK would execute it (and takes seconds)
_SPEC = find_spec("chargebee")
assert _SPEC is not None and _SPEC.origin, (
    "the chargebee SDK is not installed (pip install 'chargebee>=3,<4')"
)
SDK_ROOT = Path(_SPEC.origin).resolve().parent
MODELS = SDK_ROOT / "models"
FILTERS = SDK_ROOT / "filters" / "filters.py"

#: Resources whose create/update/list take ``cf_*`` (see the module docstring: an assumption).
CUSTOM_FIELD_RESOURCES = frozenset({"customers", "subscriptions", "items", "item_prices", "plans", "addons"})

_INDEX = re.compile(r"\[\d+\]")
_CF = re.compile(r"^cf_[a-z0-9_]+(\[[a-z_]+\])?$")


@dataclass(frozen=True)
class Operation:
    """One declared operation: ``method`` (upper case), ``path`` (``/customers/{id}``)."""

    method: str
    path: str
    resource: str  #: the SDK model directory (``customer``)
    name: str  #: the SDK method name (``update_billing_info``)
    params: frozenset[str] = field(default_factory=frozenset)
    #: dict-valued params the SDK would send as ``name[any][keys]`` (not in ``jsonKeys``)
    free_prefixes: frozenset[str] = field(default_factory=frozenset)
    custom_fields: bool = False

    @property
    def key(self) -> str:
        return f"{self.method} {self.path}"

    @property
    def source(self) -> str:
        return f"chargebee/models/{self.resource}/operations.py ({self.name})"

    def declares(self, param: str) -> bool:
        """Whether the form/query name ``param`` (index already stripped) is declared."""
        if param in self.params:
            return True
        if any(param.startswith(p + "[") for p in self.free_prefixes):
            return True
        return self.custom_fields and bool(_CF.match(param))


def strip_index(name: str) -> str:
    """``order_line_items[id][0]`` -> ``order_line_items[id]``; ``coupon_ids[0]`` -> ``coupon_ids``."""
    return _INDEX.sub("", name)


# ----------------------------------------------------------------------------- parsing


def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _is_typeddict(cls: ast.ClassDef) -> bool:
    return any(isinstance(b, ast.Name) and b.id == "TypedDict" for b in cls.bases)


def _fields(cls: ast.ClassDef) -> list[tuple[str, ast.expr]]:
    return [
        (stmt.target.id, stmt.annotation)
        for stmt in cls.body
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
    ]


@cache
def _filters() -> dict[str, list[str]]:
    """``{"TimestampFilter": ["after", "before", ...]}`` from ``chargebee/filters/filters.py``."""
    out: dict[str, list[str]] = {}
    for node in ast.walk(_parse(FILTERS)):
        if isinstance(node, ast.ClassDef) and _is_typeddict(node):
            out[node.name] = [name.lower() for name, _ in _fields(node)]
    assert out, f"no filter types in {FILTERS}"
    return out


@cache
def _module_classes() -> dict[str, dict[str, ast.ClassDef]]:
    """``{"Customer": {"CreateParams": <ClassDef>, ...}}`` for every model."""
    out: dict[str, dict[str, ast.ClassDef]] = {}
    for ops in sorted(MODELS.glob("*/operations.py")):
        for top in _parse(ops).body:
            if isinstance(top, ast.ClassDef):
                out[top.name] = {c.name: c for c in top.body if isinstance(c, ast.ClassDef)}
    return out


def _unwrap(ann: ast.expr) -> tuple[ast.expr, bool]:
    """Strip ``Required``/``NotRequired``/``List``; return (inner annotation, is_list)."""
    is_list = False
    while isinstance(ann, ast.Subscript) and isinstance(ann.value, ast.Name):
        if ann.value.id in ("Required", "NotRequired"):
            ann = ann.slice
        elif ann.value.id == "List":
            is_list = True
            ann = ann.slice
        else:
            break
    return ann, is_list


def _dotted(ann: ast.expr) -> str | None:
    if isinstance(ann, ast.Constant) and isinstance(ann.value, str):
        return ann.value
    if isinstance(ann, ast.Attribute) and isinstance(ann.value, ast.Name):
        return f"{ann.value.id}.{ann.attr}"
    if isinstance(ann, ast.Name):
        return ann.id
    return None


def _flatten(
    owner: str, cls: ast.ClassDef, prefix: str | None, names: set[str], free: set[str], depth: int = 0
) -> None:
    assert depth < 8, f"{owner}.{cls.name}: nesting too deep"
    classes = _module_classes()
    for name, ann in _fields(cls):
        form = f"{prefix}[{name}]" if prefix else name
        inner, _ = _unwrap(ann)
        dotted = _dotted(inner)
        if dotted and dotted.startswith("Filters."):
            for op in _filters()[dotted.split(".", 1)[1]]:
                names.add(f"{form}[{op}]")
            continue
        nested = None
        if dotted and "." in dotted:
            mod, _, cname = dotted.partition(".")
            nested = classes.get(mod, {}).get(cname)
        elif dotted:
            nested = classes.get(owner, {}).get(dotted)
        if nested is not None and _is_typeddict(nested):
            _flatten(
                dotted.partition(".")[0] if "." in dotted else owner, nested, form, names, free, depth + 1
            )
            continue
        names.add(form)
        if (
            isinstance(inner, ast.Subscript)
            and isinstance(inner.value, ast.Name)
            and inner.value.id == "Dict"
        ):
            free.add(form)


def _json_keys(fn: ast.FunctionDef) -> dict[str, int]:
    for stmt in fn.body:
        if (
            isinstance(stmt, ast.Assign)
            and isinstance(stmt.targets[0], ast.Name)
            and stmt.targets[0].id == "jsonKeys"
            and isinstance(stmt.value, ast.Dict)
        ):
            return {
                k.value: v.value
                for k, v in zip(stmt.value.keys, stmt.value.values, strict=True)
                if isinstance(k, ast.Constant) and isinstance(v, ast.Constant)
            }
    return {}


def _send_call(fn: ast.FunctionDef) -> ast.Call | None:
    for node in ast.walk(fn):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("send", "send_list_request")
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == "request"
        ):
            return node
    return None


def _uri_template(call: ast.expr) -> str:
    assert isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
    assert call.func.attr == "uri_path", ast.dump(call)
    parts = []
    for arg in call.args:
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            parts.append(arg.value)
        else:
            parts.append("{id}")
    return "/" + "/".join(parts)


def _operations_of(ops_file: Path) -> Iterable[Operation]:
    resource = ops_file.parent.name
    for top in _parse(ops_file).body:
        if not isinstance(top, ast.ClassDef):
            continue
        for fn in top.body:
            if not isinstance(fn, ast.FunctionDef):
                continue
            call = _send_call(fn)
            if call is None:
                continue
            method = call.args[0]
            assert isinstance(method, ast.Constant) and isinstance(method.value, str), ast.dump(call)
            path = _uri_template(call.args[1])
            names: set[str] = set()
            free: set[str] = set()
            for arg in fn.args.args:
                if arg.arg == "params" and arg.annotation is not None:
                    pname = _dotted(arg.annotation)
                    assert pname, f"{ops_file}:{fn.name}: params annotation {ast.dump(arg.annotation)}"
                    cls = _module_classes()[top.name].get(pname)
                    assert cls is not None, f"{ops_file}:{fn.name}: {pname} not found"
                    _flatten(top.name, cls, None, names, free)
            # a dict-valued key listed in jsonKeys is sent as one JSON string under its own name
            json_keys = set(_json_keys(fn))
            free = {f for f in free if f.rsplit("[", 1)[-1].rstrip("]") not in json_keys}
            root = path.strip("/").split("/")[0]
            verb = method.value.upper()
            takes_cf = root in CUSTOM_FIELD_RESOURCES and (
                (verb == "POST" and path in (f"/{root}", f"/{root}/{{id}}"))
                or (verb == "GET" and path == f"/{root}")
            )
            yield Operation(
                verb, path, resource, fn.name, frozenset(names), frozenset(free), custom_fields=takes_cf
            )


@cache
def operations() -> dict[str, Operation]:
    """Every declared operation, keyed ``"POST /customers/{id}/update_billing_info"``."""
    out: dict[str, Operation] = {}
    for ops_file in sorted(MODELS.glob("*/operations.py")):
        for op in _operations_of(ops_file):
            # one operation per method + path; were a path ever declared twice, the params
            # could differ, and this parser would have to say which one the API takes
            assert op.key not in out, f"{op.key} declared by {out[op.key].source} and {op.source}"
            out[op.key] = op
    return out


def find(method: str, path: str) -> Operation | None:
    """The declared operation a concrete ``path`` (``/customers/abc``) is an instance of.

    Literal segments win over ``{id}`` (``/orders/import_order`` is not ``/orders/{id}``).
    """
    segs = path.strip("/").split("/")
    best: tuple[int, Operation] | None = None
    for op in operations().values():
        if op.method != method.upper():
            continue
        tsegs = op.path.strip("/").split("/")
        if len(tsegs) != len(segs):
            continue
        if all(t == "{id}" or t == s for t, s in zip(tsegs, segs, strict=True)):
            score = sum(t != "{id}" for t in tsegs)
            if best is None or score > best[0]:
                best = (score, op)
    return best[1] if best else None
