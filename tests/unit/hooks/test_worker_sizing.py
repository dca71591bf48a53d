"""The Chargebee writer pool is sized to the rate budget unless the connection sets it."""

from __future__ import annotations

from typing import Any

import pytest
from crmsync.hooks.chargebee import ChargebeeHook


@pytest.mark.parametrize(
    ("extra", "workers"),
    [
        ({}, 4),  # 150/min (the default) at 0.5 s per request needs 2: the default 4 stays
        ({"rate_limit_per_minute": 1000}, 9),
        ({"rate_limit_per_minute": 3500}, 30),
        ({"rate_limit_per_minute": 100_000}, 32),  # capped
        ({"rate_limit_per_minute": 0}, 4),  # no limit: nothing to fill
        ({"rate_limit_per_minute": 3500, "max_workers": 6}, 6),  # explicit wins
        ({"rate_limit_per_minute": 1000, "max_workers": None}, 9),  # the form's empty field
        ({"rate_limit_per_minute": 1000, "extra__chargebee__max_workers": ""}, 9),
    ],
)
def test_chargebee_workers_follow_the_budget(make_conn: Any, extra: dict[str, Any], workers: int) -> None:
    hook = ChargebeeHook(make_conn("chargebee", host="acme-test", password="test_key", extra=extra))
    assert hook.max_workers == workers
