"""``watos explore MODEL... --template T``: co-explore wafer architectures and the best strategy on each."""
from __future__ import annotations

import argparse
import json
from typing import Any

from watos.cli.common import MODEL_HELP, activity, add_csv_flag, add_stack_flag, checked_stack
from watos.errors import WatosError

NAME = "explore"


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        NAME, help="co-explore wafer architectures: sweep a hardware template, best strategy per point",
        description="Sweep the variables of a wafer template (hw_targets/templates/), find each point's best "
                    "training strategy for every MODEL, and report the best point and the Pareto fronts of "
                    "throughput against DRAM capacity, power and compute area.")
    p.add_argument("models", nargs="+", metavar="MODEL",
                   help=f"one or more models (throughput: geometric mean); each {MODEL_HELP}")
    p.add_argument("--template", required=True, metavar="T", help="a shipped template name or a YAML file")
    p.add_argument("--space", metavar="SPACE.yaml",
                   help="variable: [values] or {min, max, step} (default: DRAM stacks 1-6 x compute fraction 0.7-0.9)")
    p.add_argument("--objective", choices=["throughput", "tokens-per-joule"], default="throughput")
    p.add_argument("--executor", choices=["local", "ray"], default="local")
    p.add_argument("--workers", type=int, default=1, metavar="N")
    p.add_argument("--ray-address", metavar="ADDR", help="an existing Ray cluster (default: start a local one)")
    p.add_argument("--store", metavar="RESULTS.jsonl", help="append every point here; a rerun skips finished points")
    p.add_argument("--budget", type=int, default=2000, metavar="N",
                   help="grid when the space has at most N points, else N evaluations of an evolutionary search")
    p.add_argument("--seq", type=int, default=4096, metavar="N")
    p.add_argument("--batch-per-die", type=int, default=16, metavar="N", help="sequences per die per step")
    p.add_argument("--dtype", choices=["bf16", "fp16"], default="bf16")
    p.add_argument("--seed", type=int, default=0)
    add_stack_flag(p)
    p.add_argument("--out", metavar="DIR", help="write explore.json, pareto.png and report.html")
    add_csv_flag(p, "every hardware point swept with its figures")
    p.add_argument("--json", action="store_true", help="print one JSON object (sorted keys)")
    return p


def run(args: argparse.Namespace) -> int:
    import watos
    from watos.exploration.sweep import load_space
    from watos.report.csv_rows import explore_rows, write_csv
    from watos.report.plan_tables import print_explore

    template = watos.load_template(args.template)
    space = load_space(args.space, template) if args.space else None
    if args.workers < 1 or args.budget < 1 or args.batch_per_die < 1 or args.seq < 1:
        raise WatosError("--workers, --budget, --batch-per-die and --seq must be positive")
    with activity(f"sweeping {args.template} for {', '.join(args.models)}", "hardware points") as shown:
        planned = [0]

        def progress(done: int | None, total: int | None) -> None:
            if total is None:
                shown.advance()
            else:
                planned[0] += total
                shown.total(planned[0])
                shown.advance(done)

        result = watos.explore(args.template, args.models, space, objective=args.objective, seq=args.seq,
                               dtype=args.dtype, batch_per_die=args.batch_per_die, executor=args.executor,
                               workers=args.workers, ray_address=args.ray_address, store_path=args.store,
                               budget=args.budget, seed=args.seed, stack=checked_stack(args), progress=progress)
        if args.out:
            shown.say(f"writing {args.out}/")
            _write_outputs(result, args.out, args.models)
    if args.csv:
        write_csv(args.csv, *explore_rows(result))
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        print_explore(result)
    return 0


def _write_outputs(result: dict, directory: str, models: list[str]) -> None:
    """``--out DIR``: explore.json, pareto.png and report.html, written together or not at all."""
    from watos.exploration.sweep import FRONTS
    from watos.files import staged_files
    from watos.report.html import explore_html
    from watos.report.pareto_picture import write_pareto_png

    with staged_files(directory, "--out") as staging:
        (staging / "explore.json").write_text(json.dumps(result, sort_keys=True, indent=1) + "\n")
        write_pareto_png([p for p in result["points"] if "infeasible" not in p], list(FRONTS),
                         staging / "pareto.png", title=f"{', '.join(models)} on {result['template']}: "
                                                       f"{result['feasible']} of {result['evaluated']} points feasible")
        (staging / "report.html").write_text(explore_html(result, staging / "pareto.png"))
