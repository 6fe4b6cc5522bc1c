"""The ``watos`` command line.

Every user error (a :class:`~watos.errors.WatosError`) is one line on stderr and exit code 2; output
files are written whole or not at all.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .errors import WatosError

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
    from .pass_manager import PassManager, PassTimings, default_pipeline, load_pass_file, make_pipeline
    from .printers import DumpIR, summary
    from .tracer import trace
    from . import load_model

    for plugin in args.plugin:
        load_pass_file(plugin)
    pipeline = make_pipeline(args.passes.split(",")) if args.passes else default_pipeline()
    source = load_model(args.model)
    graph = trace(source, seq_len=args.seq, micro_batch=args.micro_batch, dtype=args.dtype,
                  attention=args.attention, replicate_blocks=not args.full_trace)
    timings = PassTimings()
    instruments: list[Any] = [timings]
    staging = None
    if args.dump_ir:
        staging = Path(tempfile.mkdtemp(prefix=".watos-dump-", dir=Path(args.dump_ir).resolve().parent))
        instruments.append(DumpIR(staging))
    try:
        PassManager(pipeline, instruments).run(graph)
    except BaseException:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
        raise
    if staging is not None:
        _replace_dir(staging, Path(args.dump_ir))
    report = summary(graph)
    elapsed = time.perf_counter() - started
    if args.json:
        if args.timings:
            report["timings"] = {"trace_seconds": elapsed, "passes": timings.seconds}
        print(json.dumps(report, sort_keys=True))
    else:
        _print_trace(report, elapsed, args.dump_ir)
    return 0


def _replace_dir(staging: Path, target: Path) -> None:
    if target.exists():
        if not target.is_dir():
            shutil.rmtree(staging, ignore_errors=True)
            raise WatosError(f"--dump-ir {target}: exists and is not a directory")
        for old in target.glob("[0-9][0-9][0-9]_*"):
            old.unlink()
        for new in staging.iterdir():
            new.replace(target / new.name)
        staging.rmdir()
    else:
        staging.replace(target)


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
    _models_parser(sub)
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
