"""WATOS IR: the operator graph of one training step, as every pass sees it.

A :class:`Graph` is a list of :class:`Op` in execution order (forward, then backward, then optimizer).
Each op produces one or more tensors; an op input is a :data:`Value`, ``(producer op id, output index)``.
Parameters and model inputs are ops of kind ``param`` / ``input`` with no inputs of their own.

The graph is traced with only a few distinct transformer blocks when the model repeats them (see
``watos.frontend.trace``); :attr:`Graph.block_groups` records which full-model blocks each traced block stands
for, and :meth:`Graph.weight` turns that into a multiplicity, so that every total over the graph is a
total over the whole model.
"""
from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Iterable, Iterator

from watos.errors import WatosError

Value = tuple[int, int]
"""A tensor in the graph: (id of the op that produces it, index among that op's outputs)."""

DTYPE_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4, "fp64": 8, "i64": 8, "i32": 4, "i16": 2, "i8": 1,
               "u8": 1, "bool": 1, "fp8": 1, "c64": 8, "none": 0}


class OpKind(str, Enum):
    """Canonical operator classes; costing passes dispatch on these, never on ATen names."""

    INPUT = "input"
    PARAM = "param"
    MATMUL = "matmul"
    ATTENTION = "attention"
    ELEMENTWISE = "elementwise"
    NORM = "norm"
    REDUCTION = "reduction"
    EMBEDDING = "embedding"
    LOSS = "loss"
    VIEW = "view"
    COLLECTIVE = "collective"
    OTHER = "other"


class Phase(str, Enum):
    FORWARD = "forward"
    BACKWARD = "backward"
    OPTIMIZER = "optimizer"


@dataclass(frozen=True, slots=True)
class TensorType:
    shape: tuple[int, ...]
    dtype: str

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.numel * DTYPE_BYTES[self.dtype]

    def __str__(self) -> str:
        return f"{self.dtype}[{','.join(map(str, self.shape))}]"


@dataclass(slots=True)
class Op:
    """One operator of the training step.

    ``grad_of`` is, for a backward op, the forward op it differentiates (from autograd's sequence
    numbers). ``target`` is the canonical operator name (``matmul``, ``view``, ``mul``...), ``aten`` the ATen
    overload it was traced from (or ``fused`` for a region collapsed by a pass, whose original ops are
    kept in ``members``). Cost fields are filled by the ``annotate`` pass.
    """

    id: int
    name: str
    target: str
    kind: OpKind
    phase: Phase
    inputs: list[Value]
    outputs: list[TensorType]
    aten: str = ""
    module: str = ""
    block: int | None = None
    grad_of: int | None = None
    params: list[str] = field(default_factory=list)
    attrs: dict[str, Any] = field(default_factory=dict)
    members: list["Op"] = field(default_factory=list)
    flops: int = 0
    bytes_read: int = 0
    bytes_written: int = 0

    @property
    def out(self) -> Value:
        return (self.id, 0)


@dataclass(frozen=True)
class Region:
    """Ops to fuse into one (see :meth:`Graph.collapse`): members, and the fused op's identity."""

    members: list[int]
    name: str
    target: str
    kind: OpKind
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class BlockGroup:
    """Full-model transformer blocks that share one structure, costed through one traced block."""

    signature: str
    representative: int
    blocks: list[int]

    @property
    def count(self) -> int:
        return len(self.blocks)


@dataclass
class ModelInfo:
    """What the frontend knows about the model beyond the traced ops."""

    name: str
    family: str
    micro_batch: int
    seq_len: int
    dtype: str
    parameters: int
    num_blocks: int
    block_prefix: str | None
    traced_blocks: list[int]
    block_signatures: list[str]
    module_types: dict[str, str] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)


