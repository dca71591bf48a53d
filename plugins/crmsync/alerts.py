"""Alerts through Airflow's notifiers: a failed run, a circuit-breaker stop, quarantine above a
threshold, the Chargebee site blocked (issue 14, item 5).

Configured per deployment by ONE Airflow connection, ``crmsync_alerts`` (Admin →
Connections, ``airflow connections add``, an ``AIRFLOW_CONN_CRMSYNC_ALERTS`` variable or a
secrets backend). Without it nothing is sent and nothing fails: alerts are opt-in.

* type **http** / **https**: a webhook. Host = the full URL (``https://hooks.example.com/T0/B0``);
  the alert is POSTed as JSON (``text`` for chat webhooks, plus ``flow``, ``run_id``,
  ``event``, ``what``, ``fix``). Login/password, if set, are sent as basic auth; extra
  ``{"headers": {...}}`` adds headers.
* type **smtp** (or **email**): a mail. Host/port of the SMTP server, login/password if it
  needs them; extra ``{"to": ["ops@example.com"], "from_email": "crmsync@example.com",
  "starttls": true}`` (``"ssl": true`` for SMTPS).

The extra also carries the quarantine threshold: ``quarantine_threshold`` (every flow,
default :data:`DEFAULT_QUARANTINE_THRESHOLD`) and ``quarantine_thresholds`` (``{flow: n}``,
per flow). A run whose flow holds more records than that in quarantine alerts, every run
until it is back under the threshold.

Who sends what: the DAG's ``on_failure_callback`` (:class:`CrmsyncNotifier`, wired in
:mod:`crmsync.flows.factory`) a failed run, with the failures the tasks recorded on the run
row (task, cause, fix); the task that sees them the others (circuit breaker:
:mod:`crmsync.flows.breaker`, site blocked: :mod:`crmsync.flows.failures`, quarantine:
:mod:`crmsync.flows.links`, writes refused: :mod:`crmsync.flows.upsert`).

Never a secret in a log line or an alert: the webhook URL (it often holds a token), the
password and the server's answers are left out of log lines; an alert carries the run
summary's causes, which name connections and hosts only. Delivery failing is logged as a
warning and never fails a task or a callback.
"""

from __future__ import annotations

import json
import logging
import smtplib
from dataclasses import asdict, dataclass
from email.message import EmailMessage
from enum import StrEnum
from typing import Any

from airflow.sdk.bases.notifier import BaseNotifier

log = logging.getLogger("crmsync.alerts")

#: the connection that says where alerts go (no connection: no alert)
ALERT_CONN_ID = "crmsync_alerts"
#: records held in quarantine (all runs) above which a flow's run alerts, unless configured
DEFAULT_QUARANTINE_THRESHOLD = 50
#: seconds a webhook or SMTP server has to answer
SEND_TIMEOUT = 10.0


class Event(StrEnum):
    FAILED_RUN = "failed_run"
    CIRCUIT_BREAKER = "circuit_breaker"
    QUARANTINE = "quarantine_above_threshold"
    SITE_BLOCKED = "chargebee_site_blocked"


_TITLES = {
    Event.FAILED_RUN: "run failed",
    Event.CIRCUIT_BREAKER: "circuit breaker stopped the run",
    Event.QUARANTINE: "quarantine above its threshold",
    Event.SITE_BLOCKED: "Chargebee site blocked (rate limit)",
}


@dataclass(frozen=True)
class Alert:
    """What one alert says: which flow and run, what happened, and what a person does."""

    flow: str
    run_id: str
    event: Event
    what: str
    fix: str

    @property
    def subject(self) -> str:
        return f"[crmsync] {self.flow}: {_TITLES[self.event]}"

    def text(self) -> str:
        return f"{self.subject}\nrun: {self.run_id}\nwhat happened: {self.what}\nfix: {self.fix}"

    def payload(self) -> dict[str, str]:
        return {**asdict(self), "event": self.event.value, "text": self.text()}


