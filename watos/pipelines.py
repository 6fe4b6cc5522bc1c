"""The named pipelines, one per pass stage (:data:`watos.ir.pass_manager.STAGES`):

* ``import`` (:func:`import_passes`): canonicalize, annotate, group_blocks, saved_activations — the traced
  graph, whatever the target;
* ``lower`` (:func:`lower`): fuse (the target's kernel fusion) and tensor_roles — plan-independent, so a
  graph is lowered once and many plans are costed on it;
* ``cost`` (:func:`cost_plan`): shard, pipeline, recompute, place, device_cost, then the strategy's
  schedule: ``schedule`` (3D parallelism) or ``weight_streaming``.

A user's pass joins the pipeline of the stage it declares, right after the passes that provide what it
requires (:func:`watos.ir.pass_manager.join_stage`); a costing-stage pass receives the ``target``, ``plan``
and ``dtype`` being costed if its options declare them.
"""
from __future__ import annotations

from typing import Any, Iterable

from watos.errors import BlocksDiffer
from watos.frontend.sources import ModelSource, load_model
from watos.hardware.stack import Software
from watos.hardware.target import Target
from watos.ir import DTYPE_BYTES, Graph
from watos.ir.instruments import Instrument
from watos.ir.pass_manager import Pass, PassError, PassManager, join_stage, registered_passes
from watos.plan import Plan, software_of, traced_dtype

IMPORT_PASSES = ("canonicalize", "annotate", "group_blocks", "saved_activations")
LOWER_PASSES = ("fuse", "tensor_roles")
COST_PASSES = ("shard", "pipeline", "recompute", "place", "device_cost")
SCHEDULES = {"3d": "schedule", "weight-streaming": "weight_streaming"}
"""The pass that schedules a plan's step, by ``plan.strategy``."""
SHIPPED = {"import": IMPORT_PASSES, "lower": LOWER_PASSES, "cost": (*COST_PASSES, *SCHEDULES.values())}
"""The shipped passes of each stage, in pipeline order (the named pipelines place them; a user's join)."""


def attention_for(fusion: str) -> str:
    """The attention implementation to trace for a fusion level: flash kernels trace as SDPA, else eager."""
    return "sdpa" if fusion == "flash" else "eager"


def import_passes() -> list[Pass]:
    """The import stage: the built-in passes and every import-stage pass a user registered."""
    registry = registered_passes()
    return join_stage("import", [registry[name]() for name in IMPORT_PASSES], SHIPPED["import"])


def trace(source: Any, *, seq_len: int = 2048, micro_batch: int = 1, dtype: str = "bf16", attention: str = "sdpa",
          replicate_blocks: bool = True, passes: list[Pass] | None = None,
          instruments: Iterable[Instrument] = ()) -> Graph:
    """Trace one training step of ``source`` (anything :func:`~watos.frontend.sources.load_model` takes) and
    run the import pipeline (or ``passes``) on its IR; a model whose traced prefix of blocks cannot stand for
    the rest (:class:`~watos.errors.BlocksDiffer`) is traced again with every block."""
    from watos.frontend.trace import (
        trace_step,  # torch: imported when a model is traced, not before
    )

    if not isinstance(source, ModelSource):
        source = load_model(source)
    graph = trace_step(source, seq_len=seq_len, micro_batch=micro_batch, dtype=traced_dtype(dtype), attention=attention,
                       replicate_blocks=replicate_blocks)
    try:
        return PassManager(passes if passes is not None else import_passes(), instruments).run(graph)
    except PassError as exc:
        if not isinstance(exc.__cause__, BlocksDiffer):
            raise
    # blocks alike in structure traced differently: the traced prefix cannot stand for the rest
    return trace(source, seq_len=seq_len, micro_batch=micro_batch, dtype=dtype, attention=attention,
                 replicate_blocks=False, passes=passes, instruments=instruments)


def lower(graph: Graph, fusion: str, instruments: Iterable[Instrument] = (), fused_loss: bool = False) -> Graph:
    """A copy of a traced graph lowered for a stack's kernels (its fusion level ``none``, ``basic`` or
    ``flash``, and whether its loss is one fused cross-entropy kernel: :class:`watos.hardware.stack.Software`):
    plan-independent, so lower once and cost many plans."""
    registry = registered_passes()
    passes = join_stage("lower", [registry["fuse"](level=fusion, fused_loss=fused_loss), registry["tensor_roles"]()],
                        SHIPPED["lower"], {"fusion": fusion})
    return PassManager(passes, instruments).run(graph.clone())


