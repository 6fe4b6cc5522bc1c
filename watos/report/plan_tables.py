"""Terminal tables (rich) of plans: ``compile``'s step, ``search``'s plans and baselines, ``explore``'s best
points. They fit the console: from :data:`WIDE` columns every figure has its own column; narrower (down to 80
columns) a plan and what limits it share a cell over two lines and the secondary figures are left out (they
are in ``--json`` and ``--csv``). Every number carries its unit; a device is named as its target names it
(die, GPU, wafer), and the memory a plan may use is explained (DRAM plus SRAM)."""
from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from watos.hardware.target import Target
from watos.report.labels import describe_plan, device_noun
from watos.report.tables import console_for, key_values, routing_caption, with_columns

WIDE = 140
"""Console columns from which the search and explore tables show every figure in its own column."""


def capacity_note(target: Target) -> str:
    """What one device of ``target`` offers a plan: its DRAM, its SRAM, and their sum, which plans must fit."""
    d, noun = target.device, device_noun(target)
    return (f"memory a plan may use per {noun}: {d.dram_capacity_gb:g} GB DRAM + {d.sram_capacity_mb / 1e3:.3g} GB "
            f"SRAM = {d.memory_capacity_bytes / 1e9:.4g} GB")


def print_compile(result: dict[str, Any], target: Target, console: Console | None = None) -> None:
    """``watos compile``: one plan's step time, throughput, utilisation, memory and breakdown."""
    noun, plan, step = device_noun(target), result["plan"], result["step_time_s"]
    borrow = ", ".join(f"stage {b['sender']} → {b['helper']}: {b['gb']:.1f} GB" for b in plan["borrow"]) or "none"
    rows = [("plan", describe_plan(plan)), ("placement", plan["placement"]), ("borrowing", borrow),
            ("step time", f"{step:.4g} s"),
            ("tokens/s", f"{result['tokens_per_s']:,.0f} ({result['tokens_per_s_per_device']:,.1f} per {noun})"),
            ("MFU / HFU", f"{result['mfu']:.1%} / {result['hfu']:.1%}"),
            (f"peak memory per {noun}", f"{result['peak_memory_bytes_per_device'] / 1e9:.1f} GB of "
                                        f"{result['memory_capacity_bytes_per_device'] / 1e9:.4g} GB"
                                        + ("" if result["fits"] else "  (does not fit)"))]
    rows += [(f"  {name}", f"{seconds:.4g} s ({seconds / step:.0%})") for name, seconds in result["breakdown_s"].items()
             if seconds > 0]
    caption = "\n".join(filter(None, [capacity_note(target), routing_caption(result)]))
    (console or console_for()).print(key_values(
        f"watos compile {result['model']} on {result['target']} under {result['stack']}", rows, caption))


def print_search(result: dict[str, Any], target: Target, console: Console | None = None) -> None:
    """``watos search``: the best plan, runners-up, considered plans and baselines, with what limits each."""
    console = console or console_for()
    noun, wide = device_noun(target), console.width >= WIDE
    title = (f"watos search {result['model']} on {result['target']} under {result['stack']}  ({result['devices']} "
             f"{noun}s, global batch {result['global_batch']} x {result['seq']} tokens)")
    notes = [capacity_note(target), routing_caption(result)]
    if any(r.get("target", result["target"]) != result["target"] for r in result.get("baselines", {}).values()):
        notes.append("megatron-gpu runs on GPUs of equal peak: its memory is per GPU")
    table = Table(title=title, caption="\n".join(filter(None, notes)))
    memory = f"peak memory GB/{noun}"
    if wide:
        with_columns(table, ("strategy", "plan", "tokens/s", "vs megatron", "MFU", memory, "DRAM used", "compute busy",
                             "limited by"), ("strategy", "plan", "limited by"))
    else:
        with_columns(table, ("", "plan / what limits it", "tokens/s", "MFU", f"GB/{noun}"), ("", "plan / what limits it"))
    baselines = result.get("baselines", {})
    megatron = baselines.get("megatron", {}).get("tokens_per_s")
    rows = [("WATOS best", result["best"])] + [(f"runner-up {i + 1}", r) for i, r in enumerate(result["runners_up"])]
    rows += [("considered", r) for r in result["considered"]] + list(baselines.items())
    for name, r in rows:
        if "infeasible" in r or "tokens_per_s" not in r:  # a baseline or considered plan that cannot run
            why = r.get("infeasible") or r["limited_by"]
            plan = describe_plan(r["plan"]) if "plan" in r else ""
            cells = [plan, "", "", "", "", "", "", why] if wide else [f"{plan}\n{why}".strip(), "", "", ""]
            table.add_row(name, *cells)
            continue
        figures = [f"{r['tokens_per_s']:,.0f}", f"{r['mfu']:.1%}", f"{r['peak_dram_gb_per_die']:.1f}"]
        if wide:
            table.add_row(name, describe_plan(r["plan"]), figures[0], f"{r['tokens_per_s'] / megatron:.2f}x" if megatron
                          else "-", figures[1], figures[2], f"{r['dram_utilisation']:.0%}", f"{r['compute_busy']:.0%}",
                          r["limited_by"])
        else:
            table.add_row(name, f"{describe_plan(r['plan'])}\n[dim]{r['limited_by']}[/dim]", *figures)
    console.print(table)


def print_explore(result: dict[str, Any], console: Console | None = None) -> None:
    """``watos explore``: the ten best hardware points by the objective, and the Pareto fronts."""
    console = console or console_for()
    wide = console.width >= WIDE
    objective = "throughput" if result["objective"] == "throughput" else "tokens_per_joule"
    ranked = sorted((p for p in result["points"] if "infeasible" not in p), key=lambda p: -p[objective])
    table = Table(title=f"watos explore {', '.join(result['models'])} on {result['template']}  ({result['evaluated']} "
                        f"points, {result['feasible']} feasible; best 10 by {result['objective']})")
    if wide:
        with_columns(table, ("point", "dies", "TFLOPS/die", "DRAM GB/die", "tokens/s", "tokens/J", "power kW",
                             "strategy"), ("point", "strategy"))
    else:
        with_columns(table, ("point / strategy", "dies", "tokens/s", "tokens/J", "kW"), ("point / strategy",))
    for p in ranked[:10]:
        d = p["derived"]
        point = " ".join(f"{k}={v:g}" for k, v in sorted(p["point"].items()))
        plans = "; ".join(describe_plan(r["plan"]) for r in p["results"].values())
        figures = [f"{p['throughput']:,.0f}", f"{p['tokens_per_joule']:.3g}", f"{p['power_w'] / 1e3:.1f}"]
        if wide:
            table.add_row(point, str(d["dies"]), f"{d['peak_tflops']:.0f}", f"{d['dram_gb']:g}", *figures, plans)
        else:
            table.add_row(f"{point}\n[dim]{plans}[/dim]", str(d["dies"]), *figures)
    console.print(table)
    for name, front in result["pareto"].items():
        console.print(f"Pareto {name.replace('_', ' ')}: " + ", ".join(
            " ".join(f"{k}={v:g}" for k, v in sorted(p["point"].items())) for p in front))
