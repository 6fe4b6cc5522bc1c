"""shard: split every op over tensor, sequence, context and data parallelism, and insert the collectives.

Tensor parallelism (Megatron-LM, Shoeybi et al. 2019) follows the roles the ``tensor_roles`` pass found in
the dataflow (column, row, split, replicated): split ops' work is divided over the TP group, a row-parallel
matmul's partial sums and a column-parallel matmul's input gradient are all-reduced.

Sequence parallelism (Korthikanti et al. 2022) splits the replicated ops of a block (norms, dropout,
residual adds) along the sequence and turns each all-reduce into a reduce-scatter plus an all-gather.
Context parallelism splits every activation along the sequence; attention all-gathers K and V (and
reduce-scatters their gradients). Data parallelism adds one gradient collective per parameter: an
all-reduce (ZeRO 0 and 1), or a reduce-scatter of gradients and an all-gather of parameters (ZeRO 2), and
for ZeRO 3 an all-gather of parameters before the forward and again before the backward.

Per op: ``attrs["shard"]`` (how many devices share its work), ``attrs["mnk"]`` for
matmuls (the per-device problem). Collectives are ops of kind ``collective`` with ``attrs["group"]`` and
``attrs["bytes"]`` (per device). ``analyses["groups"]`` lists the device ranks of every group, Megatron
order: TP fastest, then CP, then DP, then PP.
"""
from __future__ import annotations

import math

from watos.ir import Graph, Op, OpKind, Phase, TensorType, Value
from watos.pass_manager import Pass, PassConfig, register_pass
from watos.passes.tensor_roles import SPLIT_ROLES


@register_pass("shard")
class Shard(Pass):
    requires = frozenset({"fused", "tp_roles"})
    provides = frozenset({"sharded"})
    in_default_pipeline = False

    class Config(PassConfig):
        tp: int = 1
        pp: int = 1
        dp: int = 1
        cp: int = 1
        zero: int = 0
        sequence_parallel: bool = False
        grad_reduce_bytes: int = 4  # Megatron-LM reduces fp32 main gradients

    def run(self, graph: Graph) -> None:
        c = self.config
        split_params = {p for op in graph.ops if op.attrs.get("tp_role") in ("column", "row") for p in op.params}
        collectives: dict[int, list[Op]] = {}
        for op in graph.ops:
            role = op.attrs["tp_role"]
            tp_share = c.tp if role in SPLIT_ROLES or (c.sequence_parallel and op.block is not None
                                                      and op.phase is not Phase.OPTIMIZER) else 1
            cp_share = c.cp if op.phase is not Phase.OPTIMIZER and op.kind not in (OpKind.PARAM,) else 1
            if op.phase is Phase.OPTIMIZER:
                tp_share = c.tp if op.attrs.get("param") in split_params else 1
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
                numel = graph.type_of(value).numel // (c.tp if name in split_params else 1)
                nbytes = numel * c.grad_reduce_bytes
                for kind in _data_parallel_collectives(c.zero):
                    collectives.setdefault(value[0], []).append(
                        _collective(graph, kind, "dp", nbytes, value, graph.op(value[0]), param=name))
        _insert_after(graph, collectives)
        graph.analyses["groups"] = parallel_groups(c.tp, c.cp, c.dp, c.pp)
        graph.analyses["split_params"] = sorted(split_params)


def _matmul_dims(graph: Graph, op: Op, role: str, tp: int, cp: int) -> list[int]:
    """Per-device (m, n, k) of a forward matmul [.., m, k] x [k, n]: column-parallel splits n,
    row-parallel splits k, a split batched matmul (attention heads) splits its batch."""
    a, b = graph.type_of(op.inputs[-2]), graph.type_of(op.inputs[-1])
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


def _data_parallel_collectives(zero: int) -> list[str]:
    if zero <= 1:
        return ["all_reduce"]
    if zero == 2:
        return ["reduce_scatter", "all_gather"]
    return ["reduce_scatter", "all_gather", "all_gather", "all_gather"]


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


def parallel_groups(tp: int, cp: int, dp: int, pp: int) -> dict[str, list[list[int]]]:
    """Device ranks of every TP, CP, DP and PP group (rank = t + tp·(c + cp·(d + dp·p)))."""
    def rank(t: int, c: int, d: int, p: int) -> int:
        return t + tp * (c + cp * (d + dp * p))

    return {
        "tp": [[rank(t, c, d, p) for t in range(tp)] for p in range(pp) for d in range(dp) for c in range(cp)],
        "cp": [[rank(t, c, d, p) for c in range(cp)] for p in range(pp) for d in range(dp) for t in range(tp)],
        "dp": [[rank(t, c, d, p) for d in range(dp) for c in range(cp)] for p in range(pp) for t in range(tp)],
        "pp": [[rank(t, c, d, p) for p in range(pp)] for d in range(dp) for c in range(cp) for t in range(tp)],
    }
