"""The ``watos`` command line.

Every user error (a :class:`~watos.errors.WatosError`) is one line on stderr and exit code 2; output
files are written whole or not at all.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

from watos.errors import WatosError

EXIT_USER_ERROR = 2


def _trace_parser(sub: Any) -> None:
    p = sub.add_parser(
        "trace", help="trace a model's training step and report its graph",
        description="Trace the joint forward+backward training step of MODEL on fake tensors (no "
                    "weights, no network) and report parameters, blocks, ops, FLOPs per step and "
                    "saved-activation bytes per block per micro-batch.")
    p.add_argument("model", metavar="MODEL",
                   help="a shipped model name (see `watos models`), a Hugging Face config.json, "
                        "path/to/file.py:factory or package.module:attr returning an nn.Module")
    p.add_argument("--seq", type=int, default=2048, metavar="N", help="sequence length (default 2048)")
    p.add_argument("--micro-batch", type=int, default=1, metavar="N", help="micro-batch size (default 1)")
    p.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default="bf16",
                   help="training dtype of activations and weights (default bf16)")
    p.add_argument("--attention", choices=["sdpa", "eager"], default="sdpa",
                   help="transformers attention implementation to trace (default sdpa)")
    p.add_argument("--full-trace", action="store_true",
                   help="trace every transformer block instead of one per distinct structure")
    p.add_argument("--passes", metavar="A,B,...",
                   help="run exactly these registered passes, in order (default: the default pipeline)")
    p.add_argument("--plugin", action="append", default=[], metavar="FILE.py",
                   help="import FILE.py first so the passes it registers join the pipeline (repeatable)")
    p.add_argument("--dump-ir", metavar="DIR",
                   help="write NNN_<pass>.txt/.json/.dot after every pass into DIR")
    p.add_argument("--json", action="store_true", help="print one JSON object (sorted keys)")
    p.add_argument("--timings", action="store_true",
                   help="include wall times in --json output (which is otherwise deterministic)")
    p.set_defaults(run=_run_trace)


def _run_trace(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    from watos import load_model
    from watos.ir.pass_manager import (
        PassManager,
        PassTimings,
        default_pipeline,
        load_pass_file,
        make_pipeline,
    )
    from watos.ir.printers import summary
    from watos.frontend.trace import trace

    for plugin in args.plugin:
        load_pass_file(plugin)
    pipeline = make_pipeline(args.passes.split(",")) if args.passes else default_pipeline()
    source = load_model(args.model)
    graph = trace(source, seq_len=args.seq, micro_batch=args.micro_batch, dtype=args.dtype,
                  attention=args.attention, replicate_blocks=not args.full_trace)
    timings = PassTimings()
    with _staged_dumps(args.dump_ir) as dumps:
        PassManager(pipeline, [timings, *dumps]).run(graph)
    report = summary(graph)
    elapsed = time.perf_counter() - started
    if args.json:
        if args.timings:
            report["timings"] = {"trace_seconds": elapsed, "passes": timings.seconds}
        print(json.dumps(report, sort_keys=True))
    else:
        _print_trace(report, elapsed, args.dump_ir)
    return 0


def _print_trace(report: dict[str, Any], elapsed: float, dump_dir: str | None) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"watos trace {report['model']}  (seq {report['seq_len']}, micro-batch "
                        f"{report['micro_batch']}, {report['dtype']})", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    rows = [
        ("parameters", f"{report['parameters']:,}"),
        ("transformer blocks", f"{report['blocks']} ({report['traced_blocks']} traced, "
                               f"{len(report['block_groups'])} distinct)"),
        ("ops per step", f"{report['ops']:,} ({report['traced_ops']:,} traced)"),
        ("forward FLOPs / step", f"{report['forward_flops']:.4e}"),
        ("backward FLOPs / step", f"{report['backward_flops']:.4e}"),
        ("activation bytes / block / micro-batch",
         f"{report['activation_bytes_per_block']:,} ({report['activation_accounting']} kernels; "
         f"{report['activation_bytes_per_block_as_traced']:,} as traced)"),
        ("trace time", f"{elapsed:.2f} s"),
    ]
    for name, value in rows:
        table.add_row(name, value)
    Console().print(table)
    if dump_dir:
        Console().print(f"IR dumps in {dump_dir}/")


def _compile_parser(sub: Any) -> None:
    p = sub.add_parser(
        "compile", help="cost one training plan of a model on a hardware target",
        description="Trace MODEL, split it by the plan (TP/PP/DP/CP, ZeRO, recompute, sequence "
                    "parallelism, interleaving), cost it on TARGET and report step time, tokens/s, MFU, "
                    "HFU, peak memory per device and a breakdown.")
    p.add_argument("model", metavar="MODEL", help="as for `watos trace`")
    p.add_argument("--target", required=True, metavar="T", help="a shipped target (`watos targets`) or a YAML file")
    p.add_argument("--plan", metavar="PLAN.yaml", help="read the plan from a YAML file (flags override it)")
    p.add_argument("--tp", type=int, help="tensor-parallel degree")
    p.add_argument("--pp", type=int, help="pipeline stages")
    p.add_argument("--dp", type=int, help="data-parallel replicas")
    p.add_argument("--cp", type=int, help="context-parallel degree")
    p.add_argument("--ep", type=int, help="expert-parallel degree (MoE; divides dp and the experts)")
    _add_routing_flags(p)
    p.add_argument("--zero", type=int, choices=[0, 1, 2, 3], help="ZeRO stage")
    p.add_argument("--micro-batch", type=int, help="sequences per micro-batch")
    p.add_argument("--global-batch", type=int, help="sequences per optimizer step")
    p.add_argument("--recompute", type=_recompute_flag, metavar="POLICY",
                   help="none | selective | full, or one per pipeline stage separated by commas")
    p.add_argument("--sequence-parallel", action="store_true", default=None)
    p.add_argument("--interleave", type=int, help="model chunks per pipeline stage (interleaved 1F1B)")
    p.add_argument("--strategy", choices=["3d", "weight-streaming"])
    p.add_argument("--seq", type=int, default=2048, metavar="N", help="sequence length (default 2048)")
    p.add_argument("--dtype", choices=["bf16", "fp16"], default="bf16")
    p.add_argument("--dump-ir", metavar="DIR", help="write NNN_<pass> dumps after every pass")
    p.add_argument("--json", action="store_true", help="print one JSON object (sorted keys)")
    p.set_defaults(run=_run_compile)


def _add_routing_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--routing-skew", type=float, metavar="S",
                   help="MoE routing model: the busiest expert-parallel rank gets (1+S)x the mean tokens (default 0)")
    p.add_argument("--capacity-factor", type=float, metavar="C",
                   help="MoE routing model: a rank accepts at most C x the mean tokens (default: dropless)")


def _routing(args: argparse.Namespace, fields: dict | None = None) -> dict:
    """The plan's ``routing`` fields: those of ``fields`` (a plan file), overridden by the flags."""
    routing = dict((fields or {}).get("routing") or {})
    for flag, name in (("routing_skew", "skew"), ("capacity_factor", "capacity_factor")):
        if getattr(args, flag) is not None:
            routing[name] = getattr(args, flag)
    return routing


