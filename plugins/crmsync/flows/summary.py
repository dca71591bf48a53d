"""The run summary: counts per action and side, and every record that did not sync, with why.

It is logged by update_links in a form a person reads at 3 a.m., stored as JSON on the
run row, and printed as one JSON line by ``make sync``.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import TYPE_CHECKING, Any

from crmsync.engine.plan import Action, Op
from crmsync.engine.plan_text import describe
from crmsync.engine.status import WRITE_FAILURES, WriteStatus
from crmsync.mapping.model import Mapping as FlowMapping
from crmsync.mapping.model import Side
from crmsync.store import approvals
from crmsync.store.plan import side_write_state, write_outcome

if TYPE_CHECKING:
    from crmsync.store.repository import Repository

SIDES = ("customcrm", "chargebee")
#: how many records a summary list names (the rest are in crmsync_plan)
LISTED = 20
#: how many of them the task log shows
SHOWN = 5
#: how many lines of a dry run's readable plan the summary keeps (the task log has them all)
PLAN_LISTED = 200
#: how many of those the summary's text shows
PLAN_SHOWN = 20


def _named_note(note: dict[str, Any]) -> str:
    """One summary line for a merge note: the pair, then what happened to which field."""
    record = note.get("record") or "(record not named)"
    return f"{record}: {note['message']}"


def readable_plan(mapping: FlowMapping, repo: Repository, run_id: str, limit: int) -> tuple[list[str], int]:
    """The run's plan as a person reads it, a line per write (see crmsync.engine.plan_text):
    the first ``limit`` lines, and how many there are in all."""
    lines: list[str] = []
    total = 0
    for view in repo.iter_plan_views(run_id):
        for line in describe(mapping, view):
            total += 1
            if len(lines) < limit:
                lines.append(line)
    return lines, total


def build_summary(
    mapping: FlowMapping,
    repo: Repository,
    run_id: str,
    *,
    dry_run: bool,
    plan: tuple[list[str], int] | None = None,
) -> dict[str, Any]:
    """The run's summary; ``plan`` is a dry run's :func:`readable_plan` when the caller has
    read it already (update_links logs it), else a dry run reads it here."""
    staged = repo.count_staged(run_id)
    actions, writes = _counts(repo, run_id)
    notes = _notes(repo, run_id)
    problems = notes.pop("problems") + _plan_problems(repo, run_id)
    conflicts, blanks, cleared = notes["conflicts"], notes["blank_ignored"], notes["cleared"]
    blank_records, cleared_records = notes["blank_ignored_records"], notes["cleared_records"]
    reverted, kept = notes["reverted_read_only"], notes["kept_read_only_edits"]
    if dry_run and plan is None:
        plan = readable_plan(mapping, repo, run_id, PLAN_LISTED)
    plan_lines, plan_total = plan if plan is not None else ([], 0)
    return {
        "flow": mapping.flow,
        "run_id": run_id,
        "dry_run": dry_run,
        # a dry run's plan, record by record and field by field (old → new)
        **({"plan": plan_lines[:PLAN_LISTED], "plan_total": plan_total} if dry_run else {}),
        "read": {s: staged.get(s, 0) for s in SIDES},
        "created": {s: writes[s]["created"] for s in SIDES},
        "updated": {s: writes[s]["updated"] for s in SIDES},
        "deleted": {s: writes[s]["deleted"] for s in SIDES},
        "failed": {s: sum(writes[s][f] for f in WRITE_FAILURES) for s in SIDES},
        "stale": {s: writes[s][WriteStatus.STALE] for s in SIDES},
        "planned": {
            s: {k.removeprefix("planned_"): v for k, v in writes[s].items() if k.startswith("planned_")}
            for s in SIDES
        },
        "linked_by_match": actions["link_by_match"],
        "unchanged": actions["unchanged"],
        "unlinked": actions["unlink"],
        "conflicts": conflicts,
        "blank_ignored": blanks,
        "blank_ignored_records": blank_records,
        "cleared": cleared,
        "cleared_records": cleared_records,
        "reverted_read_only": reverted,
        "kept_read_only_edits": kept,
        "skipped": actions["skip"],
        # the first reasons (each names the record): a skipped record is not synced, and a
        # person must be able to see which and why without querying crmsync_plan
        "skipped_records": repo.plan_skips(run_id) if actions["skip"] else [],
        "limitations": list(mapping.limitations),
        "quarantined": actions["quarantine"],
        "held_total": repo.count_held(),
        # deletes held under policy approve, waiting for a person (this run's and earlier)
        "approvals_waiting": approvals.count_pending(repo.engine, mapping.flow),
        "waiting": actions["wait"],
        "actions": dict(sorted(actions.items())),
        "problems": problems,
    }


def _counts(repo: Repository, run_id: str) -> tuple[Counter[str], dict[str, Counter[str]]]:
    """Plan rows by action, and each side's writes by what became of them (created,
    updated, deleted when done; planned_* while pending; else the write status)."""
    actions: Counter[str] = Counter()
    writes: dict[str, Counter[str]] = {s: Counter() for s in SIDES}
    for row in repo.plan_counts(run_id):
        n = row["n"]
        actions[row["action"].value] += n
        for side in (Side.CUSTOMCRM, Side.CHARGEBEE):
            op, status = side_write_state(row, side)
            if op is None:
                continue
            key = {Op.CREATE: "created", Op.UPDATE: "updated", Op.DELETE: "deleted"}[op]
            writes[side.value][
                key
                if status == WriteStatus.DONE
                else (f"planned_{key}" if status == WriteStatus.PENDING else str(status))
            ] += n
    return actions, writes


def _notes(repo: Repository, run_id: str) -> dict[str, Any]:
    """Conflicts and the merge's notes counted, with the first few blanks kept from
    overwriting and clears sent, each naming the record and the field (a count alone
    tells a person nothing to look at), and the creates that took Chargebee's default."""
    counts: Counter[str] = Counter()
    named: dict[str, list[str]] = {"blank_ignored": [], "cleared": []}
    problems: list[dict[str, Any]] = []
    for detail in repo.plan_details(run_id):
        d = json.loads(detail)
        counts["conflicts"] += len(d.get("conflicts", []))
        for n in d.get("notes", []):
            counts[n["kind"]] += 1
            if n["kind"] in named and len(named[n["kind"]]) < LISTED:
                named[n["kind"]].append(_named_note(n))
            if n["kind"] == "created_with_default":
                problems.append({"kind": n["kind"], "reason": n["message"]})
    return {
        "conflicts": counts["conflicts"],
        "blank_ignored": counts["blank_ignored"],
        "cleared": counts["cleared"],
        "reverted_read_only": counts["reverted_read_only"],
        "kept_read_only_edits": counts["kept_read_only_edit"],
        "blank_ignored_records": named["blank_ignored"],
        "cleared_records": named["cleared"],
        "problems": problems,
    }


