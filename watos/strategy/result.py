"""What a search result says about a plan: its summary row, what holds it back, and how plans are told
apart and ordered (deterministically: by step time, then by the plan's JSON)."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypedDict

from watos.ir.analyses import StepMetrics
from watos.plan import Plan


@dataclass
class Outcome:
    """A plan and its cost."""

    plan: Plan
    cost: StepMetrics


class PlanSummary(TypedDict):
    """The figures a report shows for one plan."""

    plan: dict
    tokens_per_s: float
    step_time_s: float
    mfu: float
    peak_dram_gb_per_die: float
    dram_utilisation: float
    compute_busy: float
    limited_by: str


_LIMITS = {"bubble": "pipeline bubble", "recompute": "recomputation", "tp_comm": "exposed TP communication",
           "ep_comm": "expert all-to-all", "zero_comm": "ZeRO gathers and reductions per micro-batch",
           "pp_comm": "pipeline sends", "dp_exposed": "data-parallel gradient reduction", "optimizer": "optimizer",
           "weight_streaming": "weight streaming"}


class SearchResult(TypedDict, total=False):
    """What ``watos search`` reports: the problem (model, target and stack names, devices, global batch in sequences,
    sequence length in tokens), the best plan and runners-up (:class:`PlanSummary`), every shape or plan
    rejected with why (``limited_by``), how many plans were costed, the ``considered`` plans, the baselines
    by name (a :class:`PlanSummary` with the ``target`` it ran on, or ``{"infeasible": why}``), and for an
    MoE model the routing model assumed (``moe_routing``)."""

    model: str
    target: str
    stack: str
    devices: int
    global_batch: int
    seq: int
    best: PlanSummary
    runners_up: list[PlanSummary]
    rejected: list[dict]
    evaluated: int
    considered: list[dict]
    baselines: dict[str, dict]
    moe_routing: str


def plan_summary(plan: Plan, cost: StepMetrics) -> PlanSummary:
    """The figures a report shows for one plan."""
    stages = cost["stages"]
    busy = cost["breakdown_s"]["compute"] + cost["breakdown_s"]["recompute"]
    return {"plan": plan_json(plan), "tokens_per_s": cost["tokens_per_s"], "step_time_s": cost["step_time_s"],
            "mfu": cost["mfu"], "peak_dram_gb_per_die": cost["peak_memory_bytes_per_device"] / 1e9,
            "dram_utilisation": sum(st["memory"]["total_bytes"] for st in stages)
            / (len(stages) * cost["memory_capacity_bytes_per_device"]),
            "compute_busy": busy / cost["step_time_s"], "limited_by": limited_by(cost)}


def limited_by(cost: StepMetrics) -> str:
    """What holds a plan back most: the largest share of its step that is not compute."""
    parts = {k: v for k, v in cost["breakdown_s"].items() if k not in ("compute",)}
    name, seconds = max(sorted(parts.items()), key=lambda kv: kv[1])
    return f"{_LIMITS.get(name, name)}: {seconds / cost['step_time_s']:.0%} of the step"


def plan_json(plan: Plan) -> dict:
    """A plan as JSON-able fields."""
    return plan.model_dump(mode="json")


def plan_key(plan: Plan) -> str:
    """A total order on plans (their JSON), for deterministic ties."""
    return plan.model_dump_json()


def config_key(plan: Plan) -> tuple:
    """A plan's parallel configuration, whatever its placement."""
    return (plan.tp, plan.pp, plan.dp, plan.ep, plan.zero, plan.micro_batch, plan.sequence_parallel, plan.interleave,
            str(plan.recompute))


def distinct(outcomes: list[Outcome], key: Callable[[Plan], Any] | None = None) -> list[Outcome]:
    """Fastest first, one outcome per ``key`` (default: per plan)."""
    key = key or plan_key
    seen, result = set(), []
    for o in sorted(outcomes, key=lambda o: (o.cost["step_time_s"], plan_key(o.plan))):
        if key(o.plan) not in seen:
            seen.add(key(o.plan))
            result.append(o)
    return result