def _recompute_flag(text: str) -> str | tuple[str, ...]:
    policies = tuple(text.split(","))
    unknown = [p for p in policies if p not in ("none", "selective", "full")]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown recompute policy {unknown[0]!r} (none, selective, full)")
    return policies[0] if len(policies) == 1 else policies


_PLAN_FLAGS = ("tp", "pp", "dp", "cp", "ep", "zero", "micro_batch", "global_batch", "recompute", "sequence_parallel",
               "interleave", "strategy")


def _run_compile(args: argparse.Namespace) -> int:
    from watos import load_model
    from watos.pipelines import attention_for, cost_plan, lower
    from watos.hardware.target import load_target
    from watos.ir.pass_manager import PassManager, default_pipeline
    from watos.plan import check_plan, load_plan, make_plan, model_limits, routing_note
    from watos.frontend.trace import trace

    target = load_target(args.target)
    fields = load_plan(args.plan).model_dump() if args.plan else {}
    fields.update({k: getattr(args, k) for k in _PLAN_FLAGS if getattr(args, k) is not None})
    plan = make_plan({**fields, "routing": _routing(args, fields)})
    source = load_model(args.model)
    graph = trace(source, seq_len=args.seq, micro_batch=plan.micro_batch, dtype=args.dtype,
                  attention=attention_for(target.fusion))
    check_plan(plan, **model_limits(graph), devices=target.dies)
    with _staged_dumps(args.dump_ir) as instruments:
        PassManager(default_pipeline(), instruments).run(graph)
        lowered = lower(graph, target.fusion, instruments=instruments)
        costed = cost_plan(lowered, target, plan, instruments=instruments, dtype=args.dtype)
    cost = {k: v for k, v in costed.analyses["cost"].items()}
    result = {"model": graph.model.name, "target": target.name, "plan": plan.model_dump(), **cost}
    if note := routing_note(graph, plan.routing):
        result["moe_routing"] = note
    if args.json:
        print(json.dumps(result, sort_keys=True, default=float))
    else:
        _print_compile(result)
    return 0


