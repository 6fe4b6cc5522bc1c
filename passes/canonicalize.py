"""canonicalize: one name per operation, no alias ops, one op per attention and per norm.

* ATen aliases and overloads get one canonical target (``_unsafe_view`` -> ``view``, ``mul.Scalar``
  -> ``mul``, every SDPA variant -> ``attention`` / ``attention_backward``).
* ``detach``/``alias`` ops are removed: they share their input's storage and cost nothing.
* The eager pattern matmul -> [scale, mask] -> softmax -> [cast, dropout] -> matmul becomes one
  ``attention`` op (``impl: eager``); the backward ops that differentiate it become one
  ``attention_backward`` op. Tensors the backward reads from inside the pattern (probabilities,
  dropout mask) stay visible as outputs of the fused op.
* The ops of a normalisation module (composite RMSNorm and the like) become one ``norm`` op, and their
  backward one ``norm_backward`` op.
Fused ops keep the original ops as ``members``, so their cost is still that of the unfused kernels.
"""
from __future__ import annotations

from watos.ir import Graph, Op, OpKind, Phase, Region, aten
from watos.ir.pass_manager import Pass, PassError, register_pass

_PASS_THROUGH = (OpKind.VIEW, OpKind.ELEMENTWISE)


@register_pass("canonicalize")
class Canonicalize(Pass):
    provides = frozenset({"canonical"})

    def run(self, graph: Graph) -> None:
        for op in graph.ops:
            if op.aten.startswith("aten."):
                _, packet, overload = op.aten.split(".")
                op.target = aten.canonical_name(packet, overload)
        _drop_aliases(graph)
        for op in graph.ops:
            if op.kind is OpKind.ATTENTION:
                op.attrs.update(impl=op.aten.split(".")[1].lstrip("_"),
                                causal=bool(op.attrs.pop("is_causal", False)),
                                dropout=float(op.attrs.pop("dropout_p", 0.0)))
        users = graph.users()
        forward: list[Region] = []
        for softmax in [op for op in graph.ops if op.target == "softmax" and op.phase is Phase.FORWARD]:
            members = _eager_attention_region(graph, softmax, users)
            if members:
                forward.append(Region(members, f"attention_{softmax.id}", "attention", OpKind.ATTENTION,
                                      {"impl": "eager", "dropout": _dropout_p(graph, members)}))
        for module in _norm_modules(graph):
            members = [op.id for op in graph.ops if op.module == module and op.phase is Phase.FORWARD
                       and op.kind not in (OpKind.PARAM, OpKind.INPUT)]
            if sum(graph.op(i).kind is not OpKind.VIEW for i in members) > 1:
                forward.append(Region(members, f"norm_{members[0]}", "norm", OpKind.NORM,
                                      {"impl": graph.model.module_types[module]}))
        graph.collapse(forward + _backward_regions(graph, forward))

    def verify(self, graph: Graph) -> None:
        for op in graph.ops:
            if op.target == "alias":
                raise PassError(f"{op.name}: alias op survived canonicalization")
            if op.kind is OpKind.ATTENTION and not op.target.startswith("attention"):
                raise PassError(f"{op.name}: attention op named {op.target}")


def _drop_aliases(graph: Graph) -> None:
    aliases = {op.out: op.inputs[0] for op in graph.ops if op.target == "alias" and op.inputs}
    for value, source in list(aliases.items()):
        while source in aliases:
            source = aliases[source]
        aliases[value] = source
    graph.replace_uses(aliases)
    graph.ops = [op for op in graph.ops if op.out not in aliases]
    graph.reindex()


def _eager_attention_region(graph: Graph, softmax: Op, users: dict[int, list[Op]]) -> list[int]:
    """Ops from the score matmul through softmax to the value matmul, or [] if not that pattern."""
    upstream: list[int] = []
    producer = graph.op(softmax.inputs[0][0])
    while producer.kind in _PASS_THROUGH and producer.inputs:
        upstream.append(producer.id)
        producer = graph.op(producer.inputs[0][0])
    if producer.kind is not OpKind.MATMUL or producer.phase is not Phase.FORWARD:
        return []
    upstream.append(producer.id)
    downstream: list[int] = []
    frontier = [softmax]
    value_matmul = None
    while frontier:
        op = frontier.pop()
        for user in users[op.id]:
            if user.phase is not Phase.FORWARD or user.id in downstream:
                continue
            if user.kind is OpKind.MATMUL and user.inputs[-2][0] == op.id:
                value_matmul = value_matmul or user
            elif user.kind in _PASS_THROUGH:
                downstream.append(user.id)
                frontier.append(user)
    if value_matmul is None:
        return []
    return upstream + [softmax.id] + downstream + [value_matmul.id]


def _dropout_p(graph: Graph, region: list[int]) -> float:
    for op_id in region:
        op = graph.op(op_id)
        if op.target == "dropout":
            return float(op.attrs.get("p", 0.0))
    return 0.0


def _backward_regions(graph: Graph, forward: list[Region]) -> list[Region]:
    """For each forward region, the backward ops that differentiate its members."""
    region_of = {m: i for i, region in enumerate(forward) for m in region.members}
    members: dict[int, list[int]] = {}
    for op in graph.phase_ops(Phase.BACKWARD):
        if op.grad_of in region_of:
            members.setdefault(region_of[op.grad_of], []).append(op.id)
    return [Region(ids, f"{forward[i].target}_backward_{ids[0]}", f"{forward[i].target}_backward",
                   forward[i].kind, forward[i].attrs) for i, ids in sorted(members.items())]


def _norm_modules(graph: Graph) -> list[str]:
    return [path for path, cls in graph.model.module_types.items() if "Norm" in cls]
