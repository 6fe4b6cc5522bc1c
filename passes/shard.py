"""shard: split every op over tensor, sequence, context and data parallelism, and insert the collectives.

Tensor parallelism (Megatron-LM, Shoeybi et al. 2019) follows the roles the ``tensor_roles`` pass found in
the dataflow (column, row, split, replicated): split ops' work is divided over the TP group, a row-parallel
matmul's partial sums and a column-parallel matmul's input gradient are all-reduced.

Sequence parallelism (Korthikanti et al. 2022) splits the replicated ops of a block (norms, dropout,
residual adds) along the sequence and turns each all-reduce into a reduce-scatter plus an all-gather.
Context parallelism splits every activation along the sequence; attention all-gathers K and V (and
reduce-scatters their gradients). Data parallelism adds the collectives of each parameter: with ZeRO 0
and 1 an all-reduce of the accumulated gradient once per step (Megatron-LM's distributed optimizer:
reduce-scatter and all-gather, the same volume); ZeRO 1 (the distributed optimizer) reduce-scatters the
accumulated gradient and all-gathers the updated 16-bit parameters once per step; ZeRO 2 keeps only a
shard of the gradient, so every micro-batch's backward reduce-scatters it, and the updated parameters are
all-gathered once per step; ZeRO 3 keeps only a shard of the parameters as well and all-gathers them
before every micro-batch's forward and again before its backward (Rajbhandari et al. 2020, §5). With a
``shard_group`` (hybrid sharding, FSDP's HYBRID_SHARD) the shards span groups of that many data-parallel
ranks (group ``dps``): gathers and reduce-scatters run inside a group, and each shard's gradient is then
all-reduced across the groups (``dpr``) once per step. Per-step collectives carry ``attrs["per_step"]``;
every data-parallel collective says whether it moves gradients or parameters (``attrs["dp_phase"]``).

Expert parallelism (GShard, Lepikhin et al. 2020 §2.2; Megatron-LM's MoE layer) splits the experts of an
MoE layer over ``ep`` data-parallel ranks: expert weights (3-D parameters ``[E, ., .]``) are divided over
the EP group, their gradients reduced over the remaining ``dp/ep`` ranks (group ``edp``), and the routed
tokens travel to their experts' ranks and back by all-to-all (dispatch before the first expert matmul,
combine after the last; the backward mirrors both). Under the routing model (:class:`watos.plan.Routing`)
the busiest EP rank receives ``load`` times the mean of a balanced top-k routing, so dropless expert
matmuls (``_grouped_mm``, one row per routed token) and the all-to-alls carry that factor; expert matmuls
over static capacity buffers (GShard's einsum) already hold their padded rows in the graph. A token routed to
k experts is k rows of the all-to-all; a deduplicating dispatcher (``dedup_dispatch``: DeepEP, HybridEP)
sends it once to every device and node it goes to (``attrs["copies"] = k``, see
:func:`watos.network.collectives.collective_time`).

Per op: ``attrs["shard"]`` (how many devices share its work), ``attrs["mnk"]`` for
matmuls (the per-device problem). Collectives are ops of kind ``collective`` with ``attrs["group"]`` and
``attrs["bytes"]`` (per device). ``analyses["sharding"]`` (:class:`~watos.ir.analyses.Sharding`) lists the
device ranks of every group (:func:`watos.plan.parallel_groups`: Megatron order, TP fastest, then CP, then
DP, then PP; EP groups are runs of ``ep`` consecutive DP ranks) and the parameters split over TP and EP.
"""
from __future__ import annotations

import math

from pydantic import Field

from watos.cost.convolution import convolution_gemm
from watos.ir import DTYPE_BYTES, Graph, Op, OpKind, Phase, TensorType, Value
from watos.ir.analyses import Sharding
from watos.ir.aten import is_grouped_mm
from watos.ir.pass_manager import Pass, PassConfig, register_pass
from watos.ir.queries import expert_count, expert_params, routed_top_k, tp_split
from watos.plan import parallel_groups


