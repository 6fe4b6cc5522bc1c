"""The tables of docs/validation.md, from the shipped (calibrated) targets and stacks: every case predicted
against what was measured, the errors per framework and per hardware class, memory, plan orders and, with
--leave-one-source-out, each source predicted by a calibration that never saw it.

    python benchmarks/validation_tables.py ../shared/validation/public_v2.json [--leave-one-source-out]
"""
from __future__ import annotations

import argparse
from collections import Counter

import watos
from watos.validation.calibrate import KNOBS, Calibration, owners_of
from watos.validation.cases import load_cases


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x:+.1%}"


def _summary_table(title: str, groups: dict) -> list[str]:
    lines = [f"| {title} | cases | mean abs error | max abs error |", "|---|---:|---:|---:|"]
    lines += [f"| {name} | {g['cases']} | {g['mean_abs_error']:.1%} | {g['max_abs_error']:.1%} |"
              for name, g in groups.items()]
    return lines


def calibration_table(cases_path: str) -> list[str]:
    """Every calibrated knob: its prior, its shipped value and how many public cases fitted it."""
    fitted_on = Counter(owner for case in load_cases(cases_path) for owner in owners_of(case))
    shipped = Calibration.shipped()
    lines = ["| owner | knob | prior | calibrated | cases it was fitted on |", "|---|---|---:|---:|---:|"]
    lines += [f"| {k.owner} | {'.'.join(k.path)} | {k.prior:g} | {shipped.value(k):g} | {fitted_on[k.owner]} |"
              for k in KNOBS]
    return lines + [""]


def tables(result: dict) -> list[str]:
    """Markdown for one :class:`~watos.validation.report.ValidationResult`."""
    lines = ["| case | framework | hardware | predicted tok/s/dev | measured | error | memory GiB (pred / meas) |"
             " chosen |", "|---|---|---|---:|---:|---:|---|---|"]
    for c in result["cases"]:
        predicted = c.get("predicted_tokens_per_s_per_device")
        memory = c.get("predicted_peak_memory_gib_per_device")
        measured_memory = c.get("measured_peak_memory_gib_per_device")
        chosen = ", ".join(f"{k} {v}" for k, v in sorted(c.get("chosen", {}).items()))
        status = "" if c["status"] == "predicted" else f" ({c['status']})"
        lines.append(f"| {c['id']} | {c['framework']} | {c['hardware']} | "
                     f"{'—' if predicted is None else f'{predicted:,.0f}'} | {c['measured_tokens_per_s_per_device']:,.0f} | "
                     f"{_pct(c.get('error'))}{status} | {'—' if memory is None else f'{memory:.1f}'} / "
                     f"{'—' if measured_memory is None else f'{measured_memory:.1f}'} | {chosen} |")
    lines += ["", f"Over the {result['predicted']} cases predicted ({result['not_available']} without a target): "
              f"mean absolute error {result['mean_abs_error']:.1%}, max {result['max_abs_error']:.1%}, "
              f"{result['misses']} predicted not to fit or failed.", ""]
    lines += _summary_table("framework", result["by_framework"]) + [""]
    lines += _summary_table("hardware", result["by_hardware"]) + [""]
    if result["memory"]:
        lines += ["| memory measured | predicted GiB | measured GiB | error |", "|---|---:|---:|---:|"]
        lines += [f"| {m['id']} | {m['predicted_gib']:.1f} | {m['measured_gib']:.1f} | {m['error']:+.1%} |"
                  for m in result["memory"]] + [""]
    if result["rankings"]:
        lines += ["| source | model | plans | measured order = predicted order |", "|---|---|---:|---|"]
        lines += [f"| {r['source'][:60]} | {r['model']} | {len(r['measured_order'])} | "
                  f"{'yes' if r['agrees'] else 'no: ' + ' > '.join(r['predicted_order'])} |"
                  for r in result["rankings"]] + [""]
    held = result.get("leave_one_source_out")
    if held:
        lines += [f"Leave-one-source-out: mean absolute error {held['mean_abs_error']:.1%}, max "
                  f"{held['max_abs_error']:.1%} over {held['cases']} cases.", "",
                  "| source held out | cases | mean abs error | max abs error |", "|---|---:|---:|---:|"]
        lines += [f"| {source[:70]} | {s['cases']} | {s['mean_abs_error']:.1%} | {s['max_abs_error']:.1%} |"
                  for source, s in held["sources"].items()]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", help="a validation file (public.json, public_v2.json)")
    parser.add_argument("--leave-one-source-out", action="store_true")
    args = parser.parse_args()
    result = watos.validate(args.cases, leave_one_source_out=args.leave_one_source_out)
    print("\n".join(calibration_table(args.cases) + tables(result)))


if __name__ == "__main__":
    main()
