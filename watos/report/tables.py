"""Terminal tables (rich) of every command's result: ``trace``'s summary, ``compile``'s step, ``validate``'s
cases, ``search``'s plans and baselines, ``explore``'s best points. They render the same dicts the commands
print with ``--json``; a pipe gets a wide console so rows do not wrap."""
from __future__ import annotations

import sys
from typing import Any

from rich.console import Console
from rich.table import Table


def _console(width: int = 240) -> Console:
    """The terminal's console, or a ``width``-column one when stdout is not a terminal."""
    return Console() if sys.stdout.isatty() else Console(width=width)


def _key_values(title: str, rows: list[tuple[str, str]], caption: str | None = None) -> Table:
    """A two-column table: names on the left in bold, values right-aligned."""
    table = Table(title=title, show_header=False, caption=caption)
    table.add_column(style="bold")
    table.add_column(justify="right")
    for name, value in rows:
        table.add_row(name, value)
    return table


def _with_columns(table: Table, columns: tuple[str, ...], left: tuple[str, ...]) -> Table:
    for column in columns:
        table.add_column(column, justify="left" if column in left else "right")
    return table


def _routing_caption(result: dict[str, Any]) -> str | None:
    return f"MoE routing model: {result['moe_routing']}" if "moe_routing" in result else None


def describe_plan(plan: dict[str, Any]) -> str:
    """A plan in one short line (``tp 4 pp 14 dp 1 zero 1 mb 1 sp rc f/f/n compact borrow 6 GB``)."""
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
    Console().print(_key_values(f"watos trace {report['model']}  (seq {report['seq_len']}, micro-batch "
                                f"{report['micro_batch']}, {report['dtype']})", rows))
    if dump_dir:
        Console().print(f"IR dumps in {dump_dir}/")


def print_compile(result: dict[str, Any]) -> None:
    """``watos compile``: one plan's step time, throughput, utilisation, memory and breakdown."""
    plan = result["plan"]
    experts = f", ep {plan['ep']}" if plan["ep"] > 1 else ""
    rows = [("step time", f"{result['step_time_s']:.4g} s"),
            ("tokens/s (per device)", f"{result['tokens_per_s']:,.0f} ({result['tokens_per_s_per_device']:,.1f})"),
            ("MFU / HFU", f"{result['mfu']:.1%} / {result['hfu']:.1%}"),
            ("peak memory per device", f"{result['peak_memory_bytes_per_device'] / 1e9:.1f} GB of "
                                       f"{result['memory_capacity_bytes_per_device'] / 1e9:.1f} GB"
                                       + ("" if result["fits"] else "  (does not fit)"))]
    rows += [(f"  {name}", f"{seconds:.4g} s") for name, seconds in result["breakdown_s"].items()]
    Console().print(_key_values(
        f"watos compile {result['model']} on {result['target']} under {result['stack']}  (tp {plan['tp']}, pp {plan['pp']}, dp {plan['dp']}"
        f"{experts}, cp {plan['cp']}, micro-batch {plan['micro_batch']}, recompute {plan['recompute']})",
        rows, _routing_caption(result)))