@register_pass("shard")
class Shard(Pass):
    stage = "cost"
    requires = frozenset({"fusion", "tp_roles"})
    provides = frozenset({"sharding"})

    class Config(PassConfig):
        tp: int = Field(1, description="tensor-parallel degree")
        pp: int = Field(1, description="pipeline stages")
        dp: int = Field(1, description="data-parallel replicas")
        cp: int = Field(1, description="context-parallel degree")
        zero: int = Field(0, description="ZeRO stage (0-3)")
        sequence_parallel: bool = Field(False, description="split a block's replicated ops along the sequence")
        grad_reduce_bytes: int = Field(4, description="bytes per gradient element reduced (Megatron-LM: fp32)")
        ep: int = Field(1, description="expert-parallel degree")
        load: float = Field(1.0, description="routed tokens on the busiest EP rank over the mean (the routing model)")
        shard_group: int | None = Field(None, description="ZeRO shards within groups of this many DP ranks (HSDP)")
        dedup_dispatch: bool = Field(False, description="the MoE dispatcher sends a token once per device and node "
                                                        "it goes to, not once per expert (DeepEP, HybridEP)")

    def run(self, graph: Graph) -> None:
        c = self.config
        split_params = {p for op in graph.ops if op.attrs.get("tp_role") in ("column", "row") for p in op.params}
        experts = expert_params(graph)
        collectives: dict[int, list[Op]] = {}
        if c.ep > 1:
            _expert_parallel(graph, experts, collectives, c)
        for op in graph.ops:
            role = op.attrs["tp_role"]
            tp_share = c.tp if tp_split(op) or (c.sequence_parallel and op.block is not None
                                                      and op.phase is not Phase.OPTIMIZER) else 1
            cp_share = c.cp if op.phase is not Phase.OPTIMIZER and op.kind not in (OpKind.PARAM,) else 1
            if op.phase is Phase.OPTIMIZER:
                tp_share = c.tp if op.attrs.get("param") in split_params else 1
                # A rank updates only its experts; under ZeRO the schedule already divides by dp·cp.
                if op.attrs.get("param") in experts and c.zero == 0:
                    tp_share *= c.ep
            op.attrs["shard"] = tp_share * cp_share
            if op.kind is OpKind.MATMUL:
                forward = graph.get(op.grad_of) if op.phase is Phase.BACKWARD else None
                # A backward matmul runs the same three dimensions as its forward, permuted.
                op.attrs["mnk"] = forward.attrs["mnk"] if forward is not None and "mnk" in forward.attrs \
                    else _matmul_dims(graph, op, role, c.tp, c.cp)
            for collective in _tp_collectives(graph, op, c):
                collectives.setdefault(op.id, []).append(collective)
            if c.cp > 1 and op.kind is OpKind.ATTENTION:
                collectives.setdefault(op.id, []).append(_context_parallel_exchange(graph, op, c))
        for label, value in graph.outputs.items():
            if label.startswith("grad:") and c.dp * c.cp > 1:
                name = label.removeprefix("grad:")
                expert = name in experts and c.ep > 1
                numel = graph.type_of(value).numel // (c.tp if name in split_params else 1) // (c.ep if expert else 1)
                if expert and c.dp * c.cp == c.ep:
                    continue  # every expert lives on one rank of its TP/CP coordinate: nothing to reduce
                for kind, group, per_step, share, forward in _data_parallel_collectives(c, expert):
                    # gradients reduce in grad_reduce_bytes; parameters gather in their own dtype
                    width = DTYPE_BYTES[graph.type_of(value).dtype] if kind == "all_gather" else c.grad_reduce_bytes
                    collective = _collective(graph, kind, group, numel * width // share, value, graph.op(value[0]),
                                             param=name, per_step=per_step,
                                             dp_phase="param" if kind == "all_gather" else "grad")
                    if forward:
                        collective.phase = Phase.FORWARD  # ZeRO 3's first gather feeds the forward
                    collectives.setdefault(value[0], []).append(collective)
        _insert_after(graph, collectives)
        graph.analyses["sharding"] = Sharding(groups=parallel_groups(c.tp, c.cp, c.dp, c.pp, c.ep, c.shard_group),
                                              split_params=tuple(sorted(split_params)),
                                              expert_params=tuple(sorted(experts)) if c.ep > 1 else ())


