"""``watos trace MODEL``: trace a model's training step and report its graph."""
from __future__ import annotations

import argparse
import json
import time
from typing import Any

from watos.cli.common import MODEL_HELP, add_plugin_flag, load_plugins, staged_dumps

NAME = "trace"


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        NAME, help="trace a model's training step and report its graph",
        description="Trace the joint forward+backward training step of MODEL on fake tensors (no "
                    "weights, no network) and report parameters, blocks, ops, FLOPs per step and "
                    "saved-activation bytes per block per micro-batch.")
    p.add_argument("model", metavar="MODEL", help=MODEL_HELP)
    p.add_argument("--seq", type=int, default=2048, metavar="N", help="sequence length, tokens")
    p.add_argument("--micro-batch", type=int, default=1, metavar="N", help="sequences per micro-batch")
    p.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default="bf16",
                   help="training dtype of activations and weights")
    p.add_argument("--attention", choices=["sdpa", "eager"], default="sdpa",
                   help="attention implementation to trace: sdpa (one flash-attention op) or eager (matmul-softmax-matmul)")
    p.add_argument("--full-trace", action="store_true",
                   help="trace every transformer block instead of one per distinct structure")
    p.add_argument("--passes", metavar="A,B,...",
                   help="run exactly these registered passes, in order (default: the import pipeline)")
    add_plugin_flag(p)
    p.add_argument("--dump-ir", metavar="DIR",
                   help="write NNN_<pass>.txt/.json/.dot after every pass into DIR")
    p.add_argument("--json", action="store_true", help="print one JSON object (sorted keys)")
    p.add_argument("--timings", action="store_true",
                   help="include wall times in --json output (which is otherwise deterministic)")
    return p


def run(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    import watos
    from watos.ir.instruments import PassTimings
    from watos.ir.pass_manager import make_pipeline
    from watos.ir.printers import summary
    from watos.pipelines import import_passes
    from watos.report.tables import print_trace

    load_plugins(args)
    passes = make_pipeline(args.passes.split(",")) if args.passes else import_passes()
    source = watos.load_model(args.model)
    timings = PassTimings()
    with staged_dumps(args.dump_ir) as dumps:
        graph = watos.trace(source, seq_len=args.seq, micro_batch=args.micro_batch, dtype=args.dtype,
                            attention=args.attention, replicate_blocks=not args.full_trace, passes=passes,
                            instruments=[timings, *dumps])
    report = summary(graph)
    elapsed = time.perf_counter() - started
    if args.json:
        if args.timings:
            report["timings"] = {"trace_seconds": elapsed, "passes": timings.seconds}
        print(json.dumps(report, sort_keys=True))
    else:
        print_trace(report, elapsed, args.dump_ir)
    return 0
