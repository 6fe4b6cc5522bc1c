"""recompute: which forward work each block re-runs in its backward, and what it then keeps.

Policies (Korthikanti et al. 2022), chosen per pipeline stage (GCMR, the WATOS paper §Strategy 3,
picks a different one for each stage):
  * ``none``: keep every saved tensor;
  * ``selective``: re-run the modules the stack or run names (Megatron-Core's ``recompute_modules``,
    default ``core_attn``) in the backward and keep none of what they save. The modules are found by the
    Hugging Face module names and the data flow of each block:

    - ``core_attn``: the attention core (s x s probabilities and dropout masks when unfused; flash
      attention's output and statistics);
    - ``layernorm``: every norm of the block;
    - ``mla_up_proj``: Multi-head Latent Attention's up-projections (``q_b_proj``, ``kv_b_proj``) and what
      follows them up to the attention core (the per-head queries, keys and values; the latents stay);
    - ``moe_act``: the elementwise ops between the experts' two matmuls (the gated activation);
      ``mlp_act``: the same between the dense MLP's matmuls (with ``core_attn`` and ``layernorm``, MaxText's
      ``minimal`` remat policy: only matmul outputs are kept);
    - ``moe``: the whole MoE layer (router, experts, shared experts), keeping its input;
    - ``mlp``: the whole dense MLP; ``shared_experts``: the MoE layer's shared experts;
  * ``full``: keep only each block's input and re-run the whole block forward in its backward.
Block representatives stand for blocks of several stages, so the pass accounts every policy at once and
the schedule reads the figures of each stage's own policy. Bytes kept are per device: a tensor produced
by a TP-split op (or, under sequence parallelism, any op in a block) is divided by the TP degree, and
every activation by the CP degree.

Marks every forward block op with ``attrs["recompute_under"]``, the policies that re-run it (its TP, CP and EP
collectives too; not a ZeRO-3 parameter gather, which the backward repeats on its own); writes
``analyses["recompute"]`` (:class:`~watos.ir.analyses.RecomputePlan`): the policy of each stage, the bytes
kept per micro-batch for each policy and block group representative, and for the ops before and after the
blocks.
"""
from __future__ import annotations

from pydantic import Field

from watos.errors import WatosError
from watos.hardware.stack import RecomputeModule
from watos.ir import Graph, Op, OpKind, Phase
from watos.ir.analyses import RecomputePlan
from watos.ir.pass_manager import Pass, PassConfig, register_pass
from watos.ir.queries import tp_split
from watos.plan import RECOMPUTE_POLICIES, RecomputePolicy

_MLA_UP_PROJECTIONS = frozenset({"q_b_proj", "kv_b_proj"})
_SHARED_EXPERTS = frozenset({"shared_experts", "shared_expert", "shared_expert_gate"})


def selective_ops(graph: Graph, modules: tuple[str, ...]) -> set[int]:
    """The forward block ops that selective recompute of ``modules`` re-runs (module docstring)."""
    blocks: dict[int, list[Op]] = {}
    for op in graph.ops:
        if op.phase is Phase.FORWARD and op.block is not None and op.kind not in (OpKind.PARAM, OpKind.INPUT):
            blocks.setdefault(op.block, []).append(op)
    return {i for ops in blocks.values() for module in modules for i in _selected(ops, module)}


def _selected(ops: list[Op], module: str) -> set[int]:
    """The ops of one block's forward that recomputing ``module`` re-runs."""
    parts = {op.id: op.module.split(".") for op in ops}
    experts = {op.id for op in ops if "experts" in parts[op.id]}
    moe_roots = {op.module.split(".experts")[0] for op in ops if op.id in experts}
    in_moe = {op.id for op in ops if any(op.module.startswith(root) for root in moe_roots)}
    if module == "core_attn":
        return {op.id for op in ops if op.kind is OpKind.ATTENTION}
    if module == "layernorm":
        return {op.id for op in ops if op.kind is OpKind.NORM}
    if module == "mla_up_proj":
        up = {op.id for op in ops if op.kind is OpKind.MATMUL and parts[op.id][-1] in _MLA_UP_PROJECTIONS}
        return _downstream(ops, up, stop=lambda op: op.kind is OpKind.ATTENTION)
    dense_mlp = {op.id for op in ops if "mlp" in parts[op.id] and op.id not in in_moe}
    if module in ("moe_act", "mlp_act"):
        inside = experts if module == "moe_act" else dense_mlp
        matmuls = {op.id for op in ops if op.id in inside and op.kind is OpKind.MATMUL}
        between = _downstream(ops, matmuls, stop=lambda op: op.kind is OpKind.MATMUL) & _upstream(ops, matmuls)
        return {op.id for op in ops if op.id in between - matmuls and op.id in inside
                and op.kind is OpKind.ELEMENTWISE}
    if module == "moe":
        return in_moe
    if module == "mlp":
        return dense_mlp
    if module == "shared_experts":
        return {op.id for op in ops if _SHARED_EXPERTS & set(parts[op.id])}
    raise WatosError(f"recompute: unknown module {module!r}")