def _plan_problems(repo: Repository, run_id: str) -> list[dict[str, Any]]:
    """Every record of the run that is held, waits, or whose write failed or went stale."""
    problems: list[dict[str, Any]] = []
    for p in repo.plan_problems(run_id):
        if p["action"] in (Action.QUARANTINE, Action.WAIT) or p["held_side"]:
            problems.append({"kind": str(p["hold_kind"] or p["action"]), "reason": p["reason"]})
        for side in Side:
            status, error = write_outcome(p, side)
            if status in (*WRITE_FAILURES, WriteStatus.STALE):
                problems.append({"kind": str(status), "reason": error})
    return problems


def render_summary(s: dict[str, Any]) -> str:
    """A few aligned lines for the task log."""

    def pair(d: dict[str, int]) -> str:
        return f"customcrm {d.get('customcrm', 0):>5}   chargebee {d.get('chargebee', 0):>5}"

    if "read" not in s:
        # the run stopped before update_links summarised it: only its failures are recorded
        head = f"flow {s.get('flow', '?')}  run {s.get('run_id', '?')}  (stopped: nothing was summarised)"
        return "\n".join([head, render_failures(s.get("failures", []))])
    lines = [
        f"flow {s['flow']}  run {s['run_id']}" + ("  (DRY RUN: nothing written)" if s.get("dry_run") else ""),
        f"  read        {pair(s['read'])}",
        f"  created     {pair(s['created'])}",
        f"  updated     {pair(s['updated'])}",
        f"  deleted     {pair(s['deleted'])}",
        f"  failed      {pair(s['failed'])}",
        f"  stale       {pair(s['stale'])}  (changed while we wrote; synced next run)",
        f"  linked by match {s['linked_by_match']}, unchanged {s['unchanged']}, unlinked {s['unlinked']}",
        f"  conflicts {s['conflicts']} (audited), cleared {s.get('cleared', 0)}, "
        f"blanks ignored {s['blank_ignored']}, "
        f"read-only edits reverted {s['reverted_read_only']}, "
        f"kept (not synced) {s.get('kept_read_only_edits', 0)}",
        f"  skipped {s.get('skipped', 0)} "
        "(no match and this flow does not create them, or deleted before linking)",
    ]
    lines += _named_lines(s)
    lines += [
        f"  quarantined {s['quarantined']}, waiting {s['waiting']} this run; "
        f"{s.get('held_total', 0)} records held in quarantine in all (table crmsync_quarantine)",
    ]
    if s.get("approvals_waiting"):
        lines.append(
            f"  {s['approvals_waiting']} deletes wait for approval (delete policy approve): approve or "
            "reject each in the Sync page, or with crmsync.store.approvals.decide_delete"
        )
    if s.get("dry_run"):
        lines += _plan_lines(s)
    for note in s.get("limitations", []):
        lines.append(f"  note: {note}")
    for p in s["problems"]:
        lines.append(f"  ! [{p['kind']}] {p['reason']}")
    if s.get("failures"):
        lines.append(render_failures(s["failures"]))
    return "\n".join(lines)


# -- failures and progress ---------------------------------------------------------------------