def _expert_parallel(graph: Graph, experts: dict[str, Op], collectives: dict[int, list[Op]], c) -> None:
    """Mark the expert matmuls of every block and add its dispatch and combine all-to-alls (module docstring)."""
    forward: dict[int, list[Op]] = {}
    for op in graph.ops:
        if op.phase is Phase.FORWARD and op.kind is OpKind.MATMUL and experts.keys() & set(op.params):
            forward.setdefault(op.block, []).append(op)
    expert_ops = {op.id: op for ops in forward.values() for op in ops}
    for op in graph.ops:
        if op.phase is Phase.BACKWARD and op.grad_of in expert_ops and op.kind is OpKind.MATMUL:
            expert_ops[op.id] = op
    weight_shapes = {param.outputs[0].shape for param in experts.values()}
    for op in expert_ops.values():
        op.attrs["expert"] = True
        load = _routed_load(op, c)
        read = [graph.type_of(v) for v in op.inputs if graph.op(graph.storage_root(v)[0]).attrs.get("name") in experts]
        written = [t for t in op.outputs if t.shape in weight_shapes and op.phase is Phase.BACKWARD]  # weight gradients
        weights = sum(t.nbytes for t in (*read, *written))
        op.attrs.update(load=load, io_bytes=(op.attrs["io_bytes"] - weights) * load + weights / c.ep)
    tokens_split = c.cp * (c.tp if c.sequence_parallel else 1)
    copies = routed_top_k(graph, expert_count(graph)) if c.dedup_dispatch else 1
    for ops in forward.values():
        first, last = ops[0], ops[-1]
        dispatched = next(v for v in first.inputs if not graph.is_parameter(v))
        load = _routed_load(first, c)
        dispatch = graph.type_of(dispatched).nbytes * load / tokens_split
        combine = last.outputs[0].nbytes * load / tokens_split
        collectives.setdefault(dispatched[0], []).append(
            _collective(graph, "all_to_all", "ep", dispatch, dispatched, first, moe="dispatch", copies=copies))
        collectives.setdefault(last.id, []).append(
            _collective(graph, "all_to_all", "ep", combine, last.out, last, moe="combine", copies=copies))
        backward_of_last = [op for op in expert_ops.values() if op.grad_of == last.id]
        backward_of_first = [op for op in expert_ops.values() if op.grad_of == first.id]
        if backward_of_last and backward_of_first:
            entry, exit_ = min(backward_of_last, key=lambda o: o.id), max(backward_of_first, key=lambda o: o.id)
            collectives.setdefault(entry.id, []).append(
                _collective(graph, "all_to_all", "ep", combine, entry.out, entry, moe="combine gradient", copies=copies))
            collectives.setdefault(exit_.id, []).append(
                _collective(graph, "all_to_all", "ep", dispatch, exit_.out, exit_, moe="dispatch gradient", copies=copies))


def _routed_load(op: Op, c) -> float:
    """The busiest EP rank's share of an expert matmul's rows over the mean: the routing model's for a
    dropless grouped matmul (one row per routed token), 1 for static capacity buffers (already padded)."""
    return c.load if is_grouped_mm(op.aten) else 1.0