@contextlib.contextmanager
def _staged_dumps(directory: str | None) -> Iterator[list[Any]]:
    """``--dump-ir DIR``: the DumpIR instrument writing into a staging folder whose dumps replace DIR's
    only if all succeeds (no instrument without DIR)."""
    from watos.ir.printers import DumpIR

    if not directory:
        yield []
        return
    with _staged_files(directory, "--dump-ir", stale="[0-9][0-9][0-9]_*") as staging:
        yield [DumpIR(staging)]


def _print_compile(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    plan = result["plan"]
    experts = f", ep {plan['ep']}" if plan["ep"] > 1 else ""
    table = Table(title=f"watos compile {result['model']} on {result['target']}  (tp {plan['tp']}, pp {plan['pp']}, "
                        f"dp {plan['dp']}{experts}, cp {plan['cp']}, micro-batch {plan['micro_batch']}, recompute "
                        f"{plan['recompute']})", show_header=False,
                  caption=f"MoE routing model: {result['moe_routing']}" if "moe_routing" in result else None)
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_row("step time", f"{result['step_time_s']:.4g} s")
    table.add_row("tokens/s (per device)", f"{result['tokens_per_s']:,.0f} ({result['tokens_per_s_per_device']:,.1f})")
    table.add_row("MFU / HFU", f"{result['mfu']:.1%} / {result['hfu']:.1%}")
    table.add_row("peak memory per device", f"{result['peak_memory_bytes_per_device'] / 1e9:.1f} GB of "
                                             f"{result['memory_capacity_bytes_per_device'] / 1e9:.1f} GB"
                                             + ("" if result["fits"] else "  (does not fit)"))
    for name, seconds in result["breakdown_s"].items():
        table.add_row(f"  {name}", f"{seconds:.4g} s")
    Console().print(table)


def _validate_parser(sub: Any) -> None:
    p = sub.add_parser("validate", help="predict published training runs and report the error",
                       description="Predict every case of a watos-validation-cases/1 file (choosing each knob "
                                   "a case leaves null) and compare with the measured tokens/s per device.")
    p.add_argument("cases", metavar="CASES.json")
    p.add_argument("--json", action="store_true", help="print one JSON object (sorted keys)")
    p.set_defaults(run=_run_validate)


def _run_validate(args: argparse.Namespace) -> int:
    from watos.strategy.validate import validate

    result = validate(args.cases)
    if args.json:
        print(json.dumps(result, sort_keys=True))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"watos validate {args.cases}  (tokens/s per device; peak memory GiB per device)")
    for column in ("case", "predicted", "measured", "error", "memory predicted", "memory measured", "chosen"):
        table.add_column(column, justify="left" if column in ("case", "chosen") else "right")
    for case in result["cases"]:
        chosen = " ".join(f"{k}={v}" for k, v in case["chosen"].items())
        measured_memory = case["measured_peak_memory_gib_per_device"]
        table.add_row(case["id"], f"{case['predicted_tokens_per_s_per_device']:,.2f}",
                      f"{case['measured_tokens_per_s_per_device']:,.2f}", f"{case['error']:+.1%}",
                      f"{case['predicted_peak_memory_gib_per_device']:.1f}",
                      "-" if measured_memory is None else f"{measured_memory:.1f}", chosen)
    console = Console() if sys.stdout.isatty() else Console(width=220)
    console.print(table)
    console.print(f"mean absolute error {result['mean_abs_error']:.2%}, max {result['max_abs_error']:.2%}")
    return 0


