"""fuse: which ops run as one kernel on the target, and what that does to memory traffic and saved bytes.

Levels (a target's ``fusion:``):
  * ``none``: every op is a kernel; saved activations as traced.
  * ``basic``: chains of elementwise ops run as one kernel (bias-GeLU, bias-dropout-add, SwiGLU, the
    optimizer update), a norm and its backward as one kernel each, and eager attention's
    scale-mask-softmax as one fused softmax; a fused kernel reads its inputs and writes the outputs others
    read, nothing in between. Saved activations: the ``fused`` accounting.
  * ``flash``: ``basic``, and attention as one flash kernel (Dao et al. 2022) that reads q, k, v and writes
    the output (and a per-row log-sum-exp): no s x s tensor is written or kept; its backward recomputes
    QKᵀ, so it runs 2.5x the forward's FLOPs instead of 2x.

Per op this pass sets ``attrs["io_bytes"]`` (DRAM traffic as run) and ``attrs["launches"]`` (kernels
launched); a fused op that still runs its members one by one gets them on its members instead. It writes
``analyses["fusion"]``: the level and the saved tensors ``[op id, output, bytes, block]`` as run.
"""
from __future__ import annotations

from typing import Literal

from watos.ir import Graph, Op, OpKind, Phase, Value
from watos.pass_manager import Pass, PassConfig, PassError, register_pass

_CHAIN = (OpKind.ELEMENTWISE, OpKind.VIEW)
FLASH_BACKWARD_FLOPS = 2.5  # x forward: dQ, dK, dV, dP and the recomputed QKᵀ


@register_pass("fuse")
class Fuse(Pass):
    requires = frozenset({"saved_activations"})
    provides = frozenset({"fused"})
    in_default_pipeline = False

    class Config(PassConfig):
        level: Literal["none", "basic", "flash"] = "basic"

    def run(self, graph: Graph) -> None:
        level = self.config.level
        saved_report = graph.analyses["saved_activations"]["tensors"]
        saved = [list(t) for t in saved_report["as_traced" if level == "none" else "fused"]]
        kept = _kept_values(graph, saved)
        if level == "none":
            for op in graph.ops:
                _each_op_a_kernel(op)
        else:
            _merge_chains(graph.ops, graph, kept, softmax_joins=False)
            for op in graph.ops:
                if op.members and (op.kind is OpKind.NORM or (level == "flash" and op.kind is OpKind.ATTENTION)):
                    op.attrs.update(single_kernel=True, launches=1)
                elif op.members:
                    _merge_chains(op.members, graph, kept, softmax_joins=True)
        if level == "flash":
            saved = _flash_attention(graph, saved)
        graph.analyses["fusion"] = {"level": level, "saved": saved}

    def verify(self, graph: Graph) -> None:
        for op in graph.ops:
            if op.attrs.get("io_bytes", 0) < 0:
                raise PassError(f"{op.name}: negative memory traffic")


def _kept_values(graph: Graph, saved: list[list]) -> set[Value]:
    """Values a kernel must write even if no forward op reads them: saved or graph outputs."""
    return {(t[0], t[1]) for t in saved} | set(graph.outputs.values())


def _each_op_a_kernel(op: Op) -> None:
    op.attrs["io_bytes"] = op.bytes_read + op.bytes_written
    op.attrs["launches"] = 0 if op.kind in (OpKind.VIEW, OpKind.PARAM, OpKind.INPUT) else 1
    for member in op.members:
        _each_op_a_kernel(member)


def _merge_chains(ops: list[Op], graph: Graph, kept: set[Value], softmax_joins: bool) -> None:
    """Union chains of elementwise ops (same phase) into kernels and set their traffic."""
    by_id = {op.id: op for op in ops}
    chainable = {op.id for op in ops if _chains(op, softmax_joins)}
    parent = {i: i for i in chainable}

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for op in ops:
        if op.id in chainable:
            for producer, _ in op.inputs:
                if producer in chainable and by_id[producer].phase is op.phase:
                    parent[find(op.id)] = find(producer)
    readers: dict[Value, set[int]] = {}
    for op in graph.ops if ops is graph.ops else [*graph.ops, *ops]:
        for value in op.inputs:
            readers.setdefault(value, set()).add(op.id)

    def type_of(value: Value):
        return by_id[value[0]].outputs[value[1]] if value[0] in by_id else graph.type_of(value)

    leaders: set[int] = set()
    for op in ops:
        if op.kind in (OpKind.PARAM, OpKind.INPUT):
            op.attrs.update(io_bytes=0, launches=0)
            continue
        if op.id not in chainable:
            op.attrs.update(io_bytes=op.bytes_read + op.bytes_written, launches=int(op.kind is not OpKind.VIEW))
            continue
        region = find(op.id)
        io = 0
        for value in dict.fromkeys(op.inputs):
            if value[0] not in parent or find(value[0]) != region:
                io += type_of(value).nbytes
        for index, out in enumerate(op.outputs):
            value = (op.id, index)
            outside = any(r not in parent or find(r) != region for r in readers.get(value, ()))
            if op.kind is not OpKind.VIEW and (outside or value in kept):
                io += out.nbytes
        op.attrs["io_bytes"] = io
        op.attrs["launches"] = int(region not in leaders and op.kind is not OpKind.VIEW)
        if op.attrs["launches"]:
            leaders.add(region)


def _chains(op: Op, softmax_joins: bool) -> bool:
    if op.members or op.target == "dropout":
        return False
    return op.kind in _CHAIN or (softmax_joins and op.target == "softmax")


def _flash_attention(graph: Graph, saved: list[list]) -> list[list]:
    """Eager attention ops become flash kernels: s x s outputs neither written nor saved."""
    seq = graph.model.seq_len
    dropped: set[Value] = set()
    for op in graph.ops:
        if op.kind is not OpKind.ATTENTION or not op.members:
            continue
        square = {i for i, t in enumerate(op.outputs) if _is_square(t, seq)}
        dropped |= {(op.id, i) for i in square}
        ins = sum(t.nbytes for t in map(graph.type_of, op.inputs) if not _is_square(t, seq))
        outs = sum(t.nbytes for i, t in enumerate(op.outputs) if i not in square)
        op.attrs["io_bytes"] = ins + outs
        if op.phase is Phase.BACKWARD and op.grad_of is not None:
            op.flops = int(FLASH_BACKWARD_FLOPS * graph.op(op.grad_of).flops)
    return [t for t in saved if (t[0], t[1]) not in dropped]


def _is_square(t, seq: int) -> bool:
    return len(t.shape) >= 2 and t.shape[-1] == t.shape[-2] == seq
