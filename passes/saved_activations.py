"""saved_activations: the bytes the backward pass keeps from the forward, per block per micro-batch.

The joint graph says exactly which forward tensors the backward reads: those are the saved
activations. They are counted by storage, once: a view or ``detach`` of a tensor shares its storage,
a transposed weight is the parameter itself (not an activation), buffers are constants.

A saved tensor belongs to the block whose backward reads it; a tensor read by the backward of several
blocks (rotary tables, a shared mask) belongs to the block, or model level, that produced it.

Two accountings are reported, and the pass says which it uses:
  * ``as_traced``: what eager PyTorch keeps, composite ops included (``gelu_new`` keeps its
    ``pow``/``tanh`` intermediates, a composite RMSNorm its fp32 copy);
  * ``fused`` (used): each chain of elementwise ops, and each norm, runs as one kernel that keeps
    only the chain's inputs and the outputs other forward ops read; dropout masks are kept.
    This is what a fused GeLU/SwiGLU/norm kernel, and Korthikanti et al. 2022's count, assume.
"""
from __future__ import annotations

from collections import defaultdict

from watos.ir import Graph, Op, OpKind, Phase, Value
from watos.ir.analyses import ActivationAccount, SavedActivations, SavedTensor
from watos.ir.aten import SHAPE_ONLY
from watos.ir.pass_manager import Pass, PassError, register_pass

_CHAINABLE = (OpKind.ELEMENTWISE, OpKind.VIEW)


@register_pass("saved_activations")
class FindSavedActivations(Pass):
    requires = frozenset({"blocks"})
    provides = frozenset({"saved_activations"})

    def run(self, graph: Graph) -> None:
        saved = _saved_roots(graph)
        fused = _fused_roots(graph, saved)
        graph.analyses["saved_activations"] = SavedActivations(
            as_traced=_account(graph, saved), fused=_account(graph, fused), used="fused",
            tensors={"as_traced": _tensors(graph, saved), "fused": _tensors(graph, fused)})
        for op in graph.ops:
            op.attrs.pop("saved_bytes", None)
        for root in fused:
            op = graph.op(root[0])
            op.attrs["saved_bytes"] = op.attrs.get("saved_bytes", 0) + graph.type_of(root).nbytes

    def verify(self, graph: Graph) -> None:
        report = graph.analyses["saved_activations"]
        if report.fused.total_bytes > report.as_traced.total_bytes:
            raise PassError("fused accounting keeps more bytes than the traced graph")


def _saved_roots(graph: Graph) -> dict[Value, set[int | None]]:
    """Storage roots of forward tensors read by backward ops -> blocks whose backward reads them."""
    saved: dict[Value, set[int | None]] = defaultdict(set)
    for op in graph.phase_ops(Phase.BACKWARD):
        if op.target in SHAPE_ONLY:
            continue
        for value in op.inputs:
            producer = graph.op(value[0])
            if producer.phase is not Phase.FORWARD or _window_mask(graph, op, value):
                continue
            root = graph.storage_root(value)
            if _is_activation(graph.op(root[0])):
                saved[root].add(op.block)
    return saved


def _window_mask(graph: Graph, op: Op, value: Value) -> bool:
    """Whether ``value`` is the mask a sliding-window attention's backward reads: a windowed flash kernel takes
    the window as an argument and keeps no mask (the traced SDPA reads the one transformers built)."""
    forward = graph.get(op.grad_of) if op.kind is OpKind.ATTENTION and "window" in op.attrs else None
    return forward is not None and len(forward.inputs) > 3 and value == forward.inputs[3]


def _is_activation(op: Op) -> bool:
    return op.kind is not OpKind.PARAM and op.target != "buffer"


