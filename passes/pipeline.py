"""pipeline: assign blocks to pipeline stages (contiguous, optionally interleaved) and size the p2p sends.

With ``pp`` stages and ``interleave`` = v model chunks per stage (Narayanan et al. 2021), the L blocks
form pp·v contiguous chunks, as equal as L allows, and chunk c runs on stage c mod pp; ``stage_layers``
gives the first and last stages their own block counts and splits the rest evenly (Megatron-Core's uneven
pipeline, which leaves room for the embedding and the head). Ops before the first block (embedding)
run on the first stage; ops after the last block (final norm, LM head, loss) on the last. Between
stages each micro-batch sends its activations forward and their gradients back: the block output, split
over the TP group (scatter/gather) and over the CP group.

Writes ``attrs["segment"]`` (``pre``, ``block``, ``post``) on every op and ``analyses["pipeline"]``
(:class:`~watos.ir.analyses.PipelineLayout`): per stage, how many blocks of each block group it holds.
"""
from __future__ import annotations

from pydantic import Field

from watos.ir import Graph, OpKind, Phase
from watos.ir.analyses import PipelineLayout
from watos.ir.pass_manager import Pass, PassConfig, register_pass


@register_pass("pipeline")
class Pipeline(Pass):
    stage = "cost"
    requires = frozenset({"sharding"})
    provides = frozenset({"pipeline"})

    class Config(PassConfig):
        pp: int = Field(1, description="pipeline stages")
        interleave: int = Field(1, description="model chunks per stage (interleaved 1F1B)")
        tp: int = Field(1, description="tensor-parallel degree (the boundary activation is split over it)")
        cp: int = Field(1, description="context-parallel degree (the boundary activation is split over it)")
        sequence_parallel: bool = Field(False, description="activations already split over TP along the sequence")
        stage_layers: tuple[int, int] | None = Field(None, description="blocks on the first and last stages")

    def run(self, graph: Graph) -> None:
        c = self.config
        chunks = c.pp * c.interleave
        blocks = graph.model.num_blocks
        # Contiguous chunks as equal as the block count allows (sizes differ by at most one).
        chunk_of_block = {j: min(chunks - 1, j * chunks // blocks) for j in range(blocks)}
        if c.stage_layers:
            first, last = c.stage_layers
            middle = (blocks - first - last) // max(1, c.pp - 2)
            chunk_of_block = {j: 0 if j < first else c.pp - 1 if j >= blocks - last else
                              1 + (j - first) // middle for j in range(blocks)}
        stage_of_block = {j: chunk % c.pp for j, chunk in chunk_of_block.items()}
        stages = [{group.representative: 0 for group in graph.block_groups} for _ in range(c.pp)]
        for group in graph.block_groups:
            for block in group.blocks:
                stages[stage_of_block[block]][group.representative] += 1
        _segments(graph)
        # Each TP rank sends its 1/tp slice and the receivers all-gather it over the fast domain
        # (Megatron's scatter/gather optimisation, Narayanan et al. 2021 §4.1); under sequence
        # parallelism the activation is already split.
        boundary = _block_output_bytes(graph) // (c.tp * c.cp)
        graph.analyses["pipeline"] = PipelineLayout(
            pp=c.pp, interleave=c.interleave, stage_blocks=tuple({str(k): v for k, v in s.items()} for s in stages),
            p2p_bytes=boundary)


def _segments(graph: Graph) -> None:
    """``pre`` / ``block`` / ``post``: where an op runs relative to the transformer blocks."""
    first_block = next((i for i, op in enumerate(graph.ops) if op.block is not None
                        and op.kind is not OpKind.PARAM and op.phase is Phase.FORWARD), len(graph.ops))
    forward_segment: dict[int, str] = {}
    param_segment: dict[str, str] = {}
    for index, op in enumerate(graph.ops):
        if op.block is not None:
            segment = "block"
        elif op.phase is Phase.FORWARD:
            segment = "pre" if index < first_block else "post"
            forward_segment[op.id] = segment
            for param in op.params:
                param_segment.setdefault(param, segment)
        elif op.phase is Phase.BACKWARD:
            segment = forward_segment.get(op.grad_of, "post")
        else:
            segment = param_segment.get(op.attrs.get("param", ""), "post")
        op.attrs["segment"] = segment


def _block_output_bytes(graph: Graph) -> int:
    """Bytes of the activation that crosses a block boundary (one block's output)."""
    rep = graph.block_groups[0].representative if graph.block_groups else None
    outputs = [op.outputs[0].nbytes for op in graph.ops
               if op.block == rep and op.phase is Phase.FORWARD and op.kind is OpKind.ELEMENTWISE]
    return outputs[-1] if outputs else 0