def cost_passes(target: Target, plan: Plan, dtype: str = "bf16", software: Software | None = None) -> list[Pass]:
    """The cost stage configured for one target and plan, under ``software`` (default: the plan's stack,
    :func:`watos.plan.software_of`)."""
    registry = registered_passes()
    shard, pipeline, recompute, place, device_cost = (registry[n] for n in COST_PASSES)
    software = software or software_of(plan, target)
    parallel = dict(tp=plan.tp, cp=plan.cp)
    borrow = tuple((b.sender, b.helper, b.gb * 1e9) for b in plan.borrow)
    layers = (plan.stage_layers.first, plan.stage_layers.last) if plan.stage_layers else None
    if plan.zero == 3 and plan.pp > 1 and not software.fsdp_reshard_with_pp:
        # FSDP that keeps a pipelined stage's gathered parameters and gradients for the step: it gathers and
        # reduces once per step and holds 16-bit weights and gradients whole, ZeRO 1's pattern
        plan = plan.model_copy(update={"zero": 1})
    builtin = [
        shard(**parallel, pp=plan.pp, dp=plan.dp, zero=plan.zero, sequence_parallel=plan.sequence_parallel,
              grad_reduce_bytes=_grad_bytes(plan, software),
              ep=plan.data_parallel_ep, load=plan.routing.load,
              shard_group=plan.shard_group, dedup_dispatch=software.ep_dedup),
        pipeline(**parallel, pp=plan.pp, interleave=plan.interleave, sequence_parallel=plan.sequence_parallel,
                 stage_layers=layers),
        recompute(**parallel, policy=plan.recompute, sequence_parallel=plan.sequence_parallel,
                  modules=software.recompute_modules),
        place(target=target, placement=plan.placement, **parallel, dp=plan.dp, pp=plan.pp, seed=plan.seed,
              pairs=borrow, fault_policy=plan.fault_policy),
        device_cost(target=target, dtype=dtype, software=software),
        _schedule(registry[SCHEDULES[plan.strategy]], target, plan, dtype, software, borrow),
    ]
    return join_stage("cost", builtin, SHIPPED["cost"], {"target": target, "plan": plan, "dtype": dtype})


def _schedule(schedule: type[Pass], target: Target, plan: Plan, dtype: str, software: Software,
              borrow: tuple[tuple[int, int, float], ...]) -> Pass:
    """The strategy's scheduling pass with the plan's knobs it takes."""
    common = dict(target=target, tp=plan.tp, pp=plan.pp, dp=plan.dp, cp=plan.cp, micro_batches=plan.micro_batches,
                  sequences_per_step=plan.sequences_per_step, dtype=dtype, software=software)
    if plan.strategy == "weight-streaming":
        return schedule(**common)
    grad_bytes = _grad_bytes(plan, software)
    return schedule(**common, ep=plan.data_parallel_ep, zero=plan.zero, interleave=plan.interleave, kind=plan.pipeline_kind,
                    shard_group=plan.shard_group, borrow=borrow, grad_bytes=grad_bytes,
                    # main_grad += grad: read the 16-bit gradient and the main gradient, write the latter
                    grad_accumulation_bytes=0 if plan.grad_accumulation == "fused"
                    else DTYPE_BYTES[traced_dtype(dtype)] + 2 * grad_bytes)


def _grad_bytes(plan: Plan, software: Software) -> int:
    """Bytes per gradient element accumulated and reduced: the plan's dtype, else its stack's."""
    return DTYPE_BYTES[plan.grad_reduce_dtype or software.grad_reduce_dtype]


def cost_plan(lowered: Graph, target: Target, plan: Plan, instruments: Iterable[Instrument] = (),
              dtype: str = "bf16", verify: bool = True, software: Software | None = None) -> Graph:
    """A costed copy of a lowered graph (traced at ``plan.micro_batch``, see :func:`lower`); its
    ``analyses["cost"]`` holds the :class:`~watos.ir.analyses.StepMetrics`. ``software``: the resolved stack
    (default: the plan's). ``verify=False``: see :class:`~watos.ir.pass_manager.PassManager`."""
    return PassManager(cost_passes(target, plan, dtype, software), instruments, verify).run(lowered.clone())
