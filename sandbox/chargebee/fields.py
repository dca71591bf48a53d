"""Declarative parameter validation, with Chargebee's limits and error shapes.

Each writable attribute gets a :class:`Field` that turns the raw form string into the
stored value or raises a 400 naming the parameter (``billing_address[zip]``). An empty
string clears an optional attribute (the official SDK sends ``None`` as ``""``), which
is why ``parse`` may return ``None``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from sandbox.chargebee.countries import ISO_COUNTRIES
from sandbox.chargebee.errors import not_allowed, required, wrong_value
from sandbox.chargebee.forms import flat_keys, parse_json_value

EMAIL_RE = re.compile(
    r"^[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}$"
)
ID_RE = re.compile(r"^[A-Za-z0-9_\-.@~]+$")


class Field:
    """Base: subclasses implement :meth:`convert` for a non-empty raw value."""

    def parse(self, raw: Any, param: str) -> Any:
        if raw is None or (isinstance(raw, str) and raw == ""):
            return None
        return self.convert(raw, param)

    def convert(self, raw: Any, param: str) -> Any:
        raise NotImplementedError


class Str(Field):
    def __init__(self, max_len: int, pattern: re.Pattern[str] | None = None, reason: str = "") -> None:
        self.max_len = max_len
        self.pattern = pattern
        self.reason = reason

    def convert(self, raw: Any, param: str) -> Any:
        if not isinstance(raw, str):
            raise wrong_value(param, "must be a string")
        if len(raw) > self.max_len:
            raise wrong_value(param, f"cannot be more than {self.max_len} characters")
        if self.pattern is not None and not self.pattern.match(raw):
            raise wrong_value(param, self.reason or "invalid value")
        return raw


class Email(Str):
    def __init__(self, max_len: int = 70) -> None:
        super().__init__(max_len)

    def convert(self, raw: Any, param: str) -> Any:
        value = super().convert(raw, param)
        if not EMAIL_RE.match(value):
            raise wrong_value(param, "invalid email")
        return value


class Id(Str):
    def __init__(self, max_len: int = 50) -> None:
        super().__init__(
            max_len,
            ID_RE,
            "can only contain letters, numbers and the special characters _ - . @ ~",
        )


class Enum(Field):
    def __init__(self, *values: str) -> None:
        self.values = values

    def convert(self, raw: Any, param: str) -> Any:
        if raw not in self.values:
            raise wrong_value(param, f"invalid value {raw!r}; allowed values: {', '.join(self.values)}")
        return raw


class Bool(Field):
    def convert(self, raw: Any, param: str) -> Any:
        if isinstance(raw, bool):
            return raw
        value = str(raw).strip().lower()
        if value == "true":
            return True
        if value == "false":
            return False
        raise wrong_value(param, "must be true or false")


class Int(Field):
    def __init__(self, minimum: int | None = None, maximum: int | None = None) -> None:
        self.minimum = minimum
        self.maximum = maximum

    def convert(self, raw: Any, param: str) -> Any:
        try:
            value = int(str(raw).strip())
        except ValueError:
            raise wrong_value(param, "must be an integer") from None
        if self.minimum is not None and value < self.minimum:
            raise wrong_value(param, f"cannot be less than {self.minimum}")
        if self.maximum is not None and value > self.maximum:
            raise wrong_value(param, f"cannot be more than {self.maximum}")
        return value


class Timestamp(Int):
    def __init__(self) -> None:
        super().__init__(0, 32503680000)


class Number(Field):
    def convert(self, raw: Any, param: str) -> Any:
        try:
            return float(str(raw).strip())
        except ValueError:
            raise wrong_value(param, "must be a number") from None


class JsonObject(Field):
    """A JSON object sent as a string (``meta_data={"k":"v"}``)."""

    def __init__(self, max_len: int = 65000, kind: type = dict) -> None:
        self.max_len = max_len
        self.kind = kind

    def convert(self, raw: Any, param: str) -> Any:
        if isinstance(raw, str) and len(raw) > self.max_len:
            raise wrong_value(param, f"cannot be more than {self.max_len} characters")
        value = parse_json_value(raw, param)
        if not isinstance(value, self.kind):
            raise wrong_value(param, f"must be a JSON {'object' if self.kind is dict else 'array'}")
        return value


class Country(Field):
    def convert(self, raw: Any, param: str) -> Any:
        if not isinstance(raw, str) or len(raw) > 50:
            raise wrong_value(param, "cannot be more than 50 characters")
        if raw.upper() not in ISO_COUNTRIES or len(raw) != 2:
            raise wrong_value(param, f"invalid country code {raw!r}; expected an ISO 3166-1 alpha-2 code")
        return raw.upper()


class Currency(Field):
    def convert(self, raw: Any, param: str) -> Any:
        if not isinstance(raw, str) or not re.fullmatch(r"[A-Za-z]{3}", raw):
            raise wrong_value(param, "invalid currency code; expected an ISO 4217 code")
        return raw.upper()


class Passthrough(Field):
    """Accepted and ignored (payment details etc. the sandbox does not model)."""

    def parse(self, raw: Any, param: str) -> Any:
        return raw


ADDRESS_FIELDS: dict[str, Field] = {
    "first_name": Str(150),
    "last_name": Str(150),
    "email": Email(70),
    "company": Str(250),
    "phone": Str(50),
    "line1": Str(150),
    "line2": Str(150),
    "line3": Str(150),
    "city": Str(50),
    "state_code": Str(50),
    "state": Str(50),
    "zip": Str(20),
    "country": Country(),
    "validation_status": Enum("not_validated", "valid", "partially_valid", "invalid"),
}


def check_allowed(
    form: Mapping[str, Any],
    allowed: Iterable[str],
    *,
    nested: Mapping[str, Iterable[str]] | None = None,
    custom_fields: bool = False,
    hints: Mapping[str, str] | None = None,
) -> None:
    """Reject parameters the operation does not accept (400 ``param_not_allowed``).

    ``nested`` restricts the sub-keys of object parameters (``billing_address``);
    ``custom_fields`` admits Chargebee custom fields (``cf_*``).
    """
    allowed_set = set(allowed)
    hints = hints or {}
    for key, value in form.items():
        if key in allowed_set or (custom_fields and key.startswith("cf_")):
            if nested and key in nested and isinstance(value, dict):
                sub_allowed = set(nested[key])
                for sub in value:
                    if sub not in sub_allowed:
                        raise not_allowed(f"{key}[{sub}]")
            continue
        name = flat_keys(value, key)[0] if isinstance(value, dict | list) else key
        raise not_allowed(name, hints.get(key, ""))


def apply_fields(
    target: dict[str, Any],
    form: Mapping[str, Any],
    spec: Mapping[str, Field],
    *,
    prefix: str = "",
    store: bool = True,
) -> dict[str, Any]:
    """Validate every ``form`` key present in ``spec`` and write it into ``target``.

    ``None`` (empty input) removes the attribute, as Chargebee omits unset attributes.
    Returns the parsed values.
    """
    parsed: dict[str, Any] = {}
    for key, raw in form.items():
        field = spec.get(key)
        if field is None:
            continue
        param = f"{prefix}[{key}]" if prefix else key
        if isinstance(raw, dict | list) and not isinstance(field, JsonObject | Passthrough):
            raise wrong_value(param, "must be a single value")
        value = field.parse(raw, param)
        parsed[key] = value
        if not store or isinstance(field, Passthrough):
            continue
        if value is None:
            target.pop(key, None)
        else:
            target[key] = value
    return parsed


def require(form: Mapping[str, Any], *names: str) -> None:
    for name in names:
        value = form.get(name)
        if value is None or (isinstance(value, str) and value.strip() == ""):
            raise required(name)
