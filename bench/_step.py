"""``python -m bench._step STEP MAPPING [--side S] --run-id R [--params JSON]``.

Runs one task callable of a flow (``crmsync.flows.tasks.run_step``) the way an Airflow
worker does, in a process of its own (with the rate budget shared through the link store, as
inside a task), and prints one JSON line: the seconds the callable
took and the peak RSS of this process. ``STEP`` ``baseline`` does everything a task does
before its work (imports, mapping, link store check, hooks) and nothing else: the
constant part of every task's memory. Peak RSS is ``VmHWM`` (see :func:`_vm_hwm_kb`).
"""

from __future__ import annotations

import argparse
import json
import resource
import time
import traceback


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench._step")
    parser.add_argument("step")
    parser.add_argument("mapping")
    parser.add_argument("--side", default=None)
    parser.add_argument("--run-id", required=True)
    parser.add_argument("--params", default="{}")
    args = parser.parse_args()
    ok, error = True, None
    started = time.perf_counter()
    try:
        # What every task imports anyway, outside the timed part (a worker process
        # has paid for it before the callable starts).
        import airflow.sdk  # noqa: F401
        import crmsync.flows.writers
        import crmsync.hooks.chargebee
        import crmsync.hooks.customcrm
        import crmsync.store.repository  # noqa: F401
        from crmsync.flows import tasks
        from crmsync.flows.budgets import use_shared_budget

        # Inside an Airflow task the hooks lease their rate budget from the link store, so
        # every task of every flow shares one budget per site (crmsync.hooks.budget); this
        # process is not inside a task, so it opts in the same way.
        use_shared_budget()
        started = time.perf_counter()
        if args.step == "baseline":
            mapping = tasks._mapping(args.mapping)
            tasks._repo(mapping)
            for side in ("customcrm", "chargebee"):
                hook = tasks._hook(mapping, tasks.Side(side))
                hook.settings  # noqa: B018 - loads the connection like a task does
        else:
            kwargs = {"run_id": args.run_id, "params": json.loads(args.params)}
            if args.side:
                kwargs["side"] = args.side
            tasks.run_step(args.step, args.mapping, **kwargs)
    except BaseException as exc:  # report, do not hide: the parent prints it
        ok, error = False, f"{type(exc).__name__}: {exc}\n{traceback.format_exc()[-2000:]}"
    seconds = time.perf_counter() - started
    report = {
        "ok": ok,
        "seconds": seconds,
        "hwm_kb": _vm_hwm_kb(),
        "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "error": error,
    }
    print("BENCH_STEP " + json.dumps(report))


def _vm_hwm_kb() -> int | None:
    """Peak RSS of this process image (``VmHWM``), or None off Linux.

    Not ``ru_maxrss``: Linux carries the parent's high-water mark over ``vfork``/``exec``
    into the child's ``ru_maxrss`` (``signal_struct.maxrss``), so a child started by a
    big parent reports the parent's peak. ``VmHWM`` belongs to the new address space.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


if __name__ == "__main__":
    main()
