"""group_blocks: recognise repeated transformer blocks and cost identical ones once.

Blocks come from module paths (``model.layers.17.mlp`` is block 17). Full-model blocks whose modules
share a structure signature (submodule types, parameter shapes, scalar settings; see
``watos.frontend.trace``) form one group, costed through one traced representative and counted
``len(group.blocks)`` times by :meth:`watos.ir.Graph.weight`. Traced blocks of one signature that traced to
different ops (Mamba's first block casts its residual to fp32) form groups of their own; an untraced block
whose traced look-alikes differ cannot be placed, and the pass raises :class:`~watos.errors.BlocksDiffer`
(the tracer then traces every block), so replication never hides a difference.
"""
from __future__ import annotations

from watos.errors import BlocksDiffer
from watos.ir import BlockGroup, Graph
from watos.ir.pass_manager import Pass, PassError, register_pass


@register_pass("group_blocks")
class GroupBlocks(Pass):
    requires = frozenset({"canonical"})
    provides = frozenset({"blocks"})

    def run(self, graph: Graph) -> None:
        info = graph.model
        structures = _structures(graph)
        groups: dict[tuple[str, int], BlockGroup] = {}
        for index, signature in enumerate(info.block_signatures):
            traced = [b for b in info.traced_blocks if info.block_signatures[b] == signature]
            shapes = list(dict.fromkeys(structures[b] for b in traced))
            if index in structures:
                kind = shapes.index(structures[index])
            elif len(shapes) == 1:
                kind = 0
            else:  # an untraced block, and its traced look-alikes differ: which one is it?
                first, second = (b for b in traced if structures[b] in shapes[:2])
                raise BlocksDiffer(f"blocks {first} and {second} have one module structure but traced to different "
                                   "ops; trace every block (--full-trace)")
            group = groups.setdefault((signature, kind), BlockGroup(signature, -1, []))
            group.blocks.append(index)
            if index in structures:
                group.representative = index
        graph.block_groups = list(groups.values())

    def verify(self, graph: Graph) -> None:
        structures = _structures(graph)
        for group in graph.block_groups:
            if group.representative < 0:
                raise PassError(f"block group {group.signature} (blocks {group.blocks[:3]}...) was not traced")
            differing = [b for b in group.blocks if b in structures and structures[b] != structures[group.representative]]
            if differing:
                raise PassError(f"blocks {differing[0]} and {group.representative} are grouped but traced to "
                                "different ops")


def _structures(graph: Graph) -> dict[int, tuple]:
    """Each traced block's ops, as an order-free multiset of (target, kind, phase, output types)."""
    ops: dict[int, list[tuple]] = {b: [] for b in graph.model.traced_blocks}
    for op in graph.ops:
        if op.block is not None:
            ops.setdefault(op.block, []).append((op.target, op.kind.value, op.phase.value, tuple(map(str, op.outputs))))
    return {block: tuple(sorted(entries)) for block, entries in ops.items()}
