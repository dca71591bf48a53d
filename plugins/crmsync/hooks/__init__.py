"""HTTP hooks for the two APIs: Chargebee and Customcrm.

Submodules:

* :mod:`~crmsync.hooks.chargebee` / :mod:`~crmsync.hooks.customcrm`: the hooks;
* :mod:`~crmsync.hooks.errors`: typed errors the engine dispatches on;
* :mod:`~crmsync.hooks.retry`: the shared retry predicate and tenacity policy;
* :mod:`~crmsync.hooks.budget`: the per-site request budget.

The hook classes are exported lazily: importing ``crmsync.hooks.errors`` (e.g. from
the pure engine or from tests) must not import Airflow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from crmsync.hooks.chargebee import ChargebeeHook
    from crmsync.hooks.customcrm import CustomcrmHook

__all__ = ["ChargebeeHook", "CustomcrmHook"]


def __getattr__(name: str) -> Any:
    if name == "ChargebeeHook":
        from crmsync.hooks.chargebee import ChargebeeHook

        return ChargebeeHook
    if name == "CustomcrmHook":
        from crmsync.hooks.customcrm import CustomcrmHook

        return CustomcrmHook
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
