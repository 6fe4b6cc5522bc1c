"""The docs/search.md comparison: WATOS's search against the megatron, cerebras-ws and megatron-gpu
baselines for the paper's five models: the dense ones and GShard-137B on the four WATOS wafer
configurations, DeepSeek-V3-671B on the two 4-wafer systems (the paper's Figure-style comparison).

    python benchmarks/wafer_table.py [--models llama-30b,llama3-70b,gpt3-175b,gshard-137b,deepseek-v3-671b] [--json]

Prints a Markdown table (tokens/s, ratios, per-die DRAM use and compute busy) and the geometric and
arithmetic means of the speedups.
"""
from __future__ import annotations

import argparse
import json
import math
import sys

import watos
from watos.strategy.baselines import run_baselines

SEQ = {"llama-30b": 2048, "llama3-70b": 4096, "gpt3-175b": 2048, "gshard-137b": 2048, "deepseek-v3-671b": 4096}
WAFERS = ("watos-config1", "watos-config2", "watos-config3", "watos-config4")
TARGETS = {"deepseek-v3-671b": ("watos-4wafer-1800", "watos-4wafer-400")}


def rows(models: list[str]) -> list[dict]:
    result = []
    for model in models:
        for name in TARGETS.get(model, WAFERS):
            problem = watos.make_problem(model, watos.load_target(name), seq=SEQ.get(model, 2048))
            try:
                found = watos.search(problem)
                best, baselines = found["best"], found["baselines"]
            except watos.WatosError as exc:  # an infeasible design is a row of the table
                best, baselines = {"infeasible": str(exc)}, run_baselines(problem)
            result.append({"model": model, "target": name, "best": best, **baselines})
            print(f"{model} on {name}: {best.get('tokens_per_s', best.get('infeasible'))}", file=sys.stderr, flush=True)
    return result


def _speed(entry: dict) -> float | None:
    return entry.get("tokens_per_s")


def markdown(table: list[dict]) -> str:
    lines = ["| model | wafer | WATOS tok/s | megatron | cerebras-ws | megatron-gpu | vs megatron | vs cerebras-ws "
             "| vs megatron-gpu | DRAM used WATOS / megatron | compute busy WATOS / megatron |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in table:
        if "infeasible" in r["best"]:
            lines.append(f"| {r['model']} | {r['target']} | {r['best']['infeasible']} |" + " |" * 8)
            continue
        best = r["best"]["tokens_per_s"]
        cells = [f"{_speed(r[k]):,.0f}" if _speed(r[k]) else "does not fit" for k in ("megatron", "cerebras-ws", "megatron-gpu")]
        ratios = [f"{best / _speed(r[k]):.2f}x" if _speed(r[k]) else "-" for k in ("megatron", "cerebras-ws", "megatron-gpu")]
        mega = r["megatron"]
        lines.append(f"| {r['model']} | {r['target']} | {best:,.0f} | " + " | ".join(cells + ratios)
                     + f" | {r['best']['dram_utilisation']:.0%} / {mega.get('dram_utilisation', 0):.0%}"
                     + f" | {r['best']['compute_busy']:.0%} / {mega.get('compute_busy', 0):.0%} |")
    for k in ("megatron", "cerebras-ws", "megatron-gpu"):
        ratios = [_speed(r["best"]) / _speed(r[k]) for r in table if _speed(r[k]) and _speed(r["best"])]
        if ratios:
            lines.append(f"\nvs {k}: mean {sum(ratios) / len(ratios):.2f}x, geometric mean "
                         f"{math.exp(sum(map(math.log, ratios)) / len(ratios)):.2f}x over {len(ratios)} pairs")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(SEQ))
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    table = rows(args.models.split(","))
    print(json.dumps(table, sort_keys=True) if args.json else markdown(table))


if __name__ == "__main__":
    main()
