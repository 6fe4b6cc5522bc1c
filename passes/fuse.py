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

With ``fused_loss`` the loss runs as one fused cross-entropy kernel over the logits (Megatron-Core's and
Transformer Engine's, Liger's): the fp32 copy of the logits and their log-softmax are neither written nor
kept; the kernel reads the 16-bit logits, which the backward keeps instead.

Per op this pass sets ``attrs["io_bytes"]`` (DRAM traffic as run) and ``attrs["launches"]`` (kernels
launched); a fused op that still runs its members one by one gets them on its members instead. It writes
``analyses["fusion"]`` (:class:`~watos.ir.analyses.Fusion`): the level and the tensors saved as run.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from watos.ir import Graph, Op, OpKind, Phase, Value
from watos.ir.analyses import Fusion, SavedTensor
from watos.ir.pass_manager import Pass, PassConfig, PassError, register_pass

_CHAIN = (OpKind.ELEMENTWISE, OpKind.VIEW)
FLASH_BACKWARD_FLOPS = 2.5  # x forward: dQ, dK, dV, dP and the recomputed QKᵀ


@register_pass("fuse")
class Fuse(Pass):
    stage = "lower"
    requires = frozenset({"saved_activations"})
    provides = frozenset({"fusion"})

    class Config(PassConfig):
        level: Literal["none", "basic", "flash"] = Field("basic", description="the stack's kernel fusion")
        fused_loss: bool = Field(False, description="the loss as one fused cross-entropy kernel over 16-bit logits")

    def run(self, graph: Graph) -> None:
        level = self.config.level
        saved = list(graph.analyses["saved_activations"].tensors["as_traced" if level == "none" else "fused"])
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
        if self.config.fused_loss:
            saved = _fused_loss(graph, saved)
        graph.analyses["fusion"] = Fusion(level, tuple(saved))

    def verify(self, graph: Graph) -> None:
        for op in graph.ops:
            if op.attrs.get("io_bytes", 0) < 0:
                raise PassError(f"{op.name}: negative memory traffic")


def _kept_values(graph: Graph, saved: list[SavedTensor]) -> set[Value]:
    """Values a kernel must write even if no forward op reads them: saved or graph outputs."""
    return {(t.op, t.output) for t in saved} | set(graph.outputs.values())


def _each_op_a_kernel(op: Op) -> None:
    op.attrs["io_bytes"] = op.bytes_read + op.bytes_written
    op.attrs["launches"] = 0 if op.kind in (OpKind.VIEW, OpKind.PARAM, OpKind.INPUT) else 1
    for member in op.members:
        _each_op_a_kernel(member)


