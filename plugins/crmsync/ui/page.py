"""The Sync page's HTML (server-rendered, no JavaScript, no build step) and its JSON twin.

Every value from the link store is escaped: records come from two systems people type
into (a contact's name can be ``<script>``). Relative URLs only, so the page works
under whatever prefix the api-server mounts it and inside the UI's frame.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from html import escape
from typing import Any
from urllib.parse import urlencode

from crmsync.store.operator import (
    APPROVAL_KIND,
    APPROVAL_KINDS,
    CONFLICT_KINDS,
    DELETE_KINDS,
    WAITING_KINDS,
    Hold,
)

__all__ = ["CONFLICT_KINDS", "DELETE_KINDS", "FlowView", "action_message", "as_json", "render"]

SIDE_NAMES = {"customcrm": "Customcrm", "chargebee": "Chargebee"}

CSS = """
body{font-family:system-ui,sans-serif;margin:1rem 1.5rem;color:#1b1f24;font-size:14px}
h1{font-size:1.4rem;margin:.2rem 0 .8rem}h2{font-size:1.1rem;margin:1.4rem 0 .4rem}
table{border-collapse:collapse;margin:.3rem 0;width:100%}
th,td{border-bottom:1px solid #d8dee4;padding:.3rem .5rem;text-align:left;vertical-align:top}
th{background:#f3f5f7;font-weight:600}td.n{text-align:right}
nav a{margin-right:.8rem}nav a.on{font-weight:700;text-decoration:none;color:#1b1f24}
.msg{background:#e6f4ea;border:1px solid #9bd3ae;padding:.4rem .7rem;margin:.5rem 0}
.muted{color:#656d76}.tag{background:#fff4d6;border-radius:3px;padding:0 .3rem}
form.inline{display:inline;margin:0}button{margin:0 .2rem .2rem 0;cursor:pointer}
"""


@dataclass
class FlowView:
    """Everything the page shows of one flow."""

    flow: str
    runs: list[dict[str, Any]]
    links_total: int
    links: list[dict[str, Any]]
    search: str
    holds: list[Hold]
    conflicts: list[dict[str, Any]]
    deletes: list[dict[str, Any]]
    can_edit: bool
    can_decide: bool
    waiting: list[Hold] = field(init=False)
    quarantined: list[Hold] = field(init=False)
    approvals: list[Hold] = field(init=False)

    def __post_init__(self) -> None:
        self.waiting = [h for h in self.holds if h.kind in WAITING_KINDS]
        self.approvals = [h for h in self.holds if h.kind in APPROVAL_KINDS]
        self.quarantined = [h for h in self.holds if h.kind not in WAITING_KINDS + APPROVAL_KINDS]


def action_message(action: str, side: str, record_id: str, done: bool) -> str:
    """What the operator reads after an action."""
    record = f"{SIDE_NAMES.get(side, side)} {record_id}"
    if not done:
        return f"{record}: nothing to {action} (the hold is gone or was decided already)"
    return {
        "release": f"{record} released: the next run reads it as a new record",
        "retry": f"{record} will be retried by the next run",
        "approve": f"delete of {record} approved: the next run carries it out",
        "reject": f"delete of {record} rejected",
    }.get(action, f"{record}: {action} done")


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return escape(str(value))


def _table(headers: list[str], rows: list[list[str]], empty: str) -> str:
    if not rows:
        return f'<p class="muted">{escape(empty)}</p>'
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _pair(value: Any) -> str:
    """``{"customcrm": 1, "chargebee": 2}`` as ``1 / 2`` (Customcrm / Chargebee)."""
    if isinstance(value, dict):
        return f"{_text(value.get('customcrm', 0))} / {_text(value.get('chargebee', 0))}"
    return _text(value if value is not None else "")


def _run_row(flow: str, run: dict[str, Any] | None) -> list[str]:
    link = f'<a href="./?{escape(urlencode({"flow": flow}))}">{escape(flow)}</a>'
    if run is None:
        return [link, '<span class="muted">no run yet</span>', "", "", "", "", "", ""]
    s = run["summary"]
    state = s.get("state") or run["status"]
    return [
        link,
        _text(state),
        _text(run["started_at"]),
        _pair(s.get("read")),
        _pair(s.get("created")),
        _pair(s.get("updated")),
        _text(s.get("conflicts", "")),
        _text(s.get("held_total", s.get("quarantined", ""))),
    ]


RUN_HEADERS = [
    "flow",
    "state",
    "started",
    "read (CRM / CB)",
    "created",
    "updated",
    "conflicts",
    "held",
]


def _overview(overview: list[tuple[str, dict[str, Any] | None]]) -> str:
    rows = [_run_row(flow, run) for flow, run in overview]
    return "<h2>Flows, last run</h2>" + _table(RUN_HEADERS, rows, "No flow is visible to you.")


def _runs(view: FlowView) -> str:
    headers = ["run", "state", "started", "finished", "read", "created", "updated", "linked", "quarantined"]
    rows = []
    for r in view.runs:
        s = r["summary"]
        rows.append(
            [
                _text(r["run_id"]),
                _text(s.get("state") or r["status"]) + (" (dry run)" if s.get("dry_run") else ""),
                _text(r["started_at"]),
                _text(r["finished_at"]),
                _pair(s.get("read")),
                _pair(s.get("created")),
                _pair(s.get("updated")),
                _text(s.get("linked_by_match", "")),
                _text(s.get("quarantined", "")),
            ]
        )
    return "<h2>Last runs</h2>" + _table(headers, rows, "No run of this flow yet.")


def _dry_run_plan(view: FlowView) -> str:
    """What the newest dry run would have written, record by record and field by field
    (its summary keeps the readable plan: crmsync.engine.plan_text)."""
    dry = next((r for r in view.runs if r["summary"].get("dry_run")), None)
    if dry is None:
        return ""
    s = dry["summary"]
    lines = list(s.get("plan") or [])
    more = int(s.get("plan_total") or 0) - len(lines)
    items = "".join(f"<li><code>{escape(str(line))}</code></li>" for line in lines)
    tail = f'<p class="muted">… {more} more (the run\'s update_links log lists all)</p>' if more > 0 else ""
    nothing = '<p class="muted">Nothing would be written.</p>'
    body = f'<ol class="plan">{items}</ol>{tail}' if items else nothing
    return (
        f'<h2 id="plan">Plan of the last dry run</h2><p class="muted">run {escape(str(dry["run_id"]))}, '
        f"started {_text(dry['started_at'])}: nothing was written</p>{body}"
    )


def _links(view: FlowView) -> str:
    form = (
        '<form method="get" action="./"><input type="hidden" name="flow" value="'
        f'{escape(view.flow)}"><input id="link-search" name="q" value="{escape(view.search)}" '
        'placeholder="Customcrm id, Chargebee id or match key" size="40"> <button>Search</button></form>'
    )
    rows = [
        [
            _text(r["crm_id"]) + (f" ({_text(r['crm_slot'])})" if r["crm_slot"] else ""),
            _text(r["cb_id"]),
            _text(r["match_key"]),
            _text(r["synced_at"]),
        ]
        for r in view.links
    ]
    shown = f'<p class="muted">{len(view.links)} shown of {view.links_total} links</p>'
    table = _table(["Customcrm id", "Chargebee id", "match key", "last synced"], rows, "No link found.")
    return f"<h2>Links</h2>{form}{shown}{table}"


def _button(view: FlowView, hold: Hold, action: str, label: str) -> str:
    return (
        f'<form class="inline" method="post" action="action">'
        f'<input type="hidden" name="flow" value="{escape(view.flow)}">'
        f'<input type="hidden" name="side" value="{escape(hold.side)}">'
        f'<input type="hidden" name="record_id" value="{escape(hold.record_id)}">'
        f'<button name="action" value="{action}" data-record="{escape(hold.record_id)}">'
        f"{label}</button></form>"
    )


def _record(hold: Hold) -> str:
    return f"{escape(SIDE_NAMES.get(hold.side, hold.side))} <b>{escape(hold.record_id)}</b>"


def _quarantine(view: FlowView) -> str:
    headers = ["record", "kind", "field", "reason", "fix", "first seen", "last seen", "tries"]
    if view.can_edit:
        headers.append("actions")
    rows = []
    for h in view.quarantined:
        row = [
            _record(h),
            _text(h.kind),
            _text(h.field),
            _text(h.reason),
            _text(h.fix),
            _text(h.first_seen),
            _text(h.last_seen),
            _text(h.attempts),
        ]
        if view.can_edit:
            retry = (
                '<span class="tag">retry next run</span>'
                if h.retry_requested
                else _button(view, h, "retry", "Retry next run")
            )
            row.append(_button(view, h, "release", "Release") + retry)
        rows.append(row)
    note = (
        '<p class="muted">Release: forget the hold, the record is read as new next time. '
        "Retry next run: the next run tries the held copy again.</p>"
    )
    return "<h2>Quarantine</h2>" + note + _table(headers, rows, "Nothing in quarantine.")


def _waiting(view: FlowView) -> str:
    rows = [
        [
            _record(h),
            _text(h.kind),
            _text(h.reason),
            _text(h.first_seen),
            _text(h.last_seen),
            _text(h.attempts),
        ]
        for h in view.waiting
    ]
    headers = ["record", "kind", "why", "first seen", "last seen", "tries"]
    return "<h2>Waiting</h2>" + _table(headers, rows, "No record is waiting.")


def _approvals(view: FlowView) -> str:
    buttons = view.can_edit and view.can_decide
    headers = ["record", "delete held because", "first seen", "last seen"] + (["decision"] if buttons else [])
    rows = []
    for h in view.approvals:
        row = [_record(h), _text(h.reason), _text(h.first_seen), _text(h.last_seen)]
        if buttons and h.kind == APPROVAL_KIND:
            row.append(_button(view, h, "approve", "Approve delete") + _button(view, h, "reject", "Reject"))
        elif buttons:
            row.append(f'<span class="tag">{_text(h.kind)}: the next run carries it out</span>')
        rows.append(row)
    return "<h2>Deletes awaiting approval</h2>" + _table(headers, rows, "No delete awaits approval.")


def _audit(title: str, rows_in: list[dict[str, Any]], empty: str) -> str:
    rows = []
    for a in rows_in:
        detail = a["detail"]
        what = (
            detail.get("message")
            or detail.get("reason")
            or ", ".join(f"{k}: {v}" for k, v in detail.items() if k not in ("field", "kind"))
        )
        rows.append(
            [
                _text(a["at"]),
                _text(a["kind"]),
                _text(a["crm_id"]),
                _text(a["cb_id"]),
                _text(a["field"]),
                _text(what),
            ]
        )
    headers = ["at", "kind", "Customcrm id", "Chargebee id", "field", "detail"]
    return f"<h2>{escape(title)}</h2>" + _table(headers, rows, empty)


def _flow(view: FlowView) -> str:
    return "".join(
        [
            f'<h1 id="flow">{escape(view.flow)}</h1>',
            _runs(view),
            _dry_run_plan(view),
            _quarantine(view),
            _approvals(view),
            _waiting(view),
            _audit("Conflicts", view.conflicts, "No conflict recorded."),
            _audit("Deletes", view.deletes, "No delete recorded."),
            _links(view),
        ]
    )


def render(overview: list[tuple[str, dict[str, Any] | None]], view: FlowView | None, msg: str) -> str:
    """The whole page: every visible flow's last run, then the chosen flow in detail."""
    nav = "".join(
        f'<a class="{"on" if view and f == view.flow else ""}" href="./?{escape(urlencode({"flow": f}))}">'
        f"{escape(f)}</a>"
        for f, _ in overview
    )
    note = f'<div class="msg" id="message">{escape(msg)}</div>' if msg else ""
    body = _flow(view) if view else '<p class="muted">No flow is visible to you.</p>'
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Sync · crmsync</title>'
        f"<style>{CSS}</style></head><body><nav>Sync: {nav}</nav>{note}"
        f"{_overview(overview)}{body}</body></html>"
    )


def as_json(view: FlowView) -> dict[str, Any]:
    """The flow's data as the page shows it (for scripts and tests)."""
    data = asdict(view)
    data.pop("holds")
    return data
