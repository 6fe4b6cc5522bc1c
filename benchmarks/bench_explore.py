"""Exploration benchmark (issue #5): hardware points per minute of `watos explore llama3-70b` on the WATOS
wafer template, and the speed-up of 2 workers over 1, for the local process pool and for Ray.

Each configuration runs the same sweep (DRAM stacks 1-6 x compute fraction 0.50-0.95, 60 points) in a
fresh process. Points per minute are counted from the first finished point to the last (steady state:
after each worker has traced the model once), and end to end (imports and traces included).

    python benchmarks/bench_explore.py [--points 60] [--json]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

GOAL_PER_MIN = 300
CONFIGS = (("local", 1), ("local", 2), ("ray", 1), ("ray", 2))


def sweep(executor: str, workers: int, points: int) -> dict:
    """Run one sweep in a fresh process; times come from the store's growth."""
    with tempfile.TemporaryDirectory() as tmp:
        space, store = Path(tmp) / "space.yaml", Path(tmp) / "store.jsonl"
        fractions = [round(0.5 + 0.05 * i, 2) for i in range(max(1, points // 6))]
        space.write_text(f"dram_stacks_per_die: [1, 2, 3, 4, 5, 6]\ncompute_fraction: {fractions}\n")
        start = time.perf_counter()
        child = subprocess.Popen([sys.executable, "-m", "watos", "explore", "llama3-70b", "--template", "watos-wafer",
                                  "--space", str(space), "--store", str(store), "--executor", executor,
                                  "--workers", str(workers), "--json"], stdout=subprocess.DEVNULL)
        seen, first = 0, None
        while child.poll() is None:
            lines = store.read_text().count("\n") - 1 if store.exists() else 0
            if lines > seen:
                seen, first = lines, first or time.perf_counter()
            time.sleep(0.05)
        end = time.perf_counter()
        if child.returncode:
            raise SystemExit(f"explore with {executor} x{workers} failed")
        total = store.read_text().count("\n") - 1
    steady = (total - 1) / (end - first) * 60 if first and total > 1 else 0.0
    return {"executor": executor, "workers": workers, "points": total, "wall_s": end - start,
            "points_per_min_steady": steady, "points_per_min_end_to_end": total / (end - start) * 60}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=60)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = [sweep(executor, workers, args.points) for executor, workers in CONFIGS]
    by = {(r["executor"], r["workers"]): r for r in results}
    summary = {"runs": results, "goal_points_per_min": GOAL_PER_MIN,
               "speedup_local_2_over_1": by["local", 2]["points_per_min_steady"] / by["local", 1]["points_per_min_steady"],
               "speedup_ray_2_over_1": by["ray", 2]["points_per_min_steady"] / by["ray", 1]["points_per_min_steady"]}
    if args.json:
        print(json.dumps(summary, sort_keys=True))
        return
    for r in results:
        print(f"{r['executor']:5s} x{r['workers']}: {r['points_per_min_steady']:6.0f} points/min steady, "
              f"{r['points_per_min_end_to_end']:6.0f} end to end ({r['points']} points in {r['wall_s']:.1f} s)")
    print(f"2 workers over 1: local {summary['speedup_local_2_over_1']:.2f}x, ray {summary['speedup_ray_2_over_1']:.2f}x; "
          f"goal {GOAL_PER_MIN} points/min")


if __name__ == "__main__":
    main()