def _merge_chains(ops: list[Op], graph: Graph, kept: set[Value], softmax_joins: bool) -> None:
    """Fuse chains of elementwise ops (one phase) into kernels and set their traffic and launches.

    A producer joins its consumer's kernel only when that consumer (through views) is its only
    reader, so no path leaves a kernel and comes back. A kernel reads each outside tensor once and
    writes the outputs read outside it, saved for the backward, or returned; views move nothing.
    """
    by_id = {op.id: op for op in ops}
    readers: dict[Value, set[int]] = {}
    for op in graph.ops if ops is graph.ops else [*graph.ops, *ops]:
        for value in op.inputs:
            readers.setdefault(value, set()).add(op.id)
    op_readers = {op.id: set().union(*(readers.get((op.id, i), set()) for i in range(len(op.outputs))))
                  for op in ops}
    chainable = {op.id for op in ops if _chains(op, softmax_joins)}
    parent = {i: i for i in chainable}

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for op in ops:
        if op.id not in chainable:
            continue
        for producer in {v[0] for v in op.inputs}:
            if producer in chainable and by_id[producer].phase is op.phase and op_readers[producer] == {op.id}:
                parent[find(producer)] = find(op.id)

    def type_of(value: Value):
        return by_id[value[0]].outputs[value[1]] if value[0] in by_id else graph.type_of(value)

    def inside(op_id: int, region: int) -> bool:
        return op_id in parent and find(op_id) == region

    def escapes(value: Value, region: int) -> bool:
        if value in kept:
            return True
        for reader in readers.get(value, ()):
            if not inside(reader, region):
                return True
            view = by_id[reader]
            if view.kind is OpKind.VIEW and any(escapes((reader, i), region) for i in range(len(view.outputs))):
                return True
        return False

    regions: dict[int, list[Op]] = {}
    for op in ops:
        if op.id in chainable:
            regions.setdefault(find(op.id), []).append(op)
        else:
            free = op.kind in (OpKind.VIEW, OpKind.PARAM, OpKind.INPUT)
            op.attrs.update(io_bytes=0 if free else op.bytes_read + op.bytes_written, launches=int(not free))
    for region, members in regions.items():
        reads: dict[Value, int] = {}
        writes = 0
        for op in members:
            op.attrs.update(io_bytes=0, launches=0)
            if op.kind is OpKind.VIEW:
                continue
            for value in op.inputs:
                source = _through_views(value, by_id, region, inside)
                if not inside(source[0], region):
                    reads[source] = type_of(value).nbytes
            writes += sum(out.nbytes for i, out in enumerate(op.outputs) if escapes((op.id, i), region))
        computing = [op for op in members if op.kind is not OpKind.VIEW]
        if computing:
            computing[-1].attrs.update(io_bytes=sum(reads.values()) + writes, launches=1)


def _through_views(value: Value, by_id: dict[int, Op], region: int, inside) -> Value:
    """The tensor a value views, following view ops inside the region."""
    while value[0] in by_id and by_id[value[0]].kind is OpKind.VIEW and inside(value[0], region) \
            and by_id[value[0]].inputs:
        value = by_id[value[0]].inputs[0]
    return value


def _chains(op: Op, softmax_joins: bool) -> bool:
    if op.members or op.target == "dropout":
        return False
    return op.kind in _CHAIN or (softmax_joins and op.target == "softmax")


def _flash_attention(graph: Graph, saved: list[SavedTensor]) -> list[SavedTensor]:
    """Eager attention ops become flash kernels: s x s outputs (with any sink columns) neither written nor
    saved."""
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
    return [t for t in saved if (t.op, t.output) not in dropped]


def _fused_loss(graph: Graph, saved: list[SavedTensor]) -> list[SavedTensor]:
    """The forward chain from the logits (a matmul's output) to the loss, through casts, views and
    log-softmax, runs as one kernel: its intermediates are not written (``attrs["fused_away"]``) nor kept,
    and the 16-bit logits are kept in their place."""
    chain, logits = set(), None
    for loss in (op for op in graph.ops if op.kind is OpKind.LOSS and op.phase is Phase.FORWARD):
        frontier = [loss.inputs[0][0]]
        while frontier:
            op = graph.op(frontier.pop())
            if op.kind is OpKind.MATMUL:
                logits = (op.id, 0)
            elif op.kind in (OpKind.VIEW, OpKind.ELEMENTWISE, OpKind.REDUCTION) and op.inputs:
                chain.add(op.id)
                frontier.append(op.inputs[0][0])
    if logits is None:
        return saved
    for op_id in chain:
        graph.op(op_id).attrs.update(fused_away=True, io_bytes=0, launches=0)
    kept = [t for t in saved if t.op not in chain]
    if not any((t.op, t.output) == logits for t in kept):
        kept.append(SavedTensor(logits[0], logits[1], graph.type_of(logits).nbytes, None))
    return sorted(kept)


def _is_square(t, seq: int) -> bool:
    """An s x s attention tensor (scores, probabilities, masks), or s x (s + 1) with a sink logit beside the
    keys (GPT-OSS's attention sinks: one extra column per head, which flash kernels take as a bias)."""
    return len(t.shape) >= 2 and t.shape[-2] == seq and t.shape[-1] in (seq, seq + 1)
