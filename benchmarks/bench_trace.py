"""Trace-time benchmark: `watos trace MODEL --seq 4096 --micro-batch 1` as a user runs it.

Each run is a fresh process (imports included, as a user pays them). Reports the median and spread of
wall time and peak RSS over several runs, and the ratio to the goal (issue #2: llama3-70b within 8 s and
2 GB, llama3.1-405b within 30 s, on a 2-core machine).

    python benchmarks/bench_trace.py [--runs 5] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

GOALS = {"llama3-70b": (8.0, 2.0), "llama3.1-405b": (30.0, None)}


def run_watos(*argv: str) -> tuple[float, float]:
    """Wall seconds and peak RSS (GB) of one `watos ARGV...` process."""
    start = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-m", "watos", *argv], stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"watos {' '.join(argv)} failed")
    return wall, usage.ru_maxrss / 1e6  # ru_maxrss is in KB on Linux


def run_once(model: str) -> tuple[float, float]:
    """Wall seconds and peak RSS (GB) of one `watos trace` process."""
    return run_watos("trace", model, "--seq", "4096", "--micro-batch", "1", "--json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = {}
    for model, (wall_goal, rss_goal) in GOALS.items():
        run_once(model)  # warm the file cache
        samples = [run_once(model) for _ in range(args.runs)]
        walls = [w for w, _ in samples]
        peak = max(r for _, r in samples)
        results[model] = {
            "runs": args.runs, "wall_s_median": statistics.median(walls), "wall_s_min": min(walls),
            "wall_s_max": max(walls), "wall_goal_s": wall_goal,
            "wall_ratio_to_goal": statistics.median(walls) / wall_goal,
            "peak_rss_gb": peak, "rss_goal_gb": rss_goal,
            "rss_ratio_to_goal": peak / rss_goal if rss_goal else None,
        }
    if args.json:
        print(json.dumps(results, indent=1, sort_keys=True))
        return
    for model, r in results.items():
        rss = f", {r['rss_ratio_to_goal']:.2f} of goal" if r["rss_goal_gb"] else ""
        print(f"{model}: median {r['wall_s_median']:.2f} s (min {r['wall_s_min']:.2f}, max "
              f"{r['wall_s_max']:.2f}; {r['wall_ratio_to_goal']:.2f} of the {r['wall_goal_s']:.0f} s goal), "
              f"peak RSS {r['peak_rss_gb']:.2f} GB{rss}")


if __name__ == "__main__":
    main()
