"""tensor_roles: how each op splits over a tensor-parallel group, found from the dataflow.

Not from module names (Megatron-LM, Shoeybi et al. 2019): a matmul reading a weight and a replicated
activation is *column*-parallel (its output is split across the TP group); one reading a split activation
is *row*-parallel (partial sums, all-reduced); ops reading a split tensor are split; the rest are
replicated. A matmul whose output must stay whole is replicated even when its input is: one whose output
reaches, through no other matmul, a norm over whole tokens rather than per head (MLA's low-rank
down-projections, DeepSeek-V2 §2.1; a gate folded into the residual stream) or an expert choice (an MoE router: top-k, argmax or sort).
Megatron-LM keeps these replicated too; splitting them would split the residual stream downstream. A vocabulary-parallel embedding is all-reduced like a row. Backward ops follow the forward op
they differentiate; the input gradient of a column-parallel matmul is a partial sum (``attrs["partial"]``).

Plan-independent, so it runs once when a graph is lowered (:func:`watos.pipelines.lower`), not for every
plan costed. Writes ``attrs["tp_role"]`` on every op (:data:`watos.ir.queries.TP_SPLIT_ROLES` are split).
"""
from __future__ import annotations

from watos.ir import Graph, Op, OpKind, Phase, Value
from watos.ir.pass_manager import Pass, register_pass
from watos.ir.queries import TP_SPLIT_ROLES

_EXPERT_CHOICE = frozenset({"topk", "argmax", "sort"})


@register_pass("tensor_roles")
class TensorRoles(Pass):
    stage = "lower"
    requires = frozenset({"fusion"})
    provides = frozenset({"tp_roles"})

    def run(self, graph: Graph) -> None:
        _tensor_parallel_roles(graph)


def _tensor_parallel_roles(graph: Graph) -> None:
    """Set ``attrs["tp_role"]`` on every op, following which values are split across the TP group."""
    split: set[Value] = set()
    whole = _whole_output_matmuls(graph)
    for op in graph.ops:
        if op.kind in (OpKind.PARAM, OpKind.INPUT):
            op.attrs["tp_role"] = "replicated"
            continue
        reads_split = any(v in split for v in op.inputs)
        if op.phase is Phase.FORWARD:
            if op.id in whole and not reads_split:
                role = "replicated"
            elif op.kind is OpKind.MATMUL and op.params:
                role = "row" if reads_split else "column"
            elif op.kind is OpKind.EMBEDDING and op.params:
                role = "row"
            else:
                role = "split" if reads_split else "replicated"
            out_split = role in ("column", "split")
        elif op.phase is Phase.BACKWARD:
            forward = graph.get(op.grad_of)
            forward_role = forward.attrs.get("tp_role") if forward is not None else None
            if forward_role in ("column", "row") and op.kind is OpKind.MATMUL:
                role = "split"
                weight_grad = bool(forward.params) and _is_weight_shape(graph, op, forward)
                out_split = weight_grad or forward_role == "row"
                if forward_role == "column" and not weight_grad:
                    op.attrs["partial"] = True  # input gradient of a column matmul: all-reduced
            elif forward_role in TP_SPLIT_ROLES or (forward_role is None and reads_split):
                role, out_split = "split", True
            else:
                role, out_split = "replicated", False
        else:
            role, out_split = "replicated", False
        op.attrs["tp_role"] = role
        if out_split:
            split.update((op.id, i) for i in range(len(op.outputs)))


def _whole_output_matmuls(graph: Graph) -> set[int]:
    """Forward matmuls whose output reaches an expert choice, or a norm over whole tokens (an input of rank
    at most 3, [batch, sequence, features]: no head axis), through no other matmul."""
    found: set[int] = set()
    for seed in graph.ops:
        if seed.phase is not Phase.FORWARD:
            continue
        if not (seed.target in _EXPERT_CHOICE or
                (seed.kind is OpKind.NORM and len(graph.type_of(seed.inputs[0]).shape) <= 3)):
            continue
        stack, seen = list(seed.inputs), set()
        while stack:
            producer = graph.op(stack.pop()[0])
            if producer.id in seen:
                continue
            seen.add(producer.id)
            if producer.kind is OpKind.MATMUL:
                found.add(producer.id)
            elif producer.kind not in (OpKind.PARAM, OpKind.INPUT, OpKind.ATTENTION):
                stack.extend(producer.inputs)
    return found


def _is_weight_shape(graph: Graph, op: Op, forward: Op) -> bool:
    shapes = {graph.op(graph.storage_root(v)[0]).outputs[0].shape for v in forward.inputs
              if graph.is_parameter(v)}
    out = op.outputs[0].shape
    return out in shapes or tuple(reversed(out)) in shapes
