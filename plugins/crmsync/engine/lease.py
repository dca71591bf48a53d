"""The terms of a rate-budget lease, named once for the side that asks and the side that grants.

:class:`crmsync.hooks.shared_budget.SharedRateBudget` asks for leases through its
``LeaseSource`` protocol and :class:`crmsync.store.rate_budget.RateBudgetStore` grants
them. Hooks may not import the store (they stay free of store access), so the request's
vocabulary lives here, pure, where both may import it.
"""

from __future__ import annotations

from typing import NotRequired, TypedDict


class LeaseTerms(TypedDict):
    """What a process asks of a site's shared request window.

    ``want``: tokens it would like; ``need``: the fewest it can use (``1 <= need <= want``);
    ``cap``: tokens allowed in any ``span`` seconds; ``span``: the sliding window (the
    server's window plus lease time plus latency slack); ``bucket_seconds``: resolution of
    the shared counts; ``give_back``: ``(bucket, n)``, ``n`` unused tokens of an earlier
    lease in row ``bucket``, returned before asking.
    """

    want: int
    need: int
    cap: int
    span: float
    bucket_seconds: float
    give_back: NotRequired[tuple[int, int] | None]
