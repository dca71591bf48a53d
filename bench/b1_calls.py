"""Benchmark 1: API calls per record against the minimum needed.

Runs, against fresh sandboxes holding N records per side (half of them matching by
email, the overlapping pairs in several states: equal, a field missing on one side,
the billing address missing, conflicting edits):

1. the initial sync;
2. a rerun at once, with no edits (it re-reads the records run 1 wrote: their
   ``updated_at`` is after run 1's watermark; this is the price of reading by watermark);
3. an idle rerun an hour later (the sandboxes' records are moved an hour into the past,
   as if the hour between two scheduled runs had passed);
4. a rerun after 1% of the records were edited on each side (through the sandboxes'
   admin endpoints, as a person in each UI would).

Calls are read from each sandbox's ``/_sandbox/stats``; the minimum comes from the data
(see :mod:`bench.flows`). The tasks run in this process, in order, as ``dag.test`` would.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from bench.common import BenchEnv, Result, pages, ratio, set_connections
from bench.flows import Flow, edits, generate
from bench.sandboxes import CallCounts, Pair, start_pair
from bench.steps import run_inprocess, summary

NAME = "calls"
TITLE = "API calls per record vs the minimum"
SIDES = ("chargebee", "customcrm")


def _run(
    env: BenchEnv,
    flow: Flow,
    sb: Pair,
    label: str,
    run_id: str,
    params: dict[str, Any],
    minimum: dict[str, Counter[str]],
) -> dict[str, Any]:
    sb.reset_stats()
    seconds = run_inprocess(flow.mapping_file, run_id, params)
    counts = {"chargebee": CallCounts.of(sb.cb.stats()), "customcrm": CallCounts.of(sb.crm.stats())}
    return {
        "label": label,
        "run_id": run_id,
        "seconds": seconds,
        "counts": counts,
        "minimum": minimum,
        "summary": summary(flow.name, run_id, flow.mapping.connections.store) or {},
    }


def run(env: BenchEnv, flow: Flow) -> Result:
    n = 50_000 if env.large else 5_000
    res = Result(NAME, TITLE)
    env.fresh_db()
    ds = generate(flow, n)
    cb_seed, crm_seed = ds.write_seeds(env.path("calls", "seed"))
    res.data.update({"n_per_side": n, "pairs": len(ds.pairs), "categories": dict(ds.categories)})
    runs: list[dict[str, Any]] = []
    with start_pair(cb_seed, crm_seed) as sb:
        set_connections(sb.cb.url, sb.crm.url)
        runs.append(
            _run(
                env, flow, sb, "1 initial sync", "bench__calls_1", {"approve_large_change": True}, ds.minimum
            )
        )
        people = {"chargebee": sb.cb.count(flow.cb_resource), "customcrm": sb.crm.count(flow.crm_resource)}
        # Run 2's floor: with nothing edited, one list call per side would do.
        idle_min = {s: Counter({"list": 1}) for s in SIDES}
        runs.append(_run(env, flow, sb, "2 rerun at once, no edits", "bench__calls_2", {}, idle_min))
        sb.shift(3600)
        runs.append(_run(env, flow, sb, "3 idle rerun, 1 h later", "bench__calls_3", {}, idle_min))
        ed = edits(flow, ds, 0.01)
        sb.crm.admin("POST", f"records/{flow.crm_resource}", ed["crm"])
        sb.cb.admin("POST", f"records/{flow.cb_resource}", {"records": ed["cb"]})
        runs.append(
            _run(env, flow, sb, f"4 after 1% edits ({ed['count']}/side)", "bench__calls_4", {}, ed["minimum"])
        )

    rows = []
    detail = []
    for r in runs:
        for side in SIDES:
            c: CallCounts = r["counts"][side]
            kinds = c.kinds()
            mins = r["minimum"][side]
            min_writes = sum(v for k, v in mins.items() if k.startswith("write"))
            min_total = sum(mins.values())
            rows.append(
                [
                    r["label"],
                    side,
                    kinds["list"],
                    mins["list"],
                    kinds["read"],
                    c.writes(),
                    min_writes,
                    c.total(),
                    min_total,
                    ratio(c.total(), min_total),
                    c.status("429"),
                    sum(c.status(s) for s in ("500", "502", "503")),
                ]
            )
            for kind in sorted(set(kinds) | {k for k in mins if k != "list"} | {"list"}):
                detail.append([r["label"], side, kind, kinds.get(kind, 0), mins.get(kind, 0)])
    res.table(
        f"API calls, N = {n:,} records per side ({len(ds.pairs):,} pairs match by email; "
        f"{ds.people:,} people in all)",
        [
            "run",
            "side",
            "list",
            "list min",
            "reads",
            "writes",
            "writes min",
            "total",
            "total min",
            "x min",
            "429",
            "5xx",
        ],
        rows,
    )
    res.table("Calls by endpoint (actual vs minimum)", ["run", "side", "kind", "actual", "minimum"], detail)
    res.table(
        "Run summaries (from the link store)",
        [
            "run",
            "seconds",
            "read crm/cb",
            "created crm/cb",
            "updated crm/cb",
            "linked by match",
            "unchanged",
            "failed",
            "held",
        ],
        [
            [
                r["label"],
                sum(r["seconds"].values()),
                _pair(r["summary"].get("read")),
                _pair(r["summary"].get("created")),
                _pair(r["summary"].get("updated")),
                r["summary"].get("linked_by_match"),
                r["summary"].get("unchanged"),
                _pair(r["summary"].get("failed")),
                r["summary"].get("held_total"),
            ]
            for r in runs
        ],
    )
    res.table(
        "Records per side after the initial sync (expected: every person once)",
        ["side", "records", "expected"],
        [[s, people[s], ds.people] for s in SIDES],
    )

    initial, again, idle, edited = runs
    tot = sum(initial["counts"][s].total() for s in SIDES)
    tot_min = sum(sum(initial["minimum"][s].values()) for s in SIDES)
    per_side = ", ".join(
        f"{s} {ratio(initial['counts'][s].total(), sum(initial['minimum'][s].values())):.3f}" for s in SIDES
    )
    res.verdict(
        "initial sync <= 1.02 x minimum",
        tot <= 1.02 * tot_min,
        f"{tot:,} calls for a minimum of {tot_min:,} = {ratio(tot, tot_min):.3f} x ({per_side})",
    )
    idle_lists = {s: idle["counts"][s].kinds()["list"] for s in SIDES}
    idle_writes = sum(idle["counts"][s].writes() for s in SIDES)
    idle_other = sum(idle["counts"][s].total() for s in SIDES) - sum(idle_lists.values()) - idle_writes
    res.verdict(
        "idle rerun: <= 1 list call per side, zero writes",
        all(v <= 1 for v in idle_lists.values()) and idle_writes == 0 and idle_other == 0,
        f"list calls {idle_lists}, writes {idle_writes}, other reads {idle_other}",
    )
    again_lists = {s: again["counts"][s].kinds()["list"] for s in SIDES}
    again_writes = sum(again["counts"][s].writes() for s in SIDES)
    res.verdict(
        "rerun right after the initial sync: zero writes (info: it re-reads what run 1 wrote)",
        again_writes == 0,
        f"list calls {again_lists} (echo pages: records written by run 1 are newer than its watermark), "
        f"writes {again_writes}",
    )
    e_tot = sum(edited["counts"][s].total() for s in SIDES)
    e_min = sum(sum(edited["minimum"][s].values()) for s in SIDES)
    res.verdict(
        "1% edits: no calls beyond the changed records and their pages",
        e_tot <= e_min,
        f"{e_tot:,} calls for a minimum of {e_min:,} ({ratio(e_tot, e_min):.3f} x)",
    )
    res.data["runs"] = [
        {
            "label": r["label"],
            "seconds": r["seconds"],
            "calls": {s: dict(r["counts"][s].kinds()) for s in SIDES},
            "minimum": {s: dict(r["minimum"][s]) for s in SIDES},
        }
        for r in runs
    ]
    res.data["echo_pages_expected"] = {s: pages(people[s] - n) for s in SIDES}
    return res


def _pair(d: Any) -> str:
    if not isinstance(d, dict):
        return "-"
    return f"{d.get('customcrm', 0)}/{d.get('chargebee', 0)}"