class CrmsyncNotifier(BaseNotifier):
    """Sends :class:`Alert` s to the ``crmsync_alerts`` connection.

    As a DAG's ``on_failure_callback`` (``notify``) it alerts a failed run with the failures
    the run row holds; tasks call :meth:`send` for the other events.
    """

    template_fields = ()

    def __init__(self, conn_id: str = ALERT_CONN_ID, store_conn_id: str = "crmsync_store") -> None:
        super().__init__()
        self.conn_id = conn_id
        self.store_conn_id = store_conn_id

    def render_template_fields(self, context: Any, jinja_env: Any = None) -> None:
        """Nothing to render (no template field). Skipping it also keeps the callback working
        under ``dag.test()``, whose context holds a SerializedDAG without a template env."""
        if self.template_fields:
            super().render_template_fields(context, jinja_env)

    def notify(self, context: Any) -> None:
        """The DAG run failed: say which task, why and the fix (from the run row's ``failures``)."""
        dag = context.get("dag")
        dag_run = context.get("dag_run")
        flow = str(getattr(dag, "dag_id", None) or getattr(dag_run, "dag_id", "") or "?")
        run_id = str(context.get("run_id") or getattr(dag_run, "run_id", "") or "?")
        what, fix = _failures_of(self.store_conn_id, flow, run_id, str(context.get("reason") or ""))
        self.send(Alert(flow, run_id, Event.FAILED_RUN, what, fix))

    def send(self, alert: Alert) -> bool:
        """Deliver ``alert``; False when nothing was sent (no connection, or delivery failed)."""
        conn = _connection(self.conn_id)
        if conn is None:
            return False
        kind = str(conn.conn_type or "").lower()
        try:
            if kind in ("http", "https"):
                _post(conn, alert)
            elif kind in ("smtp", "email"):
                _mail(conn, alert)
            else:
                log.warning(
                    "alert not sent: connection %r has type %r (use http or smtp)", self.conn_id, kind
                )
                return False
        except Exception as exc:  # never fail the task or the callback for an alert
            log.warning("alert not sent through connection %r: %s", self.conn_id, _safe_error(exc))
            return False
        log.info("alert sent through connection %r (%s): %s", self.conn_id, kind, alert.subject)
        return True


def send_alert(flow: str, run_id: str, event: Event, what: str, fix: str) -> bool:
    """An alert from a task (circuit breaker, quarantine, site blocked); never raises."""
    try:
        return bool(CrmsyncNotifier().send(Alert(flow, run_id, event, what, fix)))
    except Exception as exc:
        log.warning("alert not sent: %s", _safe_error(exc))
        return False


# -- the events tasks see -----------------------------------------------------------------


def quarantine_threshold(flow: str, extra: dict[str, Any]) -> int:
    """The flow's threshold from the alert connection's extra (per flow, then for all)."""
    per_flow = extra.get("quarantine_thresholds") or {}
    value = per_flow.get(flow) if isinstance(per_flow, dict) else None
    if value is None:
        value = extra.get("quarantine_threshold", DEFAULT_QUARANTINE_THRESHOLD)
    try:
        return int(value)
    except (TypeError, ValueError):
        return DEFAULT_QUARANTINE_THRESHOLD


def check_quarantine(flow: str, run_id: str, held: int) -> bool:
    """Alert when ``held`` (records in quarantine for the flow, all runs) is above its threshold."""
    conn = _connection(ALERT_CONN_ID)
    if conn is None:
        return False
    limit = quarantine_threshold(flow, dict(conn.extra_dejson or {}))
    if held <= limit:
        return False
    return send_alert(
        flow,
        run_id,
        Event.QUARANTINE,
        f"{held} records are held in quarantine (threshold {limit})",
        "see each record's reason and fix in table crmsync_quarantine (the Sync page lists them); "
        "correct the data on the side named, and the record is retried when it changes",
    )


def writes_refused(flow: str, run_id: str, refused: int) -> bool:
    """``refused`` Chargebee writes of a run were refused for the rate limit after every
    retry (counted from each write's ``Outcome.rate_limited``, never from message text):
    the site is blocked. No alert for none."""
    if refused <= 0:
        return False
    return site_blocked(
        flow, run_id, f"{refused} Chargebee writes were refused with HTTP 429 after every retry"
    )


def site_blocked(flow: str, run_id: str, what: str) -> bool:
    """The Chargebee site kept answering 429 after every retry: the site is blocked."""
    return send_alert(
        flow,
        run_id,
        Event.SITE_BLOCKED,
        what,
        "Chargebee blocks a site that exceeds its API rate limit: lower rate_limit_per_minute of "
        "connection chargebee_default (150 on test sites and Starter), check that no other client "
        "uses the same site heavily, then clear the failed task or wait for the next run",
    )


