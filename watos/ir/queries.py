"""Read-only questions about a graph that passes, plans, the search and the reports all ask.

Nothing here changes the graph: these are the analyses that are cheap enough to recompute (TVM's
``relax.analysis``), kept in one place so that every caller gets the same answer.
"""
from __future__ import annotations

import math

from watos.ir.aten import is_grouped_mm
from watos.ir.graph import Graph, Op, OpKind, Phase, Value

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


_REPEATS = frozenset({"clone", "copy", "contiguous", "expand", "repeat", "repeat_interleave", "index_select"})
"""Ops through which a key/value tensor is repeated across query heads (grouped-query attention): a walk back
from the attention's key passes through them, and through views, to the tensor with one row per KV head."""


def _attention_cores(graph: Graph) -> list[Op]:
    """The forward attention cores: fused SDPA ops (raw or canonical) and collapsed eager patterns."""
    return [op for op in graph.ops if op.kind is OpKind.ATTENTION and op.phase is Phase.FORWARD
            and "backward" not in op.target]


def _kv_rows(graph: Graph, key: Value, heads: int) -> int:
    """Key/value heads behind an attention input ``key`` (``[b, h, s, d]``, or the ``[b·h, s, d]`` operand of
    an eager batched matmul): the fewest heads among the 4-D tensors of its ``(s, d)`` reached back through
    views and repeats (``repeat_kv``, ``repeat_interleave``), at most ``heads``."""
    tail = graph.type_of(key).shape[-2:]
    fewest = heads
    frontier, seen = [key], set()
    while frontier:
        value = frontier.pop()
        if value in seen:
            continue
        seen.add(value)
        shape = graph.type_of(value).shape
        if len(shape) == 4 and shape[-2:] == tail:
            fewest = min(fewest, shape[1])
        op = graph.op(value[0])
        if op.inputs and (op.kind is OpKind.VIEW or op.target in _REPEATS):
            frontier.append(op.inputs[0])
    return fewest


def attention_heads(graph: Graph) -> tuple[int, int]:
    """(query heads, key/value heads) of the traced attention ops, which a tensor-parallel plan splits: the
    greatest common divisor over every attention core (0, 0 when the model has none). A fused core reads
    ``q [b, h, s, d]``, ``k`` and ``v``; a collapsed eager pattern's heads are those of its softmax
    ``[b, h, s_q, s_k]``, its key/value heads those behind its value matmul's second operand."""
    heads = kv_heads = 0
    for core in _attention_cores(graph):
        if core.members:
            softmax = next((m for m in core.members if m.target == "softmax"), None)
            scores = softmax.outputs[0].shape if softmax is not None else ()
            if len(scores) != 4:
                continue
            h, key = scores[1], core.members[-1].inputs[-1]
        else:
            if len(graph.type_of(core.inputs[0]).shape) != 4:
                continue
            h, key = graph.type_of(core.inputs[0]).shape[1], core.inputs[1]
        kv = _kv_rows(graph, key, h)
        heads, kv_heads = math.gcd(heads, h), math.gcd(kv_heads, kv)
    return heads, kv_heads


def model_limits(graph: Graph) -> dict[str, int]:
    """What a plan must divide, from the traced graph (the keyword arguments of :func:`watos.plan.check_plan`):
    attention heads and key/value heads (:func:`attention_heads`; 0 for a model without attention), the
    blocks found (:func:`watos.frontend.blocks.find_blocks`), the sequence length and the experts per MoE
    layer."""
    heads, kv_heads = attention_heads(graph)
    return {"heads": heads, "kv_heads": kv_heads, "layers": max(graph.model.num_blocks, 1),
            "seq_len": graph.model.seq_len, "experts": expert_count(graph)}


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
