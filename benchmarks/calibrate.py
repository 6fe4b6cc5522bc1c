"""Calibrate a target's efficiency parameters on a validation file (run once; paste the result into the
target's YAML with a comment saying so). Coordinate descent on the mean absolute error, with each case's
unpublished knobs chosen by the full search at the current parameters, re-chosen after every round.

    python benchmarks/calibrate.py ../shared/validation/public.json dgx-a100-80g
"""
from __future__ import annotations

import json
import sys

from watos.compile import cost_plan
from watos.hardware import load_target
from watos.validate import candidate_plans, hf_config, load_cases, lowered_case

GRID = {
    "matmul_max": [0.66, 0.68, 0.7, 0.72, 0.74, 0.76, 0.78, 0.8, 0.82, 0.85],
    "matmul_half_dim": [0, 64, 128, 192, 256, 384, 512, 768, 1024, 2048],
    "matmul_half_gflop": [0, 1, 5, 20, 50],
    "matmul_tile": [1, 32, 64, 128, 256],
    "memory": [0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9],
    "kernel_overhead_us": [0, 2, 5, 10, 20],
    "network": [0.6, 0.7, 0.8, 0.85, 0.9, 0.95],
}


def with_efficiency(target, **changes):
    """The target with some efficiency parameters changed; ``tier_<name>`` sets a switched tier's."""
    tiers = {k.removeprefix("tier_"): changes.pop(k) for k in list(changes) if k.startswith("tier_")}
    device = target.device.model_copy(update={"efficiency": target.device.efficiency.model_copy(update=changes)})
    update = {"device": device}
    if tiers:
        update["topology"] = target.topology.model_copy(update={"tiers": [
            t.model_copy(update={"efficiency": tiers[t.name]}) if t.name in tiers else t
            for t in target.topology.tiers]})
    return target.model_copy(update=update)


def throughput(case, target, plan):
    graph = lowered_case(json.dumps(hf_config(case.model), sort_keys=True), case.model.seq, plan.micro_batch,
                         target.fusion, case.system.precision)
    return cost_plan(graph, target, plan, dtype=case.system.precision).analyses["cost"]


def choose(cases, target):
    chosen = {}
    for case in cases:
        best = None
        for plan in candidate_plans(case):
            cost = throughput(case, target, plan)
            if cost["fits"] and (best is None or cost["tokens_per_s_per_device"] > best[1]):
                best = (plan, cost["tokens_per_s_per_device"])
        chosen[case.id] = best[0]
    return chosen


def error(cases, target, chosen):
    errors = [abs(throughput(c, target, chosen[c.id])["tokens_per_s_per_device"] / c.measured.tokens_per_s_per_device - 1)
              for c in cases]
    return sum(errors) / len(errors), max(errors)


def main() -> None:
    path, name = sys.argv[1], sys.argv[2]
    cases = [c for c in load_cases(path) if c.system.target == name]
    target = load_target(name)
    for round_ in range(4):
        chosen = choose(cases, target)
        best = error(cases, target, chosen)
        for key, values in GRID.items():
            for value in values:
                trial = with_efficiency(target, **{key: value})
                score = error(cases, trial, chosen)
                if score[0] < best[0]:
                    best, target = score, trial
        print(f"round {round_}: MAE {best[0]:.4f} max {best[1]:.4f} {target.device.efficiency.model_dump()}",
              flush=True)


if __name__ == "__main__":
    main()