# -- helpers -------------------------------------------------------------------------------


def _connection(conn_id: str) -> Any:
    """The alert connection, or None when none is configured (then nothing is sent)."""
    from airflow.sdk.bases.hook import BaseHook

    try:
        return BaseHook.get_connection(conn_id)
    except Exception as exc:  # AirflowNotFoundException: not configured, alerts are off
        if type(exc).__name__ != "AirflowNotFoundException":
            log.warning("alert connection %r could not be read: %s", conn_id, type(exc).__name__)
        return None


def _failures_of(store_conn_id: str, flow: str, run_id: str, reason: str) -> tuple[str, str]:
    """What failed and the fix, from the failures the tasks recorded on the run row."""
    failures: list[dict[str, str]] = []
    try:
        from crmsync.store.engine import store_engine
        from crmsync.store.runs import RunStore

        summary = RunStore(store_engine(store_conn_id), flow).read_summary(run_id)
        failures = list((summary or {}).get("failures", []))
    except Exception as exc:
        log.warning("could not read the failures of run %s: %s", run_id, type(exc).__name__)
    if not failures:
        what = f"the run failed ({reason})" if reason else "the run failed"
        return what, "open the run in the Airflow UI: the failed task's log says why"
    what = "; ".join(f"{f.get('task')}: {f.get('cause')}" for f in failures)
    fix = "; ".join(f"{f.get('task')}: {f.get('fix')}" for f in failures)
    return what, fix


def _webhook_url(conn: Any) -> str:
    host = str(conn.host or "")
    if "://" in host:
        return host
    scheme = "https" if str(conn.conn_type).lower() == "https" else "http"
    port = f":{conn.port}" if conn.port else ""
    path = f"/{str(conn.schema).lstrip('/')}" if conn.schema else ""
    return f"{scheme}://{host}{port}{path}"


def _post(conn: Any, alert: Alert) -> None:
    """POST the alert as JSON. Through urllib, not requests: urllib3 logs each request's path
    at DEBUG, and a webhook's path often is its secret."""
    import base64
    import urllib.error
    import urllib.request

    extra = dict(conn.extra_dejson or {})
    headers = {"Content-Type": "application/json", **dict(extra.get("headers") or {})}
    if conn.login:
        token = base64.b64encode(f"{conn.login}:{conn.password or ''}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    url = _webhook_url(conn)
    if not url.lower().startswith(("http://", "https://")):
        raise _DeliveryError("the webhook URL (Host) must start with http:// or https://")
    body = json.dumps(alert.payload()).encode()
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=SEND_TIMEOUT) as response:  # noqa: S310
            response.read()
    except urllib.error.HTTPError as exc:
        raise _DeliveryError(f"the webhook answered HTTP {exc.code}") from None


def _recipients(extra: dict[str, Any]) -> list[str]:
    to = extra.get("to") or []
    if isinstance(to, str):
        to = [a.strip() for a in to.split(",")]
    return [str(a) for a in to if str(a).strip()]


def _mail(conn: Any, alert: Alert) -> None:
    extra = dict(conn.extra_dejson or {})
    to = _recipients(extra)
    if not to:
        raise _DeliveryError('no recipient: set {"to": ["ops@example.com"]} in the extra')
    msg = EmailMessage()
    msg["Subject"] = alert.subject
    msg["From"] = str(extra.get("from_email") or conn.login or "crmsync@localhost")
    msg["To"] = ", ".join(to)
    msg.set_content(alert.text())
    smtp_class = smtplib.SMTP_SSL if extra.get("ssl") else smtplib.SMTP
    with smtp_class(str(conn.host or "localhost"), int(conn.port or 25), timeout=SEND_TIMEOUT) as smtp:
        if extra.get("starttls"):
            smtp.starttls()
        if conn.login:
            smtp.login(str(conn.login), str(conn.password or ""))
        smtp.send_message(msg)


class _DeliveryError(Exception):
    """A delivery failure whose message is ours (safe to log)."""


def _safe_error(exc: BaseException) -> str:
    """An error for the log without what may be secret (a URL with a token, a server's echo)."""
    if isinstance(exc, _DeliveryError):
        return str(exc)
    code = getattr(exc, "smtp_code", None)
    return f"{type(exc).__name__}" + (f" (SMTP {code})" if code else "")
