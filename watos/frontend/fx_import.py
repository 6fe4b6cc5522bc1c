"""The traced fx graph (ATen ops on fake tensors) as WATOS IR: one op per ATen call, phases, modules,
blocks, autograd owners of backward ops, and the parameters each op reads through views."""
from __future__ import annotations

import operator
import re
from typing import Any

import torch
import torch.fx

from watos.errors import WatosError
from watos.ir import Graph, ModelInfo, Op, OpKind, Phase, TensorType, Value, aten

PHASE_KEY = "watos_phase"  # fx node meta ("custom"): the phase the tracer annotated (backward seed, optimizer)
PARAM_KEY = "watos_param"  # fx node meta ("custom"): the parameter an optimizer op updates
_NO_TENSOR = TensorType((), "none")


def _tensor_type(value: Any) -> TensorType:
    if isinstance(value, torch.Tensor):
        dtype = str(value.dtype).removeprefix("torch.")
        return TensorType(tuple(int(d) for d in value.shape), aten.TORCH_DTYPE_NAMES.get(dtype, dtype))
    return _NO_TENSOR


def _scalar_attrs(node: Any) -> dict[str, Any]:
    """Non-tensor arguments by schema name (dims, probabilities, flags), kept for passes."""

    def plain(x: Any) -> Any:
        if isinstance(x, (bool, int, float, str)):
            return x
        if isinstance(x, (list, tuple)) and x and all(isinstance(e, (int, float, bool)) for e in x):
            return list(x)
        return None

    schema = node.target._schema.arguments
    named = {arg.name: value for arg, value in zip(schema, node.args)}
    named.update(node.kwargs)
    return {name: v for name, value in named.items()
            if not isinstance(value, torch.fx.Node) and (v := plain(value)) is not None}


def import_graph(gm: Any, names: list[tuple[str, str]], info: ModelInfo) -> Graph:
    values: dict[torch.fx.Node, Value] = {}
    ops: list[Op] = []
    forward_by_seq: dict[int, Op] = {}
    block_re = re.compile(rf"^{re.escape(info.block_prefix)}\.(\d+)(?:\.|$)") if info.block_prefix else None
    outputs: dict[str, Value] = {}
    placeholders = iter(names)

    def new_op(node: Any, **fields: Any) -> Op:
        op = Op(id=len(ops), name=node.name, **fields)
        ops.append(op)
        values[node] = op.out
        return op

    for node in gm.graph.nodes:
        if node.op == "placeholder":
            kind, name = next(placeholders)
            op = new_op(node, target=kind, kind=OpKind.PARAM if kind == "param" else OpKind.INPUT,
                        phase=Phase.FORWARD, inputs=[], outputs=[_tensor_type(node.meta.get("val"))],
                        module=name.rpartition(".")[0] if kind != "input" else "")
            op.attrs["name"] = name
            if block_re is not None and (m := block_re.match(name)):
                op.block = int(m.group(1))
        elif node.op == "call_function" and node.target is operator.getitem:
            producer, index = values[node.args[0]], node.args[1]
            values[node] = (producer[0], producer[1] + index)
        elif node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload):
            packet = node.target.overloadpacket.__name__
            kind = aten.kind_of(packet, torch.Tag.pointwise in node.target.tags)
            val = node.meta.get("val")
            outs = [_tensor_type(v) for v in val] if isinstance(val, (tuple, list)) else [_tensor_type(val)]
            inputs = [values[a] for a in _flat_nodes(node)]
            annotated = node.meta.get("custom", {}).get(PHASE_KEY)
            phase = Phase(annotated) if annotated else Phase.FORWARD
            if node.meta.get("autograd_backward"):
                phase = Phase.BACKWARD
            backward = phase is Phase.BACKWARD
            stack = node.meta.get("nn_module_stack") or {}
            op = new_op(node, target=packet, kind=kind, phase=phase,
                        inputs=inputs, outputs=outs, aten=f"aten.{packet}.{node.target._overloadname}",
                        module=next(reversed(stack)) if stack else "", attrs=_scalar_attrs(node))
            if node.target._schema.is_mutable:
                op.attrs["inplace"] = True
            if PARAM_KEY in node.meta.get("custom", {}):
                op.attrs["param"] = node.meta["custom"][PARAM_KEY]
            seq = node.meta.get("seq_nr") if not node.meta.get("is_gradient_acc") else None
            if backward:
                owner = forward_by_seq.get(seq) if seq is not None else None
                if owner is None:  # accumulation, or an op autograd did not number: ask its inputs
                    owner, feeder = _nearest_producer(op, ops)
                    op.module = owner.module if owner is not None else ""
                    op.grad_of = (owner.grad_of if feeder else owner.id) if owner is not None else None
                else:
                    op.module, op.grad_of = owner.module, owner.id
            elif seq is not None:
                forward_by_seq.setdefault(seq, op)
            if block_re is not None and (m := block_re.match(op.module)):
                op.block = int(m.group(1))
        elif node.op == "get_attr":  # a constant tensor the model holds outside its parameters and buffers
            constant = getattr(gm, node.target)
            op = new_op(node, target="constant", kind=OpKind.INPUT, phase=Phase.FORWARD, inputs=[],
                        outputs=[_tensor_type(constant)])
            op.attrs["name"] = str(node.target)
        elif node.op == "output":
            loss, grads, updated = node.args[0]
            outputs["loss"] = values[loss]
            param_names = [n for k, n in names if k == "param"]
            for name, grad, new in zip(param_names, grads, updated):
                if grad is not None:
                    outputs[f"grad:{name}"] = values[grad]
                outputs[f"param:{name}"] = values[new]
        else:
            raise WatosError(f"unsupported node in traced graph: {node.op} {node.target}")
    graph = Graph(model=info, ops=ops, outputs=outputs)
    for op in graph.ops:
        roots = (graph.op(graph.storage_root(v)[0]) for v in op.inputs)
        op.params = list(dict.fromkeys(r.attrs["name"] for r in roots if r.kind is OpKind.PARAM))
    return graph


def _flat_nodes(node: Any) -> list[Any]:
    flat: list[Any] = []
    torch.fx.node.map_arg((node.args, node.kwargs), flat.append)
    return [n for n in flat if isinstance(n, torch.fx.Node)]


def _nearest_producer(op: Op, ops: list[Op]) -> tuple[Op | None, bool]:
    """The latest backward op feeding ``op`` (and True), else the latest forward op it reads
    (and False): a backward op with no autograd owner belongs with one of them."""
    producers = sorted((ops[v[0]] for v in op.inputs), key=lambda p: -p.id)
    for producer in producers:
        if producer.phase is Phase.BACKWARD:
            return producer, True
    forward = [p for p in producers if p.kind not in (OpKind.PARAM, OpKind.INPUT)]
    return (forward[0], False) if forward else (None, False)

