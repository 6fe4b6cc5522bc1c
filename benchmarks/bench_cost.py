"""Costing benchmark: one fixed plan of llama3-70b on watos-config3, after the trace (goal: 20 ms).

Traces and lowers once, then times `cost_plan` (shard, pipeline, recompute, device_cost, schedule on a
copy of the IR) over many runs and reports the median and the ratio to the goal.

    python benchmarks/bench_cost.py [--runs 50]
"""
from __future__ import annotations

import argparse
import statistics
import time

import watos
from watos.pipelines import attention_for
from watos.plan import software_of

GOAL_S = 0.020


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50)
    args = parser.parse_args()
    target = watos.load_target("watos-config3")
    fusion = software_of(watos.Plan(), target).fusion
    graph = watos.lower(watos.trace("llama3-70b", seq_len=4096, micro_batch=1, attention=attention_for(fusion)), target)
    plan = watos.Plan(tp=4, pp=14, dp=1, micro_batch=1, global_batch=64, recompute="full")
    samples = []
    for _ in range(args.runs):
        start = time.perf_counter()
        watos.cost_plan(graph, target, plan)
        samples.append(time.perf_counter() - start)
    median = statistics.median(samples)
    print(f"cost one plan (llama3-70b, watos-config3, tp4 pp14): median {median * 1e3:.2f} ms over "
          f"{args.runs} runs (min {min(samples) * 1e3:.2f}, max {max(samples) * 1e3:.2f}); "
          f"{median / GOAL_S:.2f} of the 20 ms goal")


if __name__ == "__main__":
    main()