def _search_parser(sub: Any) -> None:
    p = sub.add_parser(
        "search", help="find the fastest training plan for a model on a target, with the baselines",
        description="Search TP/PP/DP, sequence parallelism, ZeRO, micro-batch, interleaving, per-stage "
                    "recomputation (GCMR), placement on the mesh and cross-die memory borrowing for MODEL "
                    "on target T; report the best plan, the runners-up, what limited them, and the "
                    "megatron, cerebras-ws and megatron-gpu baselines on the same problem.")
    p.add_argument("model", metavar="MODEL", help="as for `watos trace`")
    p.add_argument("--target", required=True, metavar="T", help="a shipped target (`watos targets`) or a YAML file")
    p.add_argument("--seq", type=int, default=4096, metavar="N", help="sequence length (default 4096)")
    p.add_argument("--global-batch", type=int, metavar="N", help="sequences per step (default 16 per device)")
    p.add_argument("--devices", type=int, metavar="N", help="devices of a switched target (a mesh uses all its dies)")
    p.add_argument("--dtype", choices=["bf16", "fp16"], default="bf16")
    p.add_argument("--seed", type=int, default=0, help="seed of the evolutionary refinement (default 0)")
    _add_routing_flags(p)
    p.add_argument("--consider", action="append", default=[], metavar="PLAN",
                   help="also evaluate this plan (a plan YAML file, or fields such as tp=4,pp=14,dp=4,ep=4) and "
                        "show its cost; repeatable")
    p.add_argument("--out", metavar="DIR", help="write report.json, trace.json (Chrome/Perfetto) and mesh.png")
    p.add_argument("--json", action="store_true", help="print one JSON object (sorted keys)")
    p.set_defaults(run=_run_search)


def _run_search(args: argparse.Namespace) -> int:
    from watos.strategy.baselines import run_baselines
    from watos.pipelines import cost_plan
    from watos.hardware.target import load_target
    from watos.plan import make_plan, routing_note
    from watos.report.build import build_report
    from watos.strategy.search import make_problem, search

    target = load_target(args.target)
    if args.seq < 1 or (args.global_batch is not None and args.global_batch < 1):
        raise WatosError("--seq and --global-batch must be positive")
    problem = make_problem(args.model, target, seq=args.seq, global_batch=args.global_batch, dtype=args.dtype,
                           devices=args.devices, routing=make_plan({"routing": _routing(args)}).routing)
    found = search(problem, seed=args.seed, considered=[_considered_plan(spec, problem) for spec in args.consider])
    result = {"model": problem.traced(1).model.name, "target": target.name, "devices": problem.devices,
              "global_batch": problem.global_batch, "seq": args.seq, **found, "baselines": run_baselines(problem)}
    if note := routing_note(problem.traced(1), problem.routing):
        result["moe_routing"] = note
    if args.out:
        from watos.report.pictures import write_chrome_trace, write_mesh_png

        plan = make_plan(found["best"]["plan"])
        report = {**result, **build_report(cost_plan(problem.lowered(plan.micro_batch), target, plan,
                                                       dtype=args.dtype), target, plan)}
        with _staged_files(args.out, "--out") as staging:
            (staging / "report.json").write_text(json.dumps(report, sort_keys=True, indent=1) + "\n")
            write_chrome_trace(report, staging / "trace.json")
            write_mesh_png(report, staging / "mesh.png")
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        _print_search(result)
    return 0


def _considered_plan(spec: str, problem: Any) -> Any:
    """``--consider``: a plan file, or comma-separated ``field=value`` pairs (values read as YAML scalars);
    the problem's global batch and routing model unless the plan gives its own."""
    import yaml

    from watos.plan import load_plan, make_plan

    if spec.endswith((".yaml", ".yml")):
        fields = load_plan(spec).model_dump(exclude_unset=True)
    else:
        pairs = [item.partition("=") for item in spec.split(",") if item]
        if not pairs or any(not sep or not key for key, sep, _ in pairs):
            raise WatosError(f"--consider {spec!r}: expected a plan YAML file or field=value pairs, e.g. tp=4,pp=14")
        try:
            fields = {key.strip().replace("-", "_"): yaml.safe_load(value) for key, _, value in pairs}
        except yaml.YAMLError:
            raise WatosError(f"--consider {spec!r}: a value is not a YAML scalar") from None
    return make_plan({"global_batch": problem.global_batch, "routing": problem.routing.model_dump(), **fields},
                     f"--consider {spec}")


