"""``watos compile MODEL --target T``: cost one training plan of a model on a hardware target."""
from __future__ import annotations

import argparse
import json
from typing import Any

from watos.cli.common import (
    MODEL_HELP,
    TARGET_HELP,
    activity,
    add_plugin_flag,
    add_routing_flags,
    add_stack_flag,
    checked_stack,
    load_plugins,
    routing_fields,
    staged_dumps,
)

NAME = "compile"
PLAN_FLAGS = ("tp", "pp", "dp", "cp", "ep", "zero", "micro_batch", "global_batch", "recompute", "sequence_parallel",
              "interleave", "strategy")


def _recompute_flag(text: str) -> str | tuple[str, ...]:
    policies = tuple(text.split(","))
    unknown = [p for p in policies if p not in ("none", "selective", "full")]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown recompute policy {unknown[0]!r} (none, selective, full)")
    return policies[0] if len(policies) == 1 else policies


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        NAME, help="cost one training plan of a model on a hardware target",
        description="Trace MODEL, split it by the plan (TP/PP/DP/CP, ZeRO, recompute, sequence "
                    "parallelism, interleaving), cost it on TARGET and report step time, tokens/s, MFU, "
                    "HFU, peak memory per device and a breakdown.")
    p.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    p.add_argument("--target", required=True, metavar="T", help=TARGET_HELP)
    p.add_argument("--plan", metavar="PLAN.yaml", help="read the plan from a YAML file (flags override it)")
    p.add_argument("--tp", type=int, help="tensor-parallel degree")
    p.add_argument("--pp", type=int, help="pipeline stages")
    p.add_argument("--dp", type=int, help="data-parallel replicas")
    p.add_argument("--cp", type=int, help="context-parallel degree")
    p.add_argument("--ep", type=int, help="expert-parallel degree (MoE; divides dp and the experts)")
    add_routing_flags(p)
    add_stack_flag(p)
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
    add_plugin_flag(p)
    p.add_argument("--dump-ir", metavar="DIR", help="write NNN_<pass> dumps after every pass")
    p.add_argument("--json", action="store_true", help="print one JSON object (sorted keys)")
    return p


def run(args: argparse.Namespace) -> int:
    import watos
    from watos.plan import load_plan, make_plan
    from watos.report.plan_tables import print_compile

    load_plugins(args)
    target = watos.load_target(args.target)
    fields = load_plan(args.plan).model_dump() if args.plan else {}
    fields.update({k: getattr(args, k) for k in PLAN_FLAGS if getattr(args, k) is not None})
    if (stack := checked_stack(args)) is not None:
        fields["stack"] = stack
    plan = make_plan({**fields, "routing": routing_fields(args, fields)})
    with staged_dumps(args.dump_ir) as instruments, activity(f"tracing, lowering and costing {args.model}"):
        result = watos.compile(args.model, target, plan, seq=args.seq, dtype=args.dtype, instruments=instruments)
    if args.json:
        print(json.dumps(result, sort_keys=True, default=float))
    else:
        print_compile(result, target)
    return 0
