"""Read-only questions about a graph that passes, plans, the search and the reports all ask.

Nothing here changes the graph: these are the analyses that are cheap enough to recompute (TVM's
``relax.analysis``), kept in one place so that every caller gets the same answer.
"""
from __future__ import annotations

from watos.ir.aten import is_grouped_mm
from watos.ir.graph import Graph, Op, OpKind, Phase

TP_SPLIT_ROLES = ("column", "row", "split")
"""``attrs["tp_role"]`` values whose op's work (and output, for ``column``/``split``) is split over the TP
group (see the ``tensor_roles`` pass); any other op is ``replicated``."""


def tp_split(op: Op) -> bool:
    """Whether an op's work is divided over the tensor-parallel group (its ``tp_role``)."""
    return op.attrs.get("tp_role") in TP_SPLIT_ROLES


def expert_params(graph: Graph) -> dict[str, Op]:
    """The expert weights, name -> parameter op: 3-D parameters ``[E, ., .]`` that a forward matmul reads."""
    params = {op.attrs["name"]: op for op in graph.ops if op.kind is OpKind.PARAM}
    return {name: params[name] for op in graph.ops if op.phase is Phase.FORWARD and op.kind is OpKind.MATMUL
            for name in op.params if len(params[name].outputs[0].shape) == 3}


def expert_count(graph: Graph) -> int:
    """Experts per MoE layer (the leading dimension of the expert weights); 0 for a dense model."""
    return max((op.outputs[0].shape[0] for op in expert_params(graph).values()), default=0)


def routed_top_k(graph: Graph, experts: int) -> int:
    """Experts each token is routed to: the k of the top-k over ``experts`` scores (1 if none is traced)."""
    return max((op.outputs[0].shape[-1] for op in graph.ops if op.target == "topk"
                and graph.type_of(op.inputs[0]).shape[-1] == experts), default=1)


def dropless_experts(graph: Graph, experts: dict[str, Op]) -> bool:
    """Whether the expert matmuls are grouped (one row per routed token, dropless) rather than matmuls over
    static capacity buffers."""
    return any(is_grouped_mm(op.aten) for op in graph.ops if experts.keys() & set(op.params))


def model_limits(graph: Graph) -> dict[str, int]:
    """What a plan must divide: attention heads, key/value heads, blocks, sequence length, experts per MoE
    layer (the keyword arguments of :func:`watos.plan.check_plan`)."""
    config = graph.model.config
    heads = config.get("num_attention_heads") or config.get("n_head") or 1
    return {"heads": heads, "kv_heads": config.get("num_key_value_heads") or heads,
            "layers": max(graph.model.num_blocks, 1), "seq_len": graph.model.seq_len, "experts": expert_count(graph)}


def model_flops(graph: Graph) -> float:
    """Forward + backward FLOPs of one micro-batch of the whole model, as traced (no recompute, no optimizer)."""
    return float(graph.total("flops", (op for op in graph.ops if op.phase is not Phase.OPTIMIZER
                                      and op.kind is not OpKind.COLLECTIVE)))


def param_segment(graph: Graph, param: Op) -> str:
    """Where a parameter outside the blocks is used: the ``segment`` of the first forward op reading it."""
    for op in graph.ops:
        if op.phase is Phase.FORWARD and param.attrs["name"] in op.params and "segment" in op.attrs:
            return op.attrs["segment"]
    return "pre"
