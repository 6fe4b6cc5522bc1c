"""Reproduce every calibrated value from the public validation files (watos.validation.calibrate): fit the
knobs of every target and stack with public runs, print them and the errors they give, and with --write put
them into the shipped YAML files (hw_targets/*.yaml, hw_targets/stacks/*.yaml), whose comments say so.

    python benchmarks/calibrate.py ../shared/validation/public_v2.json [--write] [--owners dgx-h100-80g,...]
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from watos.validation.calibrate import KNOBS, Calibration, fit, predict_with
from watos.validation.cases import load_cases
from watos.validation.report import error_summary

ROOT = Path(__file__).parents[1] / "hw_targets"


def write(calibration: Calibration) -> None:
    """Replace each calibrated number in its YAML file, in place (the key's first occurrence in the block the
    path names; a tier's efficiency on the tier's line), keeping every comment."""
    for knob in KNOBS:
        if knob.name not in calibration.values:
            continue
        path = ROOT / (f"{knob.owner}.yaml" if knob.kind == "target" else f"stacks/{knob.owner}.yaml")
        text = path.read_text()
        value = f"{calibration.values[knob.name]:g}"
        if knob.path[0] == "topology":
            pattern = rf"(name: {re.escape(knob.path[2])}\b.*?\befficiency: )[0-9.eE+-]+"
        else:
            pattern = rf"(\b{re.escape(knob.path[-1])}:\s*)[0-9.eE+-]+"
        updated, count = re.subn(pattern, rf"\g<1>{value}", text, count=1)
        if not count:  # not in the file yet: add it to its block's inline mapping or after its section
            updated = re.sub(r"(efficiency: \{[^}]*)\}", rf"\1, {knob.path[-1]}: {value}}}", text, count=1) \
                if knob.kind == "target" else text.replace(f"{knob.path[0]}:\n", f"{knob.path[0]}:\n  {knob.path[-1]}: {value}\n", 1)
        path.write_text(updated)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", help="a validation file (public_v2.json)")
    parser.add_argument("--owners", help="fit only these targets and stacks (comma-separated)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--write", action="store_true", help="write the values into the shipped YAML files")
    args = parser.parse_args()
    cases = load_cases(args.cases)
    owners = set(args.owners.split(",")) if args.owners else None
    # --owners: the others keep their shipped values; the fitted ones start at their priors, as in a full fit.
    start = Calibration.shipped().without(owners) if owners else Calibration()
    calibration = fit(cases, start, owners=owners, rounds=args.rounds,
                      progress=lambda line: print(line, flush=True)).complete()
    results = predict_with(cases, calibration)
    summary = error_summary(results)
    for r in results:
        if "error" in r:
            print(f"  {r['id']:44s} {r['error']:+7.1%}", file=sys.stderr)
    print(f"mean absolute error {summary['mean_abs_error']:.2%}, max {summary['max_abs_error']:.2%} "
          f"over {summary['cases']} cases")
    for name, value in sorted(calibration.values.items()):
        print(f"{name} = {value:g}")
    if args.write:
        write(calibration)


if __name__ == "__main__":
    main()