def _host_of(base_url: str | None) -> str | None:
    """``host[:port]`` of a base URL: never its user info, path or query."""
    if not base_url:
        return None
    from urllib.parse import urlsplit

    parts = urlsplit(base_url)
    if not parts.hostname:
        return None
    return parts.hostname + (f":{parts.port}" if parts.port else "")


def failure_of(
    task: str,
    exc: BaseException,
    *,
    conn_id: str | None = None,
    base_url: str | None = None,
    fix: str | None = None,
) -> dict[str, str]:
    """What a person needs of a failed task: which task, why, and what to do.

    ``conn_id`` and ``base_url`` are those of the hook the task used (a transport or
    authentication error then names the connection and the host, never a secret: the
    host is taken from the URL alone). ``fix`` overrides the advice for the error class.
    """
    from crmsync.hooks.errors import ApiError, AuthError, TransportError

    cause = " ".join(str(exc).split()) or type(exc).__name__
    host = _host_of(base_url)
    where = (f"connection {conn_id!r}" if conn_id else "") + (f" (host {host})" if host else "")
    clear = f"then clear {task} (and the tasks after it) in the Airflow UI, or trigger a new run"
    if isinstance(exc, TransportError):
        cause = f"{cause}; {where}" if where else cause
        advice = (
            f"check that {host or 'the host'} is up and reachable from the worker and that "
            f"connection {conn_id or '(see the mapping)'!r} (Admin → Connections) has the right "
            f"host / base_url; {clear}"
        )
    elif isinstance(exc, AuthError):
        cause = f"{cause}; {where}" if where else cause
        advice = f"check the API key (password) of connection {conn_id!r} in Admin → Connections; {clear}"
    elif isinstance(exc, ApiError):
        cause = f"{cause}; {where}" if where else cause
        advice = f"read the API's message above; {clear}"
    else:
        advice = f"read the cause above (the task log of {task} has the traceback); {clear}"
    return {"task": task, "cause": cause[:1000], "fix": fix or advice}


def with_failure(summary: dict[str, Any] | None, failure: dict[str, str]) -> dict[str, Any]:
    """``summary`` (or a new record) with ``failure`` in its ``failures``, one per task."""
    out = dict(summary or {})
    failures = [f for f in out.get("failures", []) if f.get("task") != failure["task"]]
    out["failures"] = [*failures, failure]
    return out


def _named_lines(s: dict[str, Any]) -> list[str]:
    """The records named under clears, blanks kept and skips, each list capped."""
    lines: list[str] = []
    for key, count, what in (
        ("cleared_records", "cleared", "cleared on the other side too"),
        ("blank_ignored_records", "blank_ignored", "blank kept from overwriting a value"),
    ):
        named = s.get(key, [])[:SHOWN]
        if named:
            lines.append(f"  {what}:")
            lines += [f"    - {line}" for line in named]
        if s.get(count, 0) > len(named):
            lines.append(f"    ... {s[count] - len(named)} more (crmsync_plan rows, column detail)")
    shown = s.get("skipped_records", [])[:SHOWN]
    lines += [f"    - {reason}" for reason in shown]
    if s.get("skipped", 0) > len(shown):
        lines.append(f"    ... {s['skipped'] - len(shown)} more (crmsync_plan rows with action 'skip')")
    return lines


def _plan_lines(s: dict[str, Any]) -> list[str]:
    """A dry run's planned writes and the first lines of its readable plan."""
    lines = [f"  planned writes: {s['planned']}"]
    plan_lines = s.get("plan", [])[:PLAN_SHOWN]
    if plan_lines:
        lines.append("  the plan (nothing written):")
        lines += [f"    {line}" for line in plan_lines]
    if s.get("plan_total", 0) > len(plan_lines):
        lines.append(
            f"    ... {s['plan_total'] - len(plan_lines)} more (the update_links log lists all; "
            f"the summary's JSON the first {PLAN_LISTED})"
        )
    return lines


def render_failures(failures: list[dict[str, str]]) -> str:
    """The failures of a run, the cause and the fix of each, for the summary's text."""
    lines = []
    for f in failures:
        lines.append(f"  FAILED {f['task']}: {f['cause']}")
        lines.append(f"    fix: {f['fix']}")
    return "\n".join(lines)


def progress_line(
    what: str, done: int, total: int | None, elapsed: float, waited: float | None = None
) -> str:
    """One progress line: records done of total, records per minute, seconds waited for
    the rate budget (when the task writes through one), time left."""
    elapsed = max(elapsed, 1e-6)
    per_minute = done / elapsed * 60
    count = f"{done}/{total}" if total is not None else f"{done}"
    parts = [f"{what}: {count} records", f"{per_minute:.0f}/min", f"{elapsed:.0f}s"]
    if waited is not None:
        parts.append(f"waited {waited:.1f}s for the rate budget")
    if total is not None and 0 < done < total:
        parts.append(f"~{(total - done) / (done / elapsed):.0f}s left")
    return ", ".join(parts)
