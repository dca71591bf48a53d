"""``python -m bench._budget_long [LIMIT] [RECORDS]``: one budget case of several minutes.

The default sizes of ``python -m bench budget`` last a little over one minute each; this
runs the single-flow case (Customcrm-only records, one Chargebee create each, 250 ms
latency, the limit enforced) long enough to see the rate over several minutes
(default: 3,000 records at 1000/min, about three and a half minutes).
"""

from __future__ import annotations

import json
import sys

from bench.common import setup_env


def main() -> None:
    limit = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    records = int(sys.argv[2]) if len(sys.argv) > 2 else 3000
    env = setup_env("contact_customer", False)
    try:
        from bench.b2_budget import _flow_case
        from bench.flows import Flow

        flow = Flow.load("contact_customer", env.mapping_file)
        o = _flow_case(env, flow, limit, records, None, f"{limit}-auto-{records}")
        o.pop("summary", None)
        print("BUDGET_LONG " + json.dumps(o, default=str))
    finally:
        env.cleanup()


if __name__ == "__main__":
    main()
