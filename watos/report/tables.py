"""Terminal tables (rich) of ``trace``'s summary, ``validate``'s cases and ``passes``, and what the plan tables
(:mod:`watos.report.plan_tables`) share. They render the same dicts the commands print with ``--json``; a pipe
gets a wide console so rows do not wrap."""
from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.table import Table


def console_for(width: int = 240) -> Console:
    """The terminal's console, or a ``width``-column one when stdout is not a terminal."""
    return Console() if sys.stdout.isatty() else Console(width=width)


def key_values(title: str, rows: list[tuple[str, str]], caption: str | None = None) -> Table:
    """A two-column table: names on the left in bold, values right-aligned."""
    table = Table(title=title, show_header=False, caption=caption)
    table.add_column(style="bold")
    table.add_column(justify="right")
    for name, value in rows:
        table.add_row(name, value)
    return table


def with_columns(table: Table, columns: tuple[str, ...], left: tuple[str, ...]) -> Table:
    """``table`` with ``columns`` added, those in ``left`` left-aligned and the rest right-aligned."""
    for column in columns:
        table.add_column(column, justify="left" if column in left else "right")
    return table


def routing_caption(result: dict[str, Any]) -> str | None:
    """The MoE routing model a result assumed, as a table caption (None for a dense model)."""
    return f"MoE routing model: {result['moe_routing']}" if "moe_routing" in result else None


def print_trace(report: dict[str, Any], elapsed: float, dump_dir: str | None) -> None:
    """``watos trace``: parameters, blocks, ops, FLOPs and saved activations of one micro-batch."""
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
    Console().print(key_values(f"watos trace {report['model']}  (seq {report['seq_len']}, micro-batch "
                                f"{report['micro_batch']}, {report['dtype']})", rows))
    if dump_dir:
        Console().print(f"IR dumps in {dump_dir}/")


def print_validate(result: dict[str, Any], path: str) -> None:
    """``watos validate``: predicted against measured throughput and memory, case by case; the errors overall,
    per framework and per hardware class; the plan orders per source; leave-one-source-out."""
    table = with_columns(Table(title=f"watos validate {path}  (tokens/s per device; peak memory GiB per device)"),
                          ("case", "framework", "predicted", "measured", "error", "memory predicted", "memory measured",
                           "chosen"), ("case", "framework", "chosen"))
    for case in result["cases"]:
        measured_memory = case["measured_peak_memory_gib_per_device"]
        if case["status"] == "target not available":
            table.add_row(case["id"], case["framework"], "target not available", f"{case['measured_tokens_per_s_per_device']:,.2f}",
                          *[""] * 4)
            continue
        chosen = " ".join(f"{k}={v}" for k, v in case.get("chosen", {}).items()) or case["status"]
        table.add_row(case["id"], case["framework"], f"{case['predicted_tokens_per_s_per_device']:,.2f}",
                      f"{case['measured_tokens_per_s_per_device']:,.2f}", f"{case['error']:+.1%}",
                      f"{case['predicted_peak_memory_gib_per_device']:.1f}",
                      "-" if measured_memory is None else f"{measured_memory:.1f}", chosen)
    console = console_for(220)
    console.print(table)
    console.print(f"{result['predicted']} cases predicted ({result['misses']} predicted not to fit), "
                  f"{result['not_available']} without a target: mean absolute error {result['mean_abs_error']:.2%}, "
                  f"max {result['max_abs_error']:.2%}")
    for title, key in (("framework", "by_framework"), ("hardware", "by_hardware")):
        console.print(f"by {title}: " + ", ".join(f"{name} {s['mean_abs_error']:.1%} (max {s['max_abs_error']:.1%}, "
                                                   f"{s['cases']})" for name, s in result[key].items()))
    for r in result["rankings"]:
        console.print(f"order {'agrees' if r['agrees'] else 'DIFFERS'}: {r['source']} {r['model']} on {r['target']}: "
                      f"measured {' > '.join(r['measured_order'])}; predicted {' > '.join(r['predicted_order'])}")
    if "leave_one_source_out" in result:
        held = result["leave_one_source_out"]
        console.print(f"leave-one-source-out: mean absolute error {held['mean_abs_error']:.2%}, "
                      f"max {held['max_abs_error']:.2%} over {held['cases']} cases")


def print_passes(passes: list[type]) -> None:
    """``watos passes``: every registered pass with its stage, what it requires and provides, and its options."""
    table = with_columns(Table(title="watos passes  (shipped passes in pipeline order within each stage; a "
                                      "user's pass joins its stage after the passes providing what it requires)"),
                          ("stage", "pass", "requires", "provides", "options"),
                          ("stage", "pass", "requires", "provides", "options"))
    for cls in passes:
        options = "\n".join(f"{name}: {_type_name(field.annotation)} = {_default(field)}"
                            + (f"  {field.description}" if field.description else "")
                            for name, field in cls.Config.model_fields.items())
        table.add_row(cls.stage, cls.name, ", ".join(sorted(cls.requires)) or "-",
                      ", ".join(sorted(cls.provides)) or "-", options or "-")
    console_for(160).print(table)


def _type_name(annotation: Any) -> str:
    plain = isinstance(annotation, type) and not getattr(annotation, "__args__", None)
    return annotation.__name__ if plain else str(annotation).replace("typing.", "").replace("watos.hardware.target.", "")


def _default(field: Any) -> str:
    return "required" if field.is_required() else repr(field.default)
