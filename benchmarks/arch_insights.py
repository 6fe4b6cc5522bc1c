"""The paper's architecture insights, as our model sees them (issue #5): throughput of Llama-class
training on watos-config1..4 with recomputation allowed (GCMR) and forbidden, and the best point of a
template sweep around Config 3.

    python benchmarks/arch_insights.py [--models llama-30b,llama3-70b]
"""
from __future__ import annotations

import argparse
import dataclasses

import watos
from watos.exploration.sweep import evaluate_point, grid

CONFIGS = ("watos-config1", "watos-config2", "watos-config3", "watos-config4")
SEQ = {"llama-30b": 2048, "llama3-70b": 4096}
SWEEP = {"dram_stacks_per_die": [1, 2, 3, 4, 5, 6], "compute_fraction": [0.7, 0.8, 0.9]}


def tokens(model: str, target: str, policies: tuple[str, ...]) -> str:
    problem = dataclasses.replace(watos.make_problem(model, watos.load_target(target), seq=SEQ.get(model, 4096)),
                                  recompute_policies=policies)
    try:
        return f"{watos.search(problem, generations=1, baselines=False)['best']['tokens_per_s']:,.0f}"
    except watos.WatosError:
        return "does not fit"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(SEQ))
    args = parser.parse_args()
    models = args.models.split(",")
    print("| model | wafer | tokens/s with recompute (GCMR) | tokens/s without recompute |\n|---|---|---:|---:|")
    for model in models:
        for target in CONFIGS:
            print(f"| {model} | {target} | {tokens(model, target, ('none', 'selective', 'full'))} | "
                  f"{tokens(model, target, ('none',))} |", flush=True)
    print("\n| point | " + " | ".join(models) + " |\n|---|" + "---:|" * len(models))
    for point in grid(SWEEP):
        row = []
        for model in models:
            record = evaluate_point({"template": "watos-wafer", "point": point, "models": [model],
                                     "seq": SEQ.get(model, 4096), "dtype": "bf16", "batch_per_die": 16})
            row.append(f"{record['throughput']:,.0f}" if "throughput" in record else "does not fit")
        print(f"| {' '.join(f'{k}={v:g}' for k, v in sorted(point.items()))} | " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    main()
