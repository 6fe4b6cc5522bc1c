"""``watos search MODEL --target T``: the fastest training plan for a model on a target, with the baselines."""
from __future__ import annotations

import argparse
import json
from typing import Any

from watos.cli.common import (
    MODEL_HELP,
    TARGET_HELP,
    activity,
    add_csv_flag,
    add_plugin_flag,
    add_routing_flags,
    add_stack_flag,
    checked_stack,
    load_plugins,
    routing_fields,
)
from watos.errors import WatosError

NAME = "search"
PHASES = {"screen": "costing every shape and knob", "considered": "costing the --consider plans",
          "placement": "placing the best on the mesh", "refine": "refining (evolutionary)",
          "baselines": "costing the baselines"}


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        NAME, help="find the fastest training plan for a model on a target, with the baselines",
        description="Search TP/PP/DP, sequence parallelism, ZeRO, micro-batch, interleaving, per-stage "
                    "recomputation (GCMR), placement on the mesh and cross-die memory borrowing for MODEL "
                    "on target T; report the best plan, the runners-up, what limited them, and the "
                    "megatron, cerebras-ws and megatron-gpu baselines on the same problem.")
    p.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    p.add_argument("--target", required=True, metavar="T", help=TARGET_HELP)
    p.add_argument("--seq", type=int, default=4096, metavar="N", help="sequence length (default 4096)")
    p.add_argument("--global-batch", type=int, metavar="N", help="sequences per step (default 16 per device)")
    p.add_argument("--devices", type=int, metavar="N", help="devices of a switched target (a mesh uses all its dies)")
    p.add_argument("--dtype", choices=["bf16", "fp16"], default="bf16")
    p.add_argument("--seed", type=int, default=0, help="seed of the evolutionary refinement (default 0)")
    add_routing_flags(p)
    add_stack_flag(p)
    p.add_argument("--consider", action="append", default=[], metavar="PLAN",
                   help="also evaluate this plan (a plan YAML file, or fields such as tp=4,pp=14,dp=4,ep=4) and "
                        "show its cost; repeatable")
    add_plugin_flag(p)
    p.add_argument("--out", metavar="DIR", help="write report.json, trace.json (Chrome/Perfetto), mesh.png (devices.png on GPUs) "
                                             "and report.html")
    add_csv_flag(p, "every plan the search costed (and every shape it pruned) with its cost")
    p.add_argument("--json", action="store_true", help="print one JSON object (sorted keys)")
    return p


def run(args: argparse.Namespace) -> int:
    import watos
    from watos.plan import make_plan
    from watos.report.csv_rows import SEARCH_COLUMNS, pruned_rows, search_row, write_csv
    from watos.report.plan_tables import print_search

    load_plugins(args)
    target = watos.load_target(args.target)
    if args.seq < 1 or (args.global_batch is not None and args.global_batch < 1):
        raise WatosError("--seq and --global-batch must be positive")
    considered = [_considered_fields(spec) for spec in args.consider]
    rows: list[dict] = []
    with activity(f"tracing {args.model}", "plans costed") as shown:
        problem = watos.make_problem(args.model, target, seq=args.seq, global_batch=args.global_batch,
                                     dtype=args.dtype, devices=args.devices,
                                     routing=make_plan({"routing": routing_fields(args)}).routing,
                                     stack=checked_stack(args))
        best = [0.0]

        def observe(phase: str, plan: Any, outcome: Any) -> None:
            if plan is not None:
                rows.append(search_row(phase, plan, outcome))
                shown.advance()
            if not isinstance(outcome, str) and outcome["fits"]:
                best[0] = max(best[0], outcome["tokens_per_s"])
            shown.say(f"{PHASES[phase]}; best so far {best[0]:,.0f} tokens/s")

        result = watos.search(problem, seed=args.seed, considered=considered, observe=observe)
        if args.out:
            shown.say(f"writing {args.out}/")
            _write_report(problem, result, args.out, args.dtype)
    if args.csv:
        write_csv(args.csv, SEARCH_COLUMNS, pruned_rows(result) + rows)
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        print_search(result, target)
    return 0


def _considered_fields(spec: str) -> dict:
    """``--consider``: a plan file, or comma-separated ``field=value`` pairs (values read as YAML scalars),
    checked as plan fields; the search gives them the problem's global batch and routing model unless the
    plan has its own."""
    import yaml

    from watos.plan import load_plan, make_plan

    if spec.endswith((".yaml", ".yml")):
        return load_plan(spec).model_dump(exclude_unset=True)
    pairs = [item.partition("=") for item in spec.split(",") if item]
    if not pairs or any(not sep or not key for key, sep, _ in pairs):
        raise WatosError(f"--consider {spec!r}: expected a plan YAML file or field=value pairs, e.g. tp=4,pp=14")
    try:
        fields = {key.strip().replace("-", "_"): yaml.safe_load(value) for key, _, value in pairs}
    except yaml.YAMLError:
        raise WatosError(f"--consider {spec!r}: a value is not a YAML scalar") from None
    make_plan(fields, f"--consider {spec}")
    return fields


def _write_report(problem: Any, result: dict, directory: str, dtype: str) -> None:
    """``--out DIR``: report.json (the result and the best plan's devices, links, stages and timeline), trace.json,
    the plan's picture (mesh.png on a wafer, devices.png on GPUs) and report.html, written together or not at
    all."""
    from watos.files import staged_files
    from watos.pipelines import cost_plan
    from watos.plan import make_plan
    from watos.report.build import build_report
    from watos.report.chrome_trace import write_chrome_trace
    from watos.report.html import search_html
    from watos.report.pictures import write_plan_png

    plan = make_plan(result["best"]["plan"])
    costed = cost_plan(problem.lowered(plan.micro_batch), problem.target, plan, dtype=dtype)
    report = {**result, **build_report(costed, problem.target, plan)}
    with staged_files(directory, "--out") as staging:
        (staging / "report.json").write_text(json.dumps(report, sort_keys=True, indent=1) + "\n")
        write_chrome_trace(report, staging / "trace.json")
        picture = write_plan_png(report, staging)
        (staging / "report.html").write_text(search_html(report, {"the plan on the target": staging / picture}))