def print_validate(result: dict[str, Any], path: str) -> None:
    """``watos validate``: predicted against measured throughput and memory, case by case; the errors overall,
    per framework and per hardware class; the plan orders per source; leave-one-source-out."""
    table = _with_columns(Table(title=f"watos validate {path}  (tokens/s per device; peak memory GiB per device)"),
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
    console = _console(220)
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


def print_search(result: dict[str, Any]) -> None:
    """``watos search``: the best plan, runners-up, considered plans and baselines, with what limits each."""
    table = _with_columns(
        Table(title=f"watos search {result['model']} on {result['target']} under {result['stack']}  "
                    f"({result['devices']} devices, "
                    f"global batch {result['global_batch']} x {result['seq']} tokens)", caption=_routing_caption(result)),
        ("strategy", "plan", "tokens/s", "vs megatron", "MFU", "peak DRAM GB/die", "DRAM used", "compute busy",
         "limited by"), ("strategy", "plan", "limited by"))
    baselines = result.get("baselines", {})
    megatron = baselines.get("megatron", {}).get("tokens_per_s")
    rows = [("WATOS best", result["best"])] + [(f"  runner-up {i + 1}", r) for i, r in enumerate(result["runners_up"])]
    rows += [("considered", r) for r in result["considered"]]
    rows += list(baselines.items())
    for name, r in rows:
        if "infeasible" in r:
            table.add_row(name, r["infeasible"], *[""] * 7)
            continue
        if "tokens_per_s" not in r:  # a considered plan that cannot run
            table.add_row(name, describe_plan(r["plan"]), *[""] * 6, r["limited_by"])
            continue
        table.add_row(name, describe_plan(r["plan"]), f"{r['tokens_per_s']:,.0f}",
                      f"{r['tokens_per_s'] / megatron:.2f}x" if megatron else "-", f"{r['mfu']:.1%}",
                      f"{r['peak_dram_gb_per_die']:.1f}", f"{r['dram_utilisation']:.0%}", f"{r['compute_busy']:.0%}",
                      r["limited_by"])
    _console().print(table)


def print_explore(result: dict[str, Any]) -> None:
    """``watos explore``: the ten best hardware points by the objective, and the Pareto fronts."""
    objective = "throughput" if result["objective"] == "throughput" else "tokens_per_joule"
    ranked = sorted((p for p in result["points"] if "infeasible" not in p), key=lambda p: -p[objective])
    table = _with_columns(
        Table(title=f"watos explore {', '.join(result['models'])} on {result['template']}  ({result['evaluated']} "
                    f"points, {result['feasible']} feasible; best 10 by {result['objective']})"),
        ("point", "dies", "TFLOPS/die", "DRAM GB/die", "tokens/s", "tokens/J", "power kW", "strategy"),
        ("point", "strategy"))
    for p in ranked[:10]:
        d = p["derived"]
        plans = "; ".join(describe_plan(r["plan"]) for r in p["results"].values())
        table.add_row(" ".join(f"{k}={v:g}" for k, v in sorted(p["point"].items())), str(d["dies"]),
                      f"{d['peak_tflops']:.0f}", f"{d['dram_gb']:g}", f"{p['throughput']:,.0f}",
                      f"{p['tokens_per_joule']:.3g}", f"{p['power_w'] / 1e3:.1f}", plans)
    console = _console()
    console.print(table)
    for name, front in result["pareto"].items():
        console.print(f"Pareto {name.replace('_', ' ')}: " + ", ".join(
            " ".join(f"{k}={v:g}" for k, v in sorted(p["point"].items())) for p in front))


def print_passes(passes: list[type]) -> None:
    """``watos passes``: every registered pass with its stage, what it requires and provides, and its options."""
    table = _with_columns(Table(title="watos passes  (shipped passes in pipeline order within each stage; a "
                                      "user's pass joins its stage after the passes providing what it requires)"),
                          ("stage", "pass", "requires", "provides", "options"),
                          ("stage", "pass", "requires", "provides", "options"))
    for cls in passes:
        options = "\n".join(f"{name}: {_type_name(field.annotation)} = {_default(field)}"
                            + (f"  {field.description}" if field.description else "")
                            for name, field in cls.Config.model_fields.items())
        table.add_row(cls.stage, cls.name, ", ".join(sorted(cls.requires)) or "-",
                      ", ".join(sorted(cls.provides)) or "-", options or "-")
    _console(160).print(table)


def _type_name(annotation: Any) -> str:
    plain = isinstance(annotation, type) and not getattr(annotation, "__args__", None)
    return annotation.__name__ if plain else str(annotation).replace("typing.", "").replace("watos.hardware.target.", "")


def _default(field: Any) -> str:
    return "required" if field.is_required() else repr(field.default)
