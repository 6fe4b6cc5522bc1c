"""Cost one plan of one model on one target: the costing pipeline on a copy of the traced IR."""
from __future__ import annotations

from typing import Iterable

from .hardware import Target
from .ir import Graph
from .pass_manager import Instrument, Pass, PassManager, registered_passes
from .plan import Plan

COSTING_PIPELINE = ("fuse", "shard", "pipeline", "recompute", "device_cost", "schedule")


def attention_for(target: Target) -> str:
    """The attention implementation to trace for a target: flash kernels trace as SDPA, else eager."""
    return "sdpa" if target.fusion == "flash" else "eager"


def costing_passes(target: Target, plan: Plan, dtype: str = "bf16") -> list[Pass]:
    """The costing pipeline configured for one target and plan."""
    registry = registered_passes()
    fuse, shard, pipeline, recompute, device_cost, schedule = (registry[n] for n in COSTING_PIPELINE)
    parallel = dict(tp=plan.tp, cp=plan.cp)
    return [
        fuse(level=target.fusion),
        shard(**parallel, pp=plan.pp, dp=plan.dp, zero=plan.zero, sequence_parallel=plan.sequence_parallel,
              grad_reduce_bytes=4 if plan.grad_reduce_dtype == "fp32" else 2),
        pipeline(**parallel, pp=plan.pp, interleave=plan.interleave, sequence_parallel=plan.sequence_parallel),
        recompute(**parallel, policy=plan.recompute, sequence_parallel=plan.sequence_parallel),
        device_cost(target=target, dtype=dtype),
        schedule(target=target, **parallel, pp=plan.pp, dp=plan.dp, zero=plan.zero,
                 micro_batches=plan.micro_batches, sequences_per_step=plan.sequences_per_step,
                 interleave=plan.interleave, kind="interleaved" if plan.interleave > 1 else plan.schedule,
                 overlap_grad_reduce=plan.overlap_grad_reduce, dtype=dtype, strategy=plan.strategy),
    ]


def cost_plan(graph: Graph, target: Target, plan: Plan, instruments: Iterable[Instrument] = (),
              dtype: str = "bf16") -> Graph:
    """A costed copy of ``graph`` (traced at ``plan.micro_batch``); its ``analyses["cost"]`` holds the result."""
    costed = graph.clone()
    return PassManager(costing_passes(target, plan, dtype), instruments).run(costed)