def _downstream(ops: list[Op], sources: set[int], stop) -> set[int]:
    """``sources`` and the ops that read them, transitively, up to (not through) the ops ``stop`` selects."""
    reached = set(sources)
    for op in ops:
        if op.id not in reached and not stop(op) and any(v[0] in reached for v in op.inputs):
            reached.add(op.id)
    return reached


def _upstream(ops: list[Op], sinks: set[int]) -> set[int]:
    """The ops whose outputs ``sinks`` read, transitively."""
    needed: set[int] = set()
    for op in reversed(ops):
        if op.id in sinks or op.id in needed:
            needed.update(v[0] for v in op.inputs)
    return needed


@register_pass("recompute")
class Recompute(Pass):
    stage = "cost"
    requires = frozenset({"pipeline"})
    provides = frozenset({"recompute"})

    class Config(PassConfig):
        policy: RecomputePolicy | tuple[RecomputePolicy, ...] = Field(
            "none", description="one policy for every stage, or one per stage")
        tp: int = Field(1, description="tensor-parallel degree")
        cp: int = Field(1, description="context-parallel degree")
        sequence_parallel: bool = Field(False, description="block activations split over TP along the sequence")
        modules: tuple[RecomputeModule, ...] = Field(("core_attn",), description="what selective recompute re-runs")

    def run(self, graph: Graph) -> None:
        c = self.config
        stages = graph.analyses["pipeline"].pp
        per_stage = [c.policy] * stages if isinstance(c.policy, str) else list(c.policy)
        if len(per_stage) != stages:
            raise WatosError(f"recompute: {len(per_stage)} per-stage policies for {stages} pipeline stages")
        reps = {g.representative for g in graph.block_groups}
        selected = selective_ops(graph, c.modules)

        def reruns(policy: str, op: Op) -> bool:
            """Whether ``policy`` re-runs a forward block op in the backward (and so need not keep it)."""
            return policy == "full" or (policy == "selective" and op.id in selected)

        kept = {policy: {rep: 0 for rep in reps} for policy in RECOMPUTE_POLICIES}
        segments = {"pre": 0, "post": 0}
        for op_id, _, nbytes, owner in graph.analyses["fusion"].saved:
            producer = graph.op(op_id)
            share = c.cp * (c.tp if tp_split(producer) or (c.sequence_parallel and producer.block is not None) else 1)
            if owner in reps:
                for policy in RECOMPUTE_POLICIES:
                    if not (producer.block == owner and reruns(policy, producer)):
                        kept[policy][owner] += nbytes // share
            elif owner is None:
                segments[producer.attrs.get("segment", "post") if producer.attrs.get("segment") != "block"
                         else "post"] += nbytes // share
        for op in graph.ops:
            # a ZeRO-3/FSDP gather is not re-run: the backward gathers the parameters again anyway
            in_block = op.phase is Phase.FORWARD and op.block in reps and "dp_phase" not in op.attrs
            op.attrs["recompute_under"] = tuple(p for p in RECOMPUTE_POLICIES if in_block and reruns(p, op))
        graph.analyses["recompute"] = RecomputePlan(
            policy=tuple(per_stage),
            block_bytes={policy: {str(rep): kept[policy][rep] for rep in sorted(reps)} for policy in RECOMPUTE_POLICIES},
            pre_bytes=segments["pre"], post_bytes=segments["post"])
