"""recompute: which forward work each block re-runs in its backward, and what it then keeps.

Policies (Korthikanti et al. 2022):
  * ``none``: keep every saved tensor;
  * ``selective``: drop what the attention core saves (s x s probabilities, dropout masks) and recompute
    attention in the backward; with flash attention nothing is left to drop;
  * ``full``: keep only each block's input and re-run the whole block forward in its backward.
Bytes kept are per device: a tensor produced by a TP-split op (or, under sequence parallelism, any op in
a block) is divided by the TP degree, and every activation by the CP degree.

Marks re-run forward ops ``attrs["recompute"] = True``; writes ``analyses["recompute"]``: the policy,
bytes kept per micro-batch for each block group representative and for the ops before and after the
blocks.
"""
from __future__ import annotations

from typing import Literal

from watos.ir import Graph, OpKind, Phase
from watos.pass_manager import Pass, PassConfig, register_pass


@register_pass("recompute")
class Recompute(Pass):
    requires = frozenset({"pipelined"})
    provides = frozenset({"recompute"})
    in_default_pipeline = False

    class Config(PassConfig):
        policy: Literal["none", "selective", "full"] = "none"
        tp: int = 1
        cp: int = 1
        sequence_parallel: bool = False

    def run(self, graph: Graph) -> None:
        c = self.config
        reps = {g.representative for g in graph.block_groups}
        kept = {rep: 0 for rep in reps}
        segments = {"pre": 0, "post": 0}
        for op_id, _, nbytes, owner in graph.analyses["fusion"]["saved"]:
            producer = graph.op(op_id)
            share = c.cp * (c.tp if producer.attrs.get("tp_role") in ("column", "row", "split")
                            or (c.sequence_parallel and producer.block is not None) else 1)
            if owner in kept:
                if c.policy == "full" and producer.block == owner:
                    continue  # recomputed from the block input
                if c.policy == "selective" and producer.kind is OpKind.ATTENTION and producer.block == owner:
                    continue
                kept[owner] += nbytes // share
            elif owner is None:
                segments[producer.attrs.get("segment", "post") if producer.attrs.get("segment") != "block"
                         else "post"] += nbytes // share
        for op in graph.ops:
            rerun = op.phase is Phase.FORWARD and op.block in reps and (
                c.policy == "full" or (c.policy == "selective" and op.kind is OpKind.ATTENTION))
            op.attrs["recompute"] = rerun
        graph.analyses["recompute"] = {
            "policy": c.policy,
            "block_bytes": {str(rep): kept[rep] for rep in sorted(reps)},
            "pre_bytes": segments["pre"], "post_bytes": segments["post"],
        }
