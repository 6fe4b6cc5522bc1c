"""Search benchmark: `watos search llama3-70b --target watos-config3` as a user runs it (issue #4: within
30 s on a 2-core machine).

Each run is a fresh process (imports, tracing at every micro-batch size the search tries, the search and
the three baselines). Reports the median and spread of wall time over several runs and the ratio to the
goal.

    python benchmarks/bench_search.py [--runs 3] [--json]
"""
from __future__ import annotations

import argparse
import json
import statistics

from bench_trace import run_watos

COMMAND = ("search", "llama3-70b", "--target", "watos-config3", "--json")
GOAL_S = 30.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    walls = [run_watos(*COMMAND)[0] for _ in range(args.runs)]
    result = {"command": "watos " + " ".join(COMMAND), "runs": args.runs, "wall_s_median": statistics.median(walls),
              "wall_s_min": min(walls), "wall_s_max": max(walls), "goal_s": GOAL_S,
              "ratio_to_goal": statistics.median(walls) / GOAL_S}
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        print(f"{result['command']}: median {result['wall_s_median']:.1f} s (min {result['wall_s_min']:.1f}, "
              f"max {result['wall_s_max']:.1f}) over {args.runs} runs; {result['ratio_to_goal']:.2f} of the "
              f"{GOAL_S:.0f} s goal")


if __name__ == "__main__":
    main()
