"""group_blocks: recognise repeated transformer blocks and cost identical ones once.

Blocks come from module paths (``model.layers.17.mlp`` is block 17). Full-model blocks whose modules
share a structure signature (submodule types, parameter shapes, scalar settings; see
``watos.frontend.trace``) form one group, costed through one traced representative and counted
``len(group.blocks)`` times by :meth:`watos.ir.Graph.weight`. The pass checks that traced blocks of
one group really traced to the same ops, so replication never hides a difference.
"""
from __future__ import annotations

from watos.ir import BlockGroup, Graph
from watos.ir.pass_manager import Pass, PassError, register_pass


@register_pass("group_blocks")
class GroupBlocks(Pass):
    requires = frozenset({"canonical"})
    provides = frozenset({"blocks"})

    def run(self, graph: Graph) -> None:
        info = graph.model
        groups: dict[str, BlockGroup] = {}
        for index, signature in enumerate(info.block_signatures):
            group = groups.setdefault(signature, BlockGroup(signature, -1, []))
            group.blocks.append(index)
            if index in info.traced_blocks:
                group.representative = index
        graph.block_groups = list(groups.values())

    def verify(self, graph: Graph) -> None:
        structure: dict[int, list[tuple]] = {b: [] for b in graph.model.traced_blocks}
        for op in graph.ops:
            if op.block is not None:
                structure.setdefault(op.block, []).append(
                    (op.target, op.kind.value, op.phase.value, tuple(map(str, op.outputs))))
        for group in graph.block_groups:
            if group.representative < 0:
                raise PassError(f"block group {group.signature} (blocks {group.blocks[:3]}...) was not traced")
            reference = structure[group.representative]
            for block in group.blocks:
                if block in structure and sorted(structure[block]) != sorted(reference):
                    raise PassError(f"blocks {block} and {group.representative} have one module "
                                    "structure but traced to different ops; trace every block "
                                    "(--full-trace)")
