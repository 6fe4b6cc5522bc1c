"""annotate: FLOPs and bytes moved for every op, from shapes alone.

FLOPs (multiply and add count as two):
  * matmul ``[..., m, k] x [..., k, n]``: 2·m·k·n per batch element, i.e. 2·numel(out)·k;
  * convolution: its implicit GEMM, 2·N·Cout·Hout·Wout·Cin·kh·kw/groups, once per gradient backward
    (:mod:`watos.cost.convolution`);
  * attention over q ``[b, h, s_q, d]`` and k, v ``[b, h_kv, s_k, d]``: 2·b·h·s_q·s_k·(d + d_v)
    forward (QKᵀ and PV, the full square as Korthikanti et al. 2022 Eq. 7 counts it; a causal
    kernel's skipped half is the cost model's business), twice that backward (dQ, dK, dV, dP); over a
    sliding window of w keys (``attrs["window"]``), s_k becomes min(s_k, w): a windowed kernel computes the
    band, s·w per head, not the square;
  * elementwise: one per output element; reductions, softmax and losses: one per input element;
    a norm: 4 per element forward, 6 backward. (Vector ops are costed by bytes moved anyway.)
Bytes: an op reads its tensor inputs and writes its outputs; views and parameters move nothing; an
embedding lookup reads only the rows it gathers. A fused op (with ``members``) costs the sum of its
members, i.e. what the unfused kernels move; each member keeps its own figures.
"""
from __future__ import annotations

from typing import Callable

from watos.cost.convolution import convolution_flops
from watos.ir import Graph, Op, OpKind, Phase, TensorType, Value
from watos.ir.aten import SHAPE_ONLY, is_grouped_mm
from watos.ir.pass_manager import Pass, PassError, register_pass

TypeOf = Callable[[Value], TensorType]
_NORM_FLOPS_PER_ELEMENT = {Phase.FORWARD: 4, Phase.BACKWARD: 6}
_FREE = (OpKind.VIEW, OpKind.PARAM, OpKind.INPUT)


@register_pass("annotate")
class Annotate(Pass):
    requires = frozenset({"canonical"})
    provides = frozenset({"op_costs"})

    def run(self, graph: Graph) -> None:
        for op in graph.ops:
            op.flops, op.bytes_read, op.bytes_written = op_cost(op, graph.type_of)

    def verify(self, graph: Graph) -> None:
        for op in graph.ops:
            if op.kind in (OpKind.MATMUL, OpKind.ATTENTION) and op.flops <= 0:
                raise PassError(f"{op.name}: {op.kind.value} op with no FLOPs")


def op_cost(op: Op, type_of: TypeOf) -> tuple[int, int, int]:
    """(FLOPs, bytes read, bytes written) of one op; ``type_of`` gives the type of an input value."""
    if op.members:
        local = {m.id: m for m in op.members}

        def member_type(v: Value) -> TensorType:
            return local[v[0]].outputs[v[1]] if v[0] in local else type_of(v)

        for member in op.members:  # members keep their own costs: they run as kernels of their own
            member.flops, member.bytes_read, member.bytes_written = op_cost(member, member_type)
        return (sum(m.flops for m in op.members), sum(m.bytes_read for m in op.members),
                sum(m.bytes_written for m in op.members))
    if op.kind in _FREE:
        return 0, 0, 0
    inputs = [type_of(v) for v in op.inputs]
    written = sum(t.nbytes for t in op.outputs)
    read = sum(t.nbytes for t in inputs)
    out = op.outputs[0]
    if op.kind is OpKind.MATMUL and is_grouped_mm(op.aten):
        # MoE experts: every routed row meets one expert's weight, so the work is that of one matmul of
        # all rows (an [E, ., .] output is the weight gradient, summed over the rows of its expert).
        rows_out = out.numel // (out.shape[0] if len(out.shape) == 3 else 1)
        return 2 * rows_out * inputs[0].shape[-1], read, written
    if op.target in ("convolution", "convolution_backward"):
        return _convolution_flops(op, inputs), read, written
    if op.kind is OpKind.MATMUL:
        return 2 * out.numel * inputs[-2].shape[-1], read, written
    if op.kind is OpKind.ATTENTION:
        return _attention_flops(op, inputs), read, written
    if op.kind is OpKind.EMBEDDING and op.phase is Phase.FORWARD:
        return 0, written + sum(t.nbytes for t in inputs if not t.dtype.startswith(("fp", "bf"))), written
    if op.kind is OpKind.NORM:
        return _NORM_FLOPS_PER_ELEMENT.get(op.phase, 4) * inputs[0].numel, read, written
    if op.kind in (OpKind.REDUCTION, OpKind.LOSS):
        return (inputs[0].numel if inputs else 0), read, written
    if op.kind is OpKind.OTHER and (not inputs or op.target in SHAPE_ONLY):
        return 0, 0, written
    return out.numel, read, written


def _convolution_flops(op: Op, inputs: list[TensorType]) -> int:
    """Forward ``(x, w, bias)``: one implicit GEMM; backward ``(grad_y, x, w)``: one per gradient its output
    mask asks for (data, weight; the bias gradient is a reduction)."""
    transposed = bool(op.attrs.get("transposed"))
    if op.target == "convolution":
        return convolution_flops(inputs[0] if transposed else op.outputs[0], inputs[1])
    grad_y, x, w = inputs[:3]
    mask = op.attrs.get("output_mask", [True, True, True])
    return convolution_flops(x if transposed else grad_y, w, passes=int(mask[0]) + int(mask[1]))


def _attention_flops(op: Op, inputs: list[TensorType]) -> int:
    q, k, v = inputs[1:4] if op.target == "attention_backward" else inputs[0:3]
    rows = q.numel // q.shape[-1]  # b · h · s_q
    keys = min(k.shape[-2], op.attrs.get("window") or k.shape[-2])  # a sliding window: w keys per query
    forward = 2 * rows * keys * (q.shape[-1] + v.shape[-1])
    return 2 * forward if op.target == "attention_backward" else forward
