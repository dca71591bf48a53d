"""The order flows run in, from the mappings' references (``depends_on``).

A flow whose fields reference another flow's links (``ref: contact_customer``) must run
after that flow has updated its links, or its records wait a run for nothing (and, worse,
a customer is created before its business entity is linked). The mappings already say
this; every place that runs flows in sequence (``make run``, the tests, ``make chaos``)
asks here instead of keeping its own list.
"""

from __future__ import annotations

import heapq
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from crmsync.mapping.model import MappingError, load_mappings

#: ``include/mappings`` of this checkout (``plugins/crmsync/mapping/order.py`` → repo root).
_REPO_MAPPINGS = Path(__file__).resolve().parents[3] / "include" / "mappings"


def mappings_dir() -> Path:
    """The mapping folder the DAG file reads: ``CRMSYNC_MAPPINGS_DIR`` or ``include/mappings``."""
    return Path(os.environ.get("CRMSYNC_MAPPINGS_DIR") or _REPO_MAPPINGS)


class Flow(Protocol):
    """What ordering needs of a mapping (a :class:`~crmsync.mapping.model.Mapping` is one)."""

    @property
    def flow(self) -> str: ...

    @property
    def depends_on(self) -> list[str]: ...


def dependency_order(mappings: Iterable[Flow]) -> list[str]:
    """Flow names, each after every flow it depends on; ties by name, so the order is stable.

    A reference to a flow that is not among ``mappings`` does not order anything (that
    flow is run elsewhere or not at all). A cycle is a mapping error naming its flows.
    """
    by_flow = {m.flow: m for m in mappings}
    waiting_on = {f: {d for d in m.depends_on if d in by_flow} for f, m in by_flow.items()}
    ready = [f for f, deps in waiting_on.items() if not deps]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        flow = heapq.heappop(ready)
        order.append(flow)
        for other, deps in waiting_on.items():
            if flow in deps:
                deps.discard(flow)
                if not deps:
                    heapq.heappush(ready, other)
    if len(order) < len(by_flow):
        stuck = sorted(set(by_flow) - set(order))
        raise MappingError(f"flows reference each other in a cycle (ref / depends_on): {', '.join(stuck)}")
    return order


def flow_order(folder: str | Path | None = None) -> list[str]:
    """:func:`dependency_order` of the mapping files in ``folder`` (default :func:`mappings_dir`)."""
    return dependency_order(load_mappings(folder or mappings_dir()))
