"""How reports name things: a plan in one short line, a picture's title, and the quantities a sweep
plots, with their units."""
from __future__ import annotations

from typing import Any

from watos.hardware.target import Mesh2D, Target

QUANTITIES = {"throughput": ("throughput", "tokens/s", 1.0), "tokens_per_joule": ("energy efficiency", "tokens/J", 1.0),
              "dram_capacity_gb": ("total DRAM", "GB", 1.0), "power_w": ("power", "kW", 1e-3),
              "compute_area_mm2": ("compute area", "mm²", 1.0)}
"""A sweep's plotted quantities: key → (name, unit, scale from the stored value to the unit)."""


def quantity(key: str) -> tuple[str, float]:
    """An axis label with its unit (``power (kW)``) and the factor from the stored value to that unit."""
    name, unit, scale = QUANTITIES.get(key, (key.replace("_", " "), "", 1.0))
    return (f"{name} ({unit})" if unit else name), scale


def device_noun(target: Target) -> str:
    """What one device of ``target`` is called: a die of a wafer's mesh, a whole wafer of a system that streams
    its weights (Cerebras CS), or a GPU."""
    if isinstance(target.topology, Mesh2D):
        return "die"
    return "wafer" if target.weight_streaming is not None else "GPU"


def describe_plan(plan: dict[str, Any]) -> str:
    """A plan in one short line (``tp 4 pp 14 dp 1 zero 1 mb 1 sp rc f/f/n compact borrow 6 GB``)."""
    if plan["strategy"] == "weight-streaming":
        return f"weight streaming, dp {plan['dp']}, mb {plan['micro_batch']}, recompute {plan['recompute']}"
    recompute = plan["recompute"] if isinstance(plan["recompute"], str) else "/".join(p[0] for p in plan["recompute"])
    experts = f" ep {plan['ep']}" if plan["ep"] > 1 else ""
    context = f" cp {plan['cp']}" if plan.get("cp", 1) > 1 else ""
    parts = [f"tp {plan['tp']} pp {plan['pp']} dp {plan['dp']}{context}{experts} zero {plan['zero']} mb {plan['micro_batch']}"]
    parts += ["sp"] if plan["sequence_parallel"] else []
    parts += [f"v{plan['interleave']}"] if plan["interleave"] > 1 else []
    parts += [f"rc {recompute}", plan["placement"]]
    parts += [f"borrow {sum(b['gb'] for b in plan['borrow']):.0f} GB"] if plan["borrow"] else []
    return " ".join(parts)


def report_title(report: dict[str, Any]) -> str:
    """``MODEL on TARGET: PLAN, step T s`` for a report of :func:`watos.report.build.build_report`."""
    return (f"{report['model']} on {report['target']}: {describe_plan(report['plan'])}, "
            f"step {report['step_time_s']:.4g} s")
