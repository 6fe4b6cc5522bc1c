"""``watos faults MODEL --target T --rates 0,0.1,0.2 --samples N``: how much throughput a wafer keeps under
random die and link faults, non-robust against robust plans (:mod:`watos.strategy.faults`)."""
from __future__ import annotations

import argparse
import json
from typing import Any

from watos.cli.common import MODEL_HELP, TARGET_HELP
from watos.errors import WatosError

NAME = "faults"


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        NAME, help="throughput under random die and link faults, non-robust vs robust plans",
        description="Draw SAMPLES seeded fault maps per rate (dies and links fail at that rate, or as --faults "
                    "says), cost the fault-free best plan rerouted (non-robust) and a plan searched again on the "
                    "surviving dies (robust), and report the mean normalised throughput with 95%% bootstrap "
                    "intervals and the share of maps that disconnect the wafer.")
    p.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    p.add_argument("--target", required=True, metavar="T", help=TARGET_HELP)
    p.add_argument("--rates", default="0,0.05,0.1,0.2,0.3,0.35", metavar="R,R,...",
                   help="fault rates, each for dies and links alike (default 0,0.05,0.1,0.2,0.3,0.35)")
    p.add_argument("--faults", metavar="dies=R,links=R", help="one pair of rates instead of --rates")
    p.add_argument("--samples", type=int, default=30, metavar="N", help="fault maps per rate (default 30)")
    p.add_argument("--fault-seed", type=int, default=0, metavar="K", help="seed of the fault maps (default 0)")
    p.add_argument("--seq", type=int, default=4096, metavar="N", help="sequence length (default 4096)")
    p.add_argument("--plot", metavar="FILE.png", help="write the throughput-against-rate picture")
    p.add_argument("--json", action="store_true", help="print one JSON object (sorted keys)")
    return p


def run(args: argparse.Namespace) -> int:
    import watos
    from watos.network.faults import parse_rates
    from watos.strategy.faults import POLICIES, fault_study

    rates = [parse_rates(args.faults)] if args.faults else [(r, r) for r in _rates(args.rates)]
    problem = watos.make_problem(args.model, watos.load_target(args.target), seq=args.seq)
    study = {"model": args.model, **fault_study(problem, rates, args.samples, seed=args.fault_seed)}
    if args.plot:
        from watos.report.fault_plot import write_faults_png
        write_faults_png(study, args.plot, title=f"{args.model} on {args.target}")
    if args.json:
        print(json.dumps(study, sort_keys=True))
        return 0
    print(f"{args.model} on {study['target']}: fault-free best {study['reference_tokens_per_s']:,.0f} tokens/s")
    print("dies  links  disconnected  lost dies  " + "  ".join(f"{p:>22}" for p in POLICIES))
    for row in study["rates"]:
        cells = [f"{row[p]['mean']:.3f} [{row[p]['low']:.3f}, {row[p]['high']:.3f}]" if row[p]["mean"] is not None
                 else "-" for p in POLICIES]
        lost = f"{row['lost_dies_mean']:.1f}" if row["lost_dies_mean"] is not None else "-"
        print(f"{row['dies']:<5} {row['links']:<6} {row['disconnected']:>11.0%}  {lost:>9}  "
              + "  ".join(f"{c:>22}" for c in cells))
    return 0


def _rates(text: str) -> list[float]:
    try:
        rates = [float(r) for r in text.split(",") if r.strip()]
    except ValueError:
        raise WatosError(f"--rates: {text!r} is not a list of numbers") from None
    if not rates or any(not 0 <= r < 1 for r in rates):
        raise WatosError(f"--rates: {text!r} must be rates in [0, 1)")
    return rates
