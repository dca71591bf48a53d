"""How a task of a flow fails, and what the run row keeps of it.

:func:`fail` stops a task without retries (a person has to act first) and carries the fix;
:func:`record_failure` puts the failing task, its cause and fix on the run row's summary
(``failures``), where update_links and the run summary read them back
(:func:`recorded_failures`); :func:`alert_if_blocked` alerts when Chargebee's 429 stopped
a task after every retry.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from crmsync.hooks.chargebee import ChargebeeHook
    from crmsync.hooks.customcrm import CustomcrmHook
    from crmsync.mapping.model import Mapping as FlowMapping
    from crmsync.store.repository import Repository, RunRow

log = logging.getLogger("crmsync")


def fail(message: str, fix: str | None = None) -> None:
    """Fail the task without retries: a person has to act first.

    ``fix`` (what that person does) goes with the cause into the run summary's
    ``failures`` (see :func:`record_failure`)."""
    from airflow.sdk.exceptions import AirflowFailException

    exc = AirflowFailException(message)
    exc.crmsync_fix = fix  # type: ignore[attr-defined]
    raise exc


def recorded_failures(run_row: RunRow | None) -> list[dict[str, str]]:
    """The failures earlier tasks of the run recorded on its row (see :func:`record_failure`)."""
    if run_row is None or not run_row["summary"]:
        return []
    try:
        return list(json.loads(run_row["summary"]).get("failures", []))
    except (ValueError, AttributeError):
        return []


def alert_if_blocked(mapping: FlowMapping, run_id: str, task: str, exc: Exception) -> None:
    """A task stopped by Chargebee's 429 after every retry: the site is blocked (an alert)."""
    from crmsync.hooks.errors import RateLimited

    if isinstance(exc, RateLimited) and exc.system == "chargebee":
        from crmsync.alerts import site_blocked

        site_blocked(mapping.flow, run_id, f"{task} stopped: {exc}")


def record_failure(
    mapping: FlowMapping,
    repo: Repository,
    run_id: str,
    params: dict[str, Any],
    task: str,
    exc: Exception,
    hook: ChargebeeHook | CustomcrmHook | None,
) -> None:
    """Put the failing task, the cause and the fix on the run row's summary (``failures``),
    where the run summary (``make run``, the JSON line) shows them. A skip is no failure;
    recording never hides the task's own error."""
    from airflow.sdk.exceptions import AirflowSkipException

    from crmsync.flows.summary import failure_of, with_failure

    if isinstance(exc, AirflowSkipException):
        return
    try:
        conn_id = base_url = None
        if hook is not None:
            conn_id = str(getattr(hook, "http_conn_id", "") or "") or None
            # the base URL only once the hook loaded its connection (never a secret: host only)
            base_url = getattr(hook, "base_url", None) if getattr(hook, "_ready", False) else None
            if base_url is None and conn_id:
                conn = type(hook).get_connection(conn_id)
                host = str(getattr(conn, "host", "") or "")
                port = getattr(conn, "port", None)
                base_url = (host if "//" in host else f"http://{host}") + (f":{port}" if port else "")
        failure = failure_of(
            task, exc, conn_id=conn_id, base_url=base_url, fix=getattr(exc, "crmsync_fix", None)
        )
        repo.begin_run(run_id, params)
        row = repo.get_run(run_id)
        stored = json.loads(row["summary"]) if row is not None and row["summary"] else None
        base = stored or {"flow": mapping.flow, "run_id": run_id}
        repo.set_run(run_id, summary=json.dumps(with_failure(base, failure)))
        log.error("%s failed: %s\n  fix: %s", task, failure["cause"], failure["fix"])
    except Exception:  # the task's own error is what matters
        log.warning("could not record the failure of %s on the run row", task, exc_info=True)
