"""Cost one plan of one model on one target: the costing pipeline on a copy of the traced IR."""
from __future__ import annotations

from typing import Iterable

from watos.hardware.target import Target
from watos.ir import DTYPE_BYTES, Graph
from watos.ir.pass_manager import Instrument, Pass, PassManager, registered_passes
from watos.plan import Plan

COSTING_PIPELINE = ("shard", "pipeline", "recompute", "place", "device_cost", "schedule")


def attention_for(fusion: str) -> str:
    """The attention implementation to trace for a fusion level: flash kernels trace as SDPA, else eager."""
    return "sdpa" if fusion == "flash" else "eager"


def lower(graph: Graph, fusion: str, instruments: Iterable[Instrument] = ()) -> Graph:
    """A copy of a traced graph with a target's kernel fusion applied (plan-independent: lower once,
    cost many plans)."""
    registry = registered_passes()
    return PassManager([registry["fuse"](level=fusion), registry["tensor_roles"]()], instruments).run(graph.clone())


def costing_passes(target: Target, plan: Plan, dtype: str = "bf16") -> list[Pass]:
    """The costing pipeline configured for one target and plan."""
    registry = registered_passes()
    shard, pipeline, recompute, place, device_cost, schedule = (registry[n] for n in COSTING_PIPELINE)
    parallel = dict(tp=plan.tp, cp=plan.cp)
    return [
        shard(**parallel, pp=plan.pp, dp=plan.dp, zero=plan.zero, sequence_parallel=plan.sequence_parallel,
              grad_reduce_bytes=DTYPE_BYTES[plan.grad_reduce_dtype], ep=plan.ep, load=plan.routing.load),
        pipeline(**parallel, pp=plan.pp, interleave=plan.interleave, sequence_parallel=plan.sequence_parallel),
        recompute(**parallel, policy=plan.recompute, sequence_parallel=plan.sequence_parallel),
        place(target=target, strategy=plan.placement, **parallel, dp=plan.dp, pp=plan.pp, seed=plan.seed,
              pairs=tuple((b.sender, b.helper, b.gb * 1e9) for b in plan.borrow)),
        device_cost(target=target, dtype=dtype),
        schedule(target=target, **parallel, pp=plan.pp, dp=plan.dp, ep=plan.ep, zero=plan.zero,
                 micro_batches=plan.micro_batches, sequences_per_step=plan.sequences_per_step,
                 interleave=plan.interleave, kind=plan.pipeline_kind,
                 overlap_grad_reduce=plan.overlap_grad_reduce, dtype=dtype, strategy=plan.strategy,
                 borrow=tuple((b.sender, b.helper, b.gb * 1e9) for b in plan.borrow),
                 # main_grad += grad: read the 16-bit gradient and the main gradient, write the latter
                 grad_accumulation_bytes=0 if plan.grad_accumulation == "fused"
                 else DTYPE_BYTES[dtype] + 2 * DTYPE_BYTES[plan.grad_reduce_dtype]),
    ]


def cost_plan(lowered: Graph, target: Target, plan: Plan, instruments: Iterable[Instrument] = (),
              dtype: str = "bf16", verify: bool = True) -> Graph:
    """A costed copy of a lowered graph (traced at ``plan.micro_batch``, see :func:`lower`); its
    ``analyses["cost"]`` holds the result. ``verify=False``: see :class:`~watos.ir.pass_manager.PassManager`."""
    return PassManager(costing_passes(target, plan, dtype), instruments, verify).run(lowered.clone())