@contextlib.contextmanager
def _staged_files(directory: str, option: str, stale: str | None = None) -> Iterator[Path]:
    """Files written into a staging folder beside DIR and moved into DIR together, only if all of them
    succeed (``stale``: a glob of DIR's files the new ones replace); nothing is left half-written."""
    target = Path(directory)
    if target.exists() and not target.is_dir():
        raise WatosError(f"{option} {target}: exists and is not a directory")
    target.resolve().parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".watos-", dir=target.resolve().parent))
    try:
        yield staging
        target.mkdir(exist_ok=True)
        for old in target.glob(stale) if stale else ():
            old.unlink()
        for new in staging.iterdir():
            new.replace(target / new.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _print_search(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"watos search {result['model']} on {result['target']}  ({result['devices']} devices, "
                        f"global batch {result['global_batch']} x {result['seq']} tokens)",
                  caption=f"MoE routing model: {result['moe_routing']}" if "moe_routing" in result else None)
    for column in ("strategy", "plan", "tokens/s", "vs megatron", "MFU", "peak DRAM GB/die", "DRAM used",
                   "compute busy", "limited by"):
        table.add_column(column, justify="left" if column in ("strategy", "plan", "limited by") else "right")
    megatron = result["baselines"].get("megatron", {}).get("tokens_per_s")
    rows = [("WATOS best", result["best"])] + [(f"  runner-up {i + 1}", r) for i, r in enumerate(result["runners_up"])]
    rows += [("considered", r) for r in result["considered"]]
    rows += [(name, r) for name, r in result["baselines"].items()]
    for name, r in rows:
        if "infeasible" in r:
            table.add_row(name, r["infeasible"], *[""] * 7)
            continue
        if "tokens_per_s" not in r:  # a considered plan that cannot run
            table.add_row(name, _describe_plan(r["plan"]), *[""] * 6, r["limited_by"])
            continue
        table.add_row(name, _describe_plan(r["plan"]), f"{r['tokens_per_s']:,.0f}",
                      f"{r['tokens_per_s'] / megatron:.2f}x" if megatron else "-", f"{r['mfu']:.1%}",
                      f"{r['peak_dram_gb_per_die']:.1f}", f"{r['dram_utilisation']:.0%}", f"{r['compute_busy']:.0%}",
                      r["limited_by"])
    console = Console() if sys.stdout.isatty() else Console(width=240)
    console.print(table)


def _describe_plan(plan: dict[str, Any]) -> str:
    if plan["strategy"] == "weight-streaming":
        return f"weight streaming, dp {plan['dp']}, mb {plan['micro_batch']}, recompute {plan['recompute']}"
    recompute = plan["recompute"] if isinstance(plan["recompute"], str) else "/".join(p[0] for p in plan["recompute"])
    experts = f" ep {plan['ep']}" if plan["ep"] > 1 else ""
    parts = [f"tp {plan['tp']} pp {plan['pp']} dp {plan['dp']}{experts} zero {plan['zero']} mb {plan['micro_batch']}"]
    parts += ["sp"] if plan["sequence_parallel"] else []
    parts += [f"v{plan['interleave']}"] if plan["interleave"] > 1 else []
    parts += [f"rc {recompute}", plan["placement"]]
    parts += [f"borrow {sum(b['gb'] for b in plan['borrow']):.0f} GB"] if plan["borrow"] else []
    return " ".join(parts)


def _explore_parser(sub: Any) -> None:
    p = sub.add_parser(
        "explore", help="co-explore wafer architectures: sweep a hardware template, best strategy per point",
        description="Sweep the variables of a wafer template (hw_targets/templates/), find each point's best "
                    "training strategy for every MODEL, and report the best point and the Pareto fronts of "
                    "throughput against DRAM capacity, power and compute area.")
    p.add_argument("models", nargs="+", metavar="MODEL", help="one or more models (throughput: geometric mean)")
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
    p.add_argument("--out", metavar="DIR", help="write explore.json and pareto.png")
    p.add_argument("--json", action="store_true", help="print one JSON object (sorted keys)")
    p.set_defaults(run=_run_explore)


DEFAULT_SPACE = {"dram_stacks_per_die": [1, 2, 3, 4, 5, 6], "compute_fraction": [0.7, 0.8, 0.9]}


def _run_explore(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.progress import Progress

    from watos.explore.sweep import explore, load_space
    from watos.hardware.template import load_template

    template = load_template(args.template)
    space = load_space(args.space, template) if args.space else DEFAULT_SPACE
    if args.workers < 1 or args.budget < 1 or args.batch_per_die < 1 or args.seq < 1:
        raise WatosError("--workers, --budget, --batch-per-die and --seq must be positive")
    with Progress(console=Console(stderr=True), transient=True, disable=not sys.stderr.isatty()) as bar:
        task = bar.add_task("hardware points", total=None)

        def progress(done: int | None, total: int | None) -> None:
            if total is None:
                bar.advance(task)
            else:
                bar.update(task, total=(bar.tasks[0].total or 0) + total, advance=done)

        result = explore(args.template, args.models, space, objective=args.objective, seq=args.seq,
                         dtype=args.dtype, batch_per_die=args.batch_per_die, executor=args.executor,
                         workers=args.workers, ray_address=args.ray_address, store_path=args.store,
                         budget=args.budget, seed=args.seed, progress=progress)
    if args.out:
        from watos.explore.sweep import FRONTS
        from watos.explore.pareto import write_pareto_png

        with _staged_files(args.out, "--out") as staging:
            (staging / "explore.json").write_text(json.dumps(result, sort_keys=True, indent=1) + "\n")
            write_pareto_png([p for p in result["points"] if "infeasible" not in p], list(FRONTS),
                             staging / "pareto.png", title=f"{result['template']}: {', '.join(args.models)}")
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        _print_explore(result)
    return 0


def _print_explore(result: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    objective = "throughput" if result["objective"] == "throughput" else "tokens_per_joule"
    ranked = sorted((p for p in result["points"] if "infeasible" not in p), key=lambda p: -p[objective])
    table = Table(title=f"watos explore {', '.join(result['models'])} on {result['template']}  "
                        f"({result['evaluated']} points, {result['feasible']} feasible; best 10 by {result['objective']})")
    for column in ("point", "dies", "TFLOPS/die", "DRAM GB/die", "tokens/s", "tokens/J", "power kW", "strategy"):
        table.add_column(column, justify="left" if column in ("point", "strategy") else "right")
    for p in ranked[:10]:
        d = p["derived"]
        plans = "; ".join(_describe_plan(r["plan"]) for r in p["results"].values())
        table.add_row(" ".join(f"{k}={v:g}" for k, v in sorted(p["point"].items())), str(d["dies"]),
                      f"{d['peak_tflops']:.0f}", f"{d['dram_gb']:g}", f"{p['throughput']:,.0f}",
                      f"{p['tokens_per_joule']:.3g}", f"{p['power_w'] / 1e3:.1f}", plans)
    console = Console() if sys.stdout.isatty() else Console(width=240)
    console.print(table)
    for name, front in result["pareto"].items():
        console.print(f"Pareto {name.replace('_', ' ')}: " + ", ".join(
            " ".join(f"{k}={v:g}" for k, v in sorted(p["point"].items())) for p in front))


def _targets_parser(sub: Any) -> None:
    p = sub.add_parser("targets", help="list the shipped hardware targets")
    p.set_defaults(run=_run_targets)


def _run_targets(args: argparse.Namespace) -> int:
    from watos.hardware.target import load_target, shipped_targets

    for name in shipped_targets():
        print(f"{name:16s} {load_target(name).description}")
    return 0


def _models_parser(sub: Any) -> None:
    p = sub.add_parser("models", help="list the shipped model configs")
    p.set_defaults(run=_run_models)


def _run_models(args: argparse.Namespace) -> int:
    from watos.models import config_names

    print("\n".join(config_names()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="watos",
        description="WATOS: find how to train a PyTorch LLM fastest on a wafer-scale chip.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _trace_parser(sub)
    _compile_parser(sub)
    _validate_parser(sub)
    _search_parser(sub)
    _explore_parser(sub)
    _models_parser(sub)
    _targets_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``watos`` command; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except WatosError as exc:
        print(f"watos: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("watos: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