@dataclass
class Graph:
    """The WATOS IR of one training step of one micro-batch."""

    model: ModelInfo
    ops: list[Op]
    outputs: dict[str, Value]
    block_groups: list[BlockGroup] = field(default_factory=list)
    analyses: dict[str, Any] = field(default_factory=dict)
    properties: set[str] = field(default_factory=set)
    _by_id: dict[int, Op] = field(default_factory=dict, repr=False)
    _last_id: int = field(default=-1, repr=False)

    def __post_init__(self) -> None:
        self.reindex()
        self._last_id = max(self._by_id, default=-1)

    # -- structure ---------------------------------------------------------------------------
    def reindex(self) -> None:
        self._by_id = {op.id: op for op in self.ops}

    def op(self, op_id: int) -> Op:
        return self._by_id[op_id]

    def get(self, op_id: int | None) -> Op | None:
        """The op with this id, or None (``grad_of`` may name an op a pass removed)."""
        return self._by_id.get(op_id) if op_id is not None else None

    def type_of(self, value: Value) -> TensorType:
        return self._by_id[value[0]].outputs[value[1]]

    def storage_root(self, value: Value) -> Value:
        """The value that owns the storage ``value`` aliases (itself unless made by a view or an
        in-place op)."""
        while ((op := self._by_id[value[0]]).kind is OpKind.VIEW or op.attrs.get("inplace")) \
                and op.inputs:
            value = op.inputs[0]
        return value

    def is_parameter(self, value: Value) -> bool:
        """Whether ``value`` is a parameter, or a view of one (a weight read through a transpose)."""
        return self._by_id[self.storage_root(value)[0]].kind is OpKind.PARAM

    def next_id(self) -> int:
        """A fresh op id, never one used before (removed ops may still be named by ``grad_of``)."""
        self._last_id += 1
        return self._last_id

    def users(self) -> dict[int, list[Op]]:
        """Map op id -> ops that read any of its outputs (in graph order)."""
        users: dict[int, list[Op]] = {op.id: [] for op in self.ops}
        for op in self.ops:
            for pid in dict.fromkeys(v[0] for v in op.inputs):
                users[pid].append(op)
        return users

    def phase_ops(self, phase: Phase) -> Iterator[Op]:
        return (op for op in self.ops if op.phase is phase)

    def verify(self) -> None:
        """Structural invariants every pass must keep: ids unique, values defined before use."""
        seen: dict[int, int] = {}
        for op in self.ops:
            if op.id in seen:
                raise WatosError(f"IR: op id {op.id} ({op.name}) is defined twice")
            for producer, index in op.inputs:
                if producer not in seen:
                    raise WatosError(f"IR: {op.name} reads op {producer} before it is defined")
                if index >= seen[producer]:
                    raise WatosError(f"IR: {op.name} reads output {index} of op {producer}, "
                                     f"which has {seen[producer]}")
            seen[op.id] = len(op.outputs)
        for label, (producer, _) in self.outputs.items():
            if producer not in seen:
                raise WatosError(f"IR: graph output {label} refers to missing op {producer}")

    def clone(self) -> "Graph":
        """A copy whose ops (and members) can be annotated without touching this graph."""
        clone = Graph(model=self.model, ops=[_clone_op(op) for op in self.ops], outputs=dict(self.outputs),
                      block_groups=list(self.block_groups), analyses=dict(self.analyses),
                      properties=set(self.properties))
        clone._last_id = self._last_id
        return clone

    # -- replication ---------------------------------------------------------------------------
    def weight(self, op: Op) -> int:
        """How many times ``op`` occurs in the full model (0 for a traced duplicate block)."""
        if op.block is None or not self.block_groups:
            return 1
        for group in self.block_groups:
            if op.block == group.representative:
                return group.count
        return 0

    def total(self, attribute: str, ops: Iterable[Op] | None = None) -> int:
        """Sum of an op attribute over the full model (block multiplicities applied)."""
        return sum(getattr(op, attribute) * self.weight(op) for op in (self.ops if ops is None else ops))

    # -- rewriting -----------------------------------------------------------------------------
    def replace_uses(self, mapping: dict[Value, Value]) -> None:
        """Redirect every read of a key value to its mapped value (ops, fused ops' members and
        graph outputs)."""
        stack = list(self.ops)
        while stack:
            op = stack.pop()
            op.inputs = [mapping.get(v, v) for v in op.inputs]
            stack.extend(op.members)
        self.outputs = {k: mapping.get(v, v) for k, v in self.outputs.items()}

    def collapse(self, regions: list[Region]) -> list[Op]:
        """Replace each region of ops by one op that keeps the originals as ``members``.

        A fused op reads every value its region reads from outside, and outputs every value the
        region produces that is read outside it (including by the backward pass: saved tensors stay
        visible). Ops on a path from one member to another join the region, so that it stays convex
        (no value leaves it and comes back). A fused op takes the place of its region's last member;
        ops that read it move after it. Its ``grad_of`` is its members' (when they agree), and ops
        whose ``grad_of`` was a member now name the fused op. Regions must not overlap.
        """
        position = {op.id: i for i, op in enumerate(self.ops)}
        hulls = [self._convex_hull(set(r.members), position) for r in regions]
        region_of: dict[int, int] = {}
        for index, hull in enumerate(hulls):
            for op in hull:
                if region_of.setdefault(op.id, index) != index:
                    raise WatosError(f"IR: op {op.name} is in two fused regions")
        escaping: list[dict[Value, None]] = [{} for _ in regions]
        for op in self.ops:
            for value in op.inputs:
                r = region_of.get(value[0])
                if r is not None and region_of.get(op.id) != r:
                    escaping[r][value] = None
        for value in self.outputs.values():
            if (r := region_of.get(value[0])) is not None:
                escaping[r][value] = None
        mapping: dict[Value, Value] = {}
        replaces: dict[int, Op] = {}
        fused_ops = []
        for region, hull, outs in zip(regions, hulls, escaping):
            inside = {m.id for m in hull}
            outs_sorted = sorted(outs, key=lambda v: (position[v[0]], v[1]))
            owners = {m.grad_of for m in hull}
            fused = Op(id=self.next_id(), name=region.name, target=region.target, kind=region.kind,
                       phase=hull[-1].phase, outputs=[self.type_of(v) for v in outs_sorted], aten="fused",
                       inputs=list(dict.fromkeys(v for m in hull for v in m.inputs if v[0] not in inside)),
                       module=_common_module(m.module for m in hull), block=hull[-1].block,
                       params=list(dict.fromkeys(p for m in hull for p in m.params)),
                       attrs=dict(region.attrs), members=hull,
                       grad_of=owners.pop() if len(owners) == 1 else None)
            mapping.update({v: (fused.id, i) for i, v in enumerate(outs_sorted)})
            replaces[hull[-1].id] = fused
            fused_ops.append(fused)
        self.ops = [replaces.get(op.id, op) for op in self.ops if op.id not in region_of or op.id in replaces]
        self.reindex()
        member_to_fused = {m.id: f.id for f in fused_ops for m in f.members}
        for op in self.ops:
            if op.grad_of in member_to_fused:
                op.grad_of = member_to_fused[op.grad_of]
        self.replace_uses(mapping)
        self._stable_toposort()
        return fused_ops

    def _convex_hull(self, member_ids: set[int], position: dict[int, int]) -> list[Op]:
        """``member_ids`` plus every op on a path between two of them, in execution order."""
        first = min(position[i] for i in member_ids)
        last = max(position[i] for i in member_ids)
        span = self.ops[first:last + 1]
        downstream = set(member_ids)
        for op in span:
            if any(v[0] in downstream for v in op.inputs):
                downstream.add(op.id)
        upstream = set(member_ids)
        for op in reversed(span):
            if op.id in upstream:
                upstream.update(v[0] for v in op.inputs)
        return [op for op in span if op.id in member_ids or (op.id in downstream and op.id in upstream)]

    def _stable_toposort(self) -> None:
        """Reorder ops so every value is defined before use, otherwise keeping the current order."""
        position = {op.id: i for i, op in enumerate(self.ops)}
        waiting = {op.id: len({v[0] for v in op.inputs}) for op in self.ops}
        users = self.users()
        ready = [position[op.id] for op in self.ops if waiting[op.id] == 0]
        heapq.heapify(ready)
        order: list[Op] = []
        while ready:
            op = self.ops[heapq.heappop(ready)]
            order.append(op)
            for user in users[op.id]:
                waiting[user.id] -= 1
                if waiting[user.id] == 0:
                    heapq.heappush(ready, position[user.id])
        if len(order) != len(self.ops):
            stuck = next(op for op in self.ops if waiting[op.id] > 0)
            raise WatosError(f"IR: cycle through {stuck.name} after a rewrite")
        self.ops = order


def _clone_op(op: Op) -> Op:
    return Op(op.id, op.name, op.target, op.kind, op.phase, list(op.inputs), op.outputs, op.aten, op.module,
              op.block, op.grad_of, op.params, dict(op.attrs), [_clone_op(m) for m in op.members], op.flops,
              op.bytes_read, op.bytes_written)


def _common_module(paths: Iterable[str]) -> str:
    parts = [p.split(".") if p else [] for p in paths]
    common: list[str] = []
    for level in zip(*parts):
        if len(set(level)) != 1:
            break
        common.append(level[0])
    return ".".join(common)
