"""``python -m bench._dagrun DAGS_FOLDER DAG_ID [--conf JSON]``: one DAG run through Airflow.

Loads the DAG folder with a ``DagBag`` and runs the DAG with ``dag.test()`` (a DagRun
in the metadata database, every task executed), as ``make sync`` does. Prints one JSON
line: time to import, to parse, to run, the run's state and each task's duration.
"""

from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench._dagrun")
    parser.add_argument("dags_folder")
    parser.add_argument("dag_id")
    parser.add_argument("--conf", default="{}")
    args = parser.parse_args()
    t0 = time.perf_counter()
    from scripts.runner import load_dags

    t1 = time.perf_counter()
    dags = load_dags(args.dags_folder)
    t2 = time.perf_counter()
    dr = dags[args.dag_id].test(run_conf=json.loads(args.conf))
    t3 = time.perf_counter()
    tasks = {}
    for ti in dr.get_task_instances():
        duration = ti.duration
        if duration is None and ti.start_date and ti.end_date:
            duration = (ti.end_date - ti.start_date).total_seconds()
        tasks[ti.task_id] = {"state": str(ti.state), "seconds": duration}
    report = {
        "import_s": t1 - t0,
        "parse_s": t2 - t1,
        "run_s": t3 - t2,
        "state": str(dr.state),
        "run_id": dr.run_id,
        "tasks": tasks,
    }
    print("BENCH_DAGRUN " + json.dumps(report, default=str), flush=True)


if __name__ == "__main__":
    main()
