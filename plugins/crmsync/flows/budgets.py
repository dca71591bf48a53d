"""Which rate budget a task's hooks share: the wiring between the hooks and the link store.

A hook takes its limiter from a ``budget_factory`` it is given
(:mod:`crmsync.hooks.budget`); it never opens the link store. The task that builds the
hooks decides, here: :func:`task_budget_factory` returns a factory whose limiters lease
tokens from the link store's ``crmsync_rate_budget`` table
(:class:`~crmsync.hooks.shared_budget.SharedRateBudget` over
:class:`~crmsync.store.rate_budget.RateBudgetStore`), so every task of every flow on
every worker shares one budget per site. Scripts and benchmarks outside a task opt a
whole process in with :func:`use_shared_budget`.

This module sits in ``flows/`` because it joins two lower layers (hooks and store);
neither imports the other.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from sqlalchemy.engine import Engine

from crmsync.hooks.budget import BudgetFactory, budget_factory, local_factory, set_budget_factory
from crmsync.hooks.shared_budget import SharedBudgetFactory, SharedBudgetSettings
from crmsync.store.engine import store_engine
from crmsync.store.rate_budget import RateBudgetStore

log = logging.getLogger("crmsync.budget")

_shared_lock = threading.Lock()  # held while connecting to a store
_shared_factories: dict[object, BudgetFactory] = {}
_task_factories: dict[str, BudgetFactory | None] = {}

#: The link store's connection, where the shared budget lives.
DEFAULT_STORE_CONN_ID = "crmsync_store"
_OFF = frozenset({"off", "false", "0", "no", "local"})


def _config(key: str) -> str | None:
    """``[crmsync] <key>`` from Airflow's config (``AIRFLOW__CRMSYNC__<KEY>`` works too)."""
    try:
        from airflow.configuration import conf
    except ImportError:  # pragma: no cover - Airflow is a dependency
        return None
    value = conf.get("crmsync", key, fallback=None)
    return None if value in (None, "") else str(value)


def _shared_factory(engine: Engine, settings: dict[str, Any]) -> BudgetFactory:
    """One shared factory per (database, settings) and process, so its limiters are reused."""
    if "margin" not in settings:
        margin = _config("rate_limit_margin")
        if margin is not None:
            settings = {**settings, "margin": float(margin)}
    options = SharedBudgetSettings(**settings)
    identity = (engine.url.render_as_string(hide_password=True), options)
    with _shared_lock:
        factory = _shared_factories.get(identity)
        if factory is None:
            factory = SharedBudgetFactory(RateBudgetStore(engine), options, identity)
            _shared_factories[identity] = factory
            log.info(
                "API request budgets are shared by every worker through %s (margin %.0f%%, window %gs)",
                identity[0],
                options.margin * 100,
                options.window_seconds,
            )
        return factory


def _store_factory(conn_id: str) -> BudgetFactory | None:
    """The shared factory through the link store behind ``conn_id``, or None (with a
    warning) when ``[crmsync] shared_rate_budget = off`` or the store is not usable."""
    if (_config("shared_rate_budget") or "auto").strip().lower() in _OFF:
        return None
    with _shared_lock:
        if conn_id in _task_factories:
            return _task_factories[conn_id]
    factory: BudgetFactory | None
    try:
        factory = _shared_factory(store_engine(conn_id), {})
    except Exception as exc:
        log.warning(
            "no shared request budget (connection %r: %s); this process budgets on its own, so "
            "concurrent tasks may together exceed an API's rate limit",
            conn_id,
            exc,
        )
        factory = None
    with _shared_lock:
        _task_factories[conn_id] = factory
    return factory


def task_budget_factory(conn_id: str = DEFAULT_STORE_CONN_ID) -> BudgetFactory:
    """The factory a task injects into the hooks it builds (``budget_factory=``).

    The process's explicit factory if one was set (:func:`use_shared_budget`,
    :func:`~crmsync.hooks.budget.set_budget_factory`); else one shared through the link
    store behind ``conn_id``, so every task of every flow on every worker shares one budget per site; off with
    ``[crmsync] shared_rate_budget = off``, and a missing or unsupported store connection
    keeps the process-local budget, with a warning. The task opens the store here: a hook
    never does.
    """
    explicit = budget_factory()
    if explicit is not local_factory:
        return explicit
    return _store_factory(conn_id) or local_factory


def use_shared_budget(store: Engine | str = DEFAULT_STORE_CONN_ID, **settings: Any) -> None:
    """Share every hook's site budget with all other processes, inside a task or not.

    Tasks do this on their own (see :func:`task_budget_factory`); call it in other processes
    that talk to the same sites (scripts, benchmarks, a custom worker), or to change
    the timing (tests use a 5 s window).

    :param store: the link store's engine, or the id of its Airflow connection; the
        budget lives in its ``crmsync_rate_budget`` table.
    :param settings: SharedBudgetSettings fields
        (``window_seconds``, ``margin``, ...). ``margin`` defaults to the Airflow option
        ``[crmsync] rate_limit_margin``, else 5 %.

    Idempotent: the same store and settings give the same limiters. Undo with
    ``set_budget_factory(None)``.
    """
    engine = store_engine(store) if isinstance(store, str) else store
    set_budget_factory(_shared_factory(engine, dict(settings)))


def forget_task_factories() -> None:
    """Forget the per-connection factories (tests that change the store or the config)."""
    with _shared_lock:
        _task_factories.clear()


__all__ = ["DEFAULT_STORE_CONN_ID", "forget_task_factories", "task_budget_factory", "use_shared_budget"]
