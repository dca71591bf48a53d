"""Transforms keep a value they cannot convert as read, so validation reports it with the
record (found by tests/chaos/test_hostile_input_order_order.py)."""

from __future__ import annotations

import math

import pytest
from crmsync.mapping.transforms import check_format, check_transform, integer


@pytest.mark.parametrize("raw", [12.5, math.nan, math.inf, -math.inf, "abc", "12,50", "1e3"])
def test_integer_never_cuts_or_crashes_on_what_is_no_whole_number(raw: object) -> None:
    value = integer(raw)
    assert isinstance(value, str)  # before: 12.5 became 12 silently, inf raised OverflowError
    assert check_transform("int", value) and "not a whole number" in (check_transform("int", value) or "")


@pytest.mark.parametrize("raw, want", [(12.0, 12), ("42", 42), (-3, -3), (10**20, 10**20), (True, 1)])
def test_integer_keeps_whole_numbers(raw: object, want: int) -> None:
    assert integer(raw) == want and check_transform("int", want) is None


@pytest.mark.parametrize(
    "transform, value, ok",
    [
        ("date", "2025-03-01", True),
        ("date", "soon", False),
        ("date", "2025-13-45", False),
        ("date", "31.12.2025", False),
        ("datetime", "2025-03-01T12:00:00+00:00", True),
        ("datetime", "tomorrow", False),
        ("strip", "anything", True),
        ("date", None, True),
    ],
)
def test_check_transform_names_dates_that_are_no_dates(transform: str, value: object, ok: bool) -> None:
    assert (check_transform(transform, value) is None) is ok  # type: ignore[arg-type]


@pytest.mark.parametrize("value", ["XYZ", "ABC", "EURO", "€", "EU R", "12"])
def test_currency_code_format_names_codes_that_are_no_iso_4217_currency(value: str) -> None:
    why = check_format("currency_code", value)
    assert why and "ISO 4217" in why and repr(value) in why  # before: only the shape was checked


@pytest.mark.parametrize("value", ["EUR", "NOK", "USD", "SEK", "GBP", "JPY", None])
def test_currency_code_format_accepts_iso_4217_currencies(value: str | None) -> None:
    assert check_format("currency_code", value) is None
