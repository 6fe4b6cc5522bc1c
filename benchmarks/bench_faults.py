"""The docs/faults.md fault study, timed: `watos faults llama3-70b --target watos-config3 --rates 0,0.1,0.2
--samples 30` should finish in under two minutes.

    python benchmarks/bench_faults.py [--samples 30]

Prints the wall time and the mean normalised throughput per rate and policy.
"""
from __future__ import annotations

import argparse
import time

import watos
from watos.strategy.faults import POLICIES, fault_study


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=30)
    args = parser.parse_args()
    start = time.perf_counter()
    problem = watos.make_problem("llama3-70b", watos.load_target("watos-config3"), seq=4096)
    study = fault_study(problem, [(0.0, 0.0), (0.1, 0.1), (0.2, 0.2)], args.samples)
    seconds = time.perf_counter() - start
    for row in study["rates"]:
        print(f"rate {row['dies']}: disconnected {row['disconnected']:.0%}, "
              + ", ".join(f"{p} {row[p]['mean']}" for p in POLICIES))
    print(f"{seconds:.1f} s (goal: under 120 s)")


if __name__ == "__main__":
    main()