def _matmul_dims(graph: Graph, op: Op, role: str, tp: int, cp: int) -> list[int]:
    """Per-device (m, n, k) of a forward matmul [.., m, k] x [k, n] (a grouped expert matmul: all routed rows
    [m, k] x [E, k, n]): column-parallel splits n, row-parallel splits k, a split batched matmul (attention
    heads) splits its batch."""
    if op.target == "convolution":  # its implicit GEMM; TP does not split a convolution (heads = 0: tp = 1)
        x, w = (graph.type_of(v) for v in op.inputs[:2])
        m, n, k = convolution_gemm(x if op.attrs.get("transposed") else op.outputs[0], w)
        return [max(1, m // cp), n, k]
    grouped = is_grouped_mm(op.aten)  # operands first, then the group offsets
    a, b = (graph.type_of(v) for v in (op.inputs[:2] if grouped else op.inputs[-2:]))
    if grouped:
        a = TensorType(a.shape[-2:], a.dtype)
    batch = math.prod(a.shape[:-2]) if len(a.shape) > 2 else 1
    m, k, n = (a.shape[-2] if len(a.shape) >= 2 else 1), a.shape[-1], b.shape[-1]
    if role == "column":
        n = max(1, n // tp)
    elif role == "row":
        k = max(1, k // tp)
    elif role == "split":
        batch = max(1, batch // tp)
    return [max(1, batch * m // cp), n, k]


def _tp_collectives(graph: Graph, op: Op, c) -> list[Op]:
    if c.tp == 1:
        return []
    partial = (op.phase is Phase.FORWARD and op.attrs["tp_role"] == "row") or op.attrs.get("partial")
    if not partial:
        return []
    nbytes = op.outputs[0].nbytes // c.cp
    if c.sequence_parallel and op.block is not None:
        return [_collective(graph, "reduce_scatter", "tp", nbytes, op.out, op),
                _collective(graph, "all_gather", "tp", nbytes, op.out, op)]
    return [_collective(graph, "all_reduce", "tp", nbytes, op.out, op)]


def _context_parallel_exchange(graph: Graph, op: Op, c) -> Op:
    """K and V all-gathered over the CP group before attention (gradients reduce-scattered after)."""
    key_value = sum(graph.type_of(v).nbytes for v in op.inputs[1:3]) // (c.cp * c.tp)
    kind = "all_gather" if op.phase is Phase.FORWARD else "reduce_scatter"
    return _collective(graph, kind, "cp", key_value, op.inputs[1], op)


def _data_parallel_collectives(c, expert: bool) -> list[tuple[str, str, bool, int, bool]]:
    """(collective, group, once per step rather than per micro-batch, divisor of the bytes, in the forward) of
    one parameter's data-parallel traffic (module docstring)."""
    hybrid = c.shard_group and c.zero > 0 and not expert
    shards = "dps" if hybrid else ("edp" if expert else "dp")
    if c.zero == 0:
        return [("all_reduce", shards, True, 1, False)]
    reduce = [("reduce_scatter", shards, c.zero < 2, 1, False)]
    reduce += [("all_reduce", "dpr", True, c.shard_group, False)] if hybrid else []
    if c.zero < 3:
        return reduce + [("all_gather", shards, True, 1, False)]
    return reduce + [("all_gather", shards, False, 1, True), ("all_gather", shards, False, 1, False)]


def _collective(graph: Graph, kind: str, group: str, nbytes: int, value: Value, after: Op, **attrs) -> Op:
    t = graph.type_of(value)
    return Op(id=graph.next_id(), name=f"{kind}_{group}_{after.name}", target=kind, kind=OpKind.COLLECTIVE,
              phase=after.phase, inputs=[value], outputs=[TensorType(t.shape, t.dtype)], module=after.module,
              block=after.block, grad_of=after.grad_of,
              attrs={"group": group, "bytes": int(nbytes), "tp_role": "replicated", "shard": 1, **attrs})


def _insert_after(graph: Graph, collectives: dict[int, list[Op]]) -> None:
    ops: list[Op] = []
    for op in graph.ops:
        ops.append(op)
        ops.extend(collectives.get(op.id, ()))
    graph.ops = ops
    graph.reindex()