def _fused_roots(graph: Graph, saved: dict[Value, set[int | None]]) -> dict[Value, set[int | None]]:
    """Saved roots when elementwise chains and norms run as single kernels (see module doc): a kernel keeps
    the inputs it recomputes its intermediates from, or, when the backward needs less than that (a rotary
    embedding's backward reads only its cos/sin tables), what the backward reads of it, whichever is smaller."""
    region = _kernel_regions(graph)
    members: dict[int, list[Op]] = defaultdict(list)
    for op in graph.ops:
        if op.id in region:
            members[region[op.id]].append(op)
    forward_readers = _forward_readers(graph)
    kept: dict[Value, set[int | None]] = defaultdict(set)
    inner: dict[int, dict[Value, set[int | None]]] = defaultdict(dict)  # region -> its saved roots
    for root, blocks in saved.items():
        rid = region.get(root[0])
        read_outside = any(region.get(r.id) != rid for r in forward_readers.get(root, ()))
        if rid is None or read_outside:
            kept[root] |= blocks
        else:
            inner[rid][root] = blocks
    for rid, roots in inner.items():
        blocks = set().union(*roots.values())
        inside = {m.id for m in members[rid]}
        inputs = {graph.storage_root(value) for m in members[rid] for value in m.inputs}
        inputs = {v for v in inputs if v[0] not in inside and _is_activation(graph.op(v[0]))
                  and graph.op(v[0]).phase is Phase.FORWARD}
        # the backward's own needs: what it reads inside the kernel, and of the kernel's inputs
        needs = set(roots) | {v for v in inputs if v in saved}
        if sum(graph.type_of(v).nbytes for v in inputs) <= sum(graph.type_of(v).nbytes for v in needs):
            for value in inputs:
                kept[value] |= blocks
        else:
            for value, readers in roots.items():
                kept[value] |= readers
    return kept


def _kernel_regions(graph: Graph) -> dict[int, int]:
    """Op id -> region id: connected elementwise/view chains (dropout excluded) within one block, and fused
    norms. A chain stops at a block's edge: the residual stream joins every block's adds, and a region over
    several blocks would keep its inputs for all of them (a CNN's residual adds keep the stem's output)."""
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for op in graph.phase_ops(Phase.FORWARD):
        if (op.kind in _CHAINABLE and op.target != "dropout") or (op.kind is OpKind.NORM and op.members):
            parent[op.id] = op.id
    for op_id in list(parent):
        op = graph.op(op_id)
        if op.kind is OpKind.NORM:
            continue
        for value in op.inputs:
            producer = graph.op(value[0])
            if value[0] in parent and producer.kind is not OpKind.NORM and producer.block == op.block:
                parent[find(op_id)] = find(value[0])
    return {op_id: find(op_id) for op_id in parent}


def _forward_readers(graph: Graph) -> dict[Value, list[Op]]:
    """Storage root -> forward ops (views excluded) that read it, through any view."""
    readers: dict[Value, list[Op]] = defaultdict(list)
    for op in graph.phase_ops(Phase.FORWARD):
        if op.kind is OpKind.VIEW:
            continue
        for value in op.inputs:
            readers[graph.storage_root(value)].append(op)
    return readers


def _owner(graph: Graph, root: Value, readers: set[int | None]) -> int | None:
    """The block a saved tensor belongs to: its only reader's, else its producer's."""
    return next(iter(readers)) if len(readers) == 1 else graph.op(root[0]).block


def _tensors(graph: Graph, roots: dict[Value, set[int | None]]) -> tuple[SavedTensor, ...]:
    """Every saved tensor, in graph order."""
    return tuple(sorted(SavedTensor(root[0], root[1], graph.type_of(root).nbytes, _owner(graph, root, readers))
                        for root, readers in roots.items()))


def _account(graph: Graph, roots: dict[Value, set[int | None]]) -> ActivationAccount:
    """Bytes per traced block, at model level, and over the whole model (blocks replicated)."""
    per_block: dict[int, int] = defaultdict(int)
    model_level = 0
    for root, readers in roots.items():
        nbytes = graph.type_of(root).nbytes
        owner = _owner(graph, root, readers)
        if owner is None:
            model_level += nbytes
        else:
            per_block[owner] += nbytes
    groups = {g.representative: g.count for g in graph.block_groups}
    total = model_level + sum(per_block[b] * groups.get(b, 0) for b in per_block) if groups \
        else model_level + sum(per_block.values())
    return ActivationAccount(per_block_bytes={str(b): per_block[b] for b in sorted(per_block)},
                             model_level_bytes=model_level, total_bytes=total)
