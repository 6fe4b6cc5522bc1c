"""The WATOS IR and what reads it: the graph data model (:mod:`watos.ir.graph`), the ATen vocabulary,
read-only queries, the pass manager and its instruments, and the printers.

The graph's types are re-exported here: ``from watos.ir import Graph, Op, OpKind``.
"""
from watos.ir.graph import (
    DTYPE_BYTES,
    BlockGroup,
    Graph,
    ModelInfo,
    Op,
    OpKind,
    Phase,
    Region,
    TensorType,
    Value,
)

__all__ = ["DTYPE_BYTES", "BlockGroup", "Graph", "ModelInfo", "Op", "OpKind", "Phase", "Region", "TensorType",
           "Value"]
