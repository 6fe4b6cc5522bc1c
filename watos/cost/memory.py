"""Memory per device: model states under ZeRO and expert parallelism, activations in flight, workspace.

Mixed-precision Adam keeps 16-bit weights, gradients in the dtype they are accumulated and reduced in (the
main-gradient buffer: 4 bytes under Megatron's fp32 accumulation, whose gradient-accumulation fusion writes no
16-bit gradient; 2 under FSDP's bf16 reduction) and fp32 states (master weights and two moments: 12 bytes per
parameter; Megatron-Core's distributed optimizer: 6 + 12/d bytes with fp32 gradients). PyTorch FSDP (a stack's
``memory.fp32_shards``) keeps no 16-bit shard: its fp32 shards are the master weights, 16-bit copies exist only
gathered (the workspace); kept unsharded for a pipelined step, it holds the unsharded gradients and the fp32
gradient shards the optimizer reads. ZeRO (Rajbhandari et al. 2020) divides them over the dp·cp ranks that share
them: stage 1 the states, 2 also the gradients, 3 also the weights. Expert weights are first divided over
the EP group, and ZeRO shards them over the dp·cp/ep ranks that hold them, so a ZeRO-sharded share is
total/(dp·cp) for experts and dense weights alike. Activations are the bytes one micro-batch keeps (the
``recompute`` analysis, per policy) times the micro-batches in flight (:func:`watos.cost.pipeline.in_flight`).
Workspace: the largest transient op output and, under ZeRO 3, two blocks' gathered 16-bit parameters (the
block that runs and the next one, prefetched).
"""
from __future__ import annotations

from dataclasses import dataclass

from watos.hardware.stack import Software
from watos.ir import Graph, OpKind, Phase
from watos.ir.analyses import RecomputePlan, StageMemory
from watos.ir.queries import param_segment

ADAM_STATE_BYTES = 12  # fp32 master weights and two fp32 moments per parameter
_STATES = ((2, 3), (2, 2), (ADAM_STATE_BYTES, 1))  # (bytes per parameter, ZeRO stage that shards it)


@dataclass(frozen=True)
class ParameterSizes:
    """Parameters per device of each block representative and of the ``pre``/``post`` segments (TP and EP
    applied), the expert weights among them, and the largest transient op output in bytes."""

    params: dict[str, float]
    experts: dict[str, float]
    workspace: float


def parameter_sizes(graph: Graph, tp: int, ep: int = 1) -> ParameterSizes:
    """:class:`ParameterSizes` of a sharded graph (parameters split over TP and EP per ``analyses["sharding"]``)."""
    sharding = graph.analyses.get("sharding")
    split = set(sharding.split_params) if sharding else set()
    expert = set(sharding.expert_params) if sharding else set()
    params: dict[str, float] = {}
    experts: dict[str, float] = {}
    for op in graph.ops:
        if op.kind is OpKind.PARAM:
            where = str(op.block) if op.block is not None else param_segment(graph, op)
            numel = op.outputs[0].numel / (tp if op.attrs["name"] in split else 1)
            if op.attrs["name"] in expert:
                numel /= ep
                experts[where] = experts.get(where, 0.0) + numel
            params[where] = params.get(where, 0.0) + numel
    workspace = max((op.outputs[0].nbytes / op.attrs.get("shard", 1) for op in graph.ops
                     if op.phase is Phase.FORWARD and op.kind not in (OpKind.PARAM, OpKind.INPUT, OpKind.VIEW)
                     and not op.attrs.get("fused_away")), default=0)
    return ParameterSizes(params, experts, workspace)


def activation_bytes(recompute: RecomputePlan, segments: list[tuple[str, int]], policy: str, flight: float) -> float:
    """Activation bytes of a stage running ``segments`` under ``policy`` with ``flight`` micro-batches in flight,
    and the block its backward is re-running: while it does, that block holds what the policy dropped."""
    kept = recompute.block_bytes[policy]
    per_microbatch = sum(kept.get(w, 0) * n for w, n in segments)
    per_microbatch += sum(recompute.segment_bytes(w) for w, _ in segments if w in ("pre", "post"))
    rerun = max((recompute.block_bytes["none"].get(w, 0) - kept.get(w, 0) for w, _ in segments), default=0)
    return per_microbatch * flight + rerun


def stage_memory(sizes: ParameterSizes, segments: list[tuple[str, int]], activations: float, *, zero: int,
                 shards: int, ep: int, software: Software, grad_bytes: int) -> StageMemory:
    """Bytes per device of a stage running ``segments`` (the module docstring); ZeRO shards over ``shards``
    data-parallel ranks (dp·cp, or the hybrid-sharding group); gradients of ``grad_bytes`` per element; the
    stack's memory on top (:func:`framework_bytes`)."""
    params = sum(sizes.params.get(where, 0.0) * n for where, n in segments)  # this die's share, EP applied
    sharded = (params + (ep - 1) * sum(sizes.experts.get(where, 0.0) * n for where, n in segments)) / shards

    def per_die(zero_level: int) -> float:
        return sharded if zero >= zero_level else params

    # FSDP's fp32 shards are the master weights the Adam states count: no 16-bit shard beside them
    weights = 0.0 if zero >= 3 and software.fp32_shards else 2 * per_die(3)
    grads, states = grad_bytes * per_die(2), ADAM_STATE_BYTES * per_die(1)
    if software.fp32_shards and zero < 2:
        grads += 4 * sharded  # FSDP kept unsharded for the step (PP): the optimizer's fp32 gradient shards as well
    gathered = 2 * 2 * max(sizes.params.get(where, 0.0) for where, _ in segments) if zero >= 3 else 0.0
    workspace = sizes.workspace + gathered
    live = weights + grads + states + activations + workspace
    framework = framework_bytes(live, software)
    return {"weights_bytes": weights, "gradients_bytes": grads, "optimizer_bytes": states,
            "activations_bytes": activations, "workspace_bytes": workspace, "framework_bytes": framework,
            "total_bytes": live + framework, "parameters": params}


def framework_bytes(live: float, software: Software) -> float:
    """What the stack holds beyond ``live`` bytes of tensors: its fixed reserve (context, communication
    buffers, workspaces) and the caching allocator's slack over the live peak."""
    return software.reserved_bytes + software.allocator_slack * live


def with_activations(memory: StageMemory, activations: float, software: Software) -> float:
    """A stage's total bytes with ``activations`` in place of its own (another recompute policy)."""
    live = memory["total_bytes"] - memory["framework_bytes"] - memory["activations_bytes"] + activations
    return live + framework_bytes(live, software)


def model_state_bytes(parameters: float, expert_parameters: float, *, tp: int, pp: int, dp: int, zero: int,
                      ep: int = 1) -> float:
    """Weights, gradients and Adam states per device of an average stage, a lower bound on its memory (the
    search's screen): ``parameters`` of the whole model over tp·pp, ``expert_parameters`` of them divided
    over ``ep``, every ZeRO-sharded share over dp."""
    total = parameters / (tp * pp)
    local = total - expert_parameters * (1 - 1 / ep) / (tp * pp)
    return sum(nbytes * (total / dp if zero >= level else local) for nbytes, level in _STATES)
