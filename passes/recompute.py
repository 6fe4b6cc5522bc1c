"""recompute: which forward work each block re-runs in its backward, and what it then keeps.

Policies (Korthikanti et al. 2022), chosen per pipeline stage (GCMR, the WATOS paper §Strategy 3,
picks a different one for each stage):
  * ``none``: keep every saved tensor;
  * ``selective``: drop what the attention core saves (s x s probabilities, dropout masks) and recompute
    attention in the backward; with flash attention nothing is left to drop;
  * ``full``: keep only each block's input and re-run the whole block forward in its backward.
Block representatives stand for blocks of several stages, so the pass accounts every policy at once and
the schedule reads the figures of each stage's own policy. Bytes kept are per device: a tensor produced
by a TP-split op (or, under sequence parallelism, any op in a block) is divided by the TP degree, and
every activation by the CP degree.

Marks every forward block op with ``attrs["recompute_under"]``, the policies that re-run it; writes
``analyses["recompute"]`` (:class:`~watos.ir.analyses.RecomputePlan`): the policy of each stage, the bytes
kept per micro-batch for each policy and block group representative, and for the ops before and after the
blocks.
"""
from __future__ import annotations

from pydantic import Field

from watos.errors import WatosError
from watos.ir import Graph, Op, OpKind, Phase
from watos.ir.analyses import RecomputePlan
from watos.ir.pass_manager import Pass, PassConfig, register_pass
from watos.ir.queries import tp_split
from watos.plan import RECOMPUTE_POLICIES, RecomputePolicy


def reruns(policy: str, op: Op) -> bool:
    """Whether ``policy`` re-runs a forward op of a block in the backward (and so need not keep it)."""
    return policy == "full" or (policy == "selective" and op.kind is OpKind.ATTENTION)


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

    def run(self, graph: Graph) -> None:
        c = self.config
        stages = graph.analyses["pipeline"].pp
        per_stage = [c.policy] * stages if isinstance(c.policy, str) else list(c.policy)
        if len(per_stage) != stages:
            raise WatosError(f"recompute: {len(per_stage)} per-stage policies for {stages} pipeline stages")
        reps = {g.representative for g in graph.block_groups}
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
            in_block = op.phase is Phase.FORWARD and op.block in reps
            op.attrs["recompute_under"] = tuple(p for p in RECOMPUTE_POLICIES if in_block and reruns(p, op))
        graph.analyses["recompute"] = RecomputePlan(
            policy=tuple(per_stage),
            block_bytes={policy: {str(rep): kept[policy][rep] for rep in sorted(reps)} for policy in RECOMPUTE_POLICIES},
            pre_bytes=segments["pre"], post_bytes=segments["post"])
