"""Printers for the IR: readable text, JSON, and Graphviz DOT of one block.

Text: a header, then one line per op::

    %42 = matmul(%40, %7) bf16[4096,28672]  fwd  L17 model.layers.17.mlp.up_proj  {params: ...}
          flops=1.9T read=0.5G write=0.2G saved=0.2G  x80

``x80`` is the block multiplicity: a traced block stands for that many blocks of the full model
(``x0`` marks a traced copy that is not counted).
"""
from __future__ import annotations

from typing import Any

from watos.ir.analyses import to_plain
from watos.ir.graph import Graph, Op, OpKind, Phase


def _si(x: float) -> str:
    for unit, scale in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"


def summary(graph: Graph) -> dict[str, Any]:
    """Whole-model totals for one micro-batch: the numbers ``watos trace`` reports."""
    flops = {phase: graph.total("flops", graph.phase_ops(phase)) for phase in Phase}
    saved = graph.analyses.get("saved_activations")  # absent when a pipeline stops before that pass
    per_group = []
    for group in graph.block_groups:
        entry = {"blocks": len(group.blocks), "first_block": group.blocks[0], "signature": group.signature}
        for mode in ("as_traced", "fused") if saved else ():
            entry[f"activation_bytes_{mode}"] = saved.account(mode).per_block_bytes.get(str(group.representative), 0)
        per_group.append(entry)
    used = saved.used if saved else None
    per_block = max((g.get(f"activation_bytes_{used}", 0) for g in per_group), default=0)
    return {
        "model": graph.model.name,
        "family": graph.model.family,
        "parameters": graph.model.parameters,
        "blocks": graph.model.num_blocks,
        "traced_blocks": len(graph.model.traced_blocks),
        "ops": sum(graph.weight(op) for op in graph.ops),
        "traced_ops": len(graph.ops),
        "seq_len": graph.model.seq_len,
        "micro_batch": graph.model.micro_batch,
        "dtype": graph.model.dtype,
        "forward_flops": flops[Phase.FORWARD],
        "backward_flops": flops[Phase.BACKWARD],
        "optimizer_flops": flops[Phase.OPTIMIZER],
        "bytes_moved": graph.total("bytes_read") + graph.total("bytes_written"),
        "activation_bytes_per_block": per_block,
        "activation_bytes_per_block_as_traced": max(
            (g.get("activation_bytes_as_traced", 0) for g in per_group), default=0),
        "activation_accounting": used,
        "activation_bytes_total": saved.account().total_bytes if saved else 0,
        "block_groups": per_group,
    }


def _attr(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _value(graph: Graph, v: tuple[int, int]) -> str:
    return f"%{v[0]}" if v[1] == 0 else f"%{v[0]}.{v[1]}"


_PHASE = {Phase.FORWARD: "fwd", Phase.BACKWARD: "bwd", Phase.OPTIMIZER: "opt"}


def op_line(graph: Graph, op: Op) -> str:
    """One readable line for an op, with its costs."""
    outs = ", ".join(map(str, op.outputs))
    args = ", ".join(_value(graph, v) for v in op.inputs)
    where = f"L{op.block}" if op.block is not None else "--"
    extras = []
    if op.params:
        extras.append("params: " + ", ".join(op.params))
    if op.kind is OpKind.PARAM or op.kind is OpKind.INPUT:
        extras.append(op.attrs.get("name", ""))
    if op.members:
        extras.append(f"fused {len(op.members)} ops")
    extras += [f"{key}={_attr(value)}" for key, value in sorted(op.attrs.items())
               if key not in ("name", "saved_bytes")]
    costs = f"flops={_si(op.flops)} read={_si(op.bytes_read)}B write={_si(op.bytes_written)}B"
    if "saved_bytes" in op.attrs:
        costs += f" saved={_si(op.attrs['saved_bytes'])}B"
    weight = graph.weight(op)
    mult = f"  x{weight}" if weight != 1 else ""
    return (f"%{op.id} = {op.target}[{op.kind.value}]({args}) -> {outs}  {_PHASE[op.phase]}  {where} "
            f"{op.module or '<root>'}  {{{'; '.join(e for e in extras if e)}}}  {costs}{mult}")


def to_text(graph: Graph) -> str:
    """The whole graph as text: a summary header and one line per op."""
    head = summary(graph)
    lines = [f"# watos IR  model={head['model']} seq={head['seq_len']} micro_batch={head['micro_batch']} "
             f"dtype={head['dtype']} params={head['parameters']} blocks={head['blocks']} "
             f"(traced {head['traced_blocks']})",
             f"# forward_flops={head['forward_flops']} backward_flops={head['backward_flops']} "
             f"activation_bytes_per_block={head['activation_bytes_per_block']} "
             f"properties={sorted(graph.properties)}"]
    lines += [op_line(graph, op) for op in graph.ops]
    lines += [f"output {label} = {_value(graph, v)}" for label, v in sorted(graph.outputs.items())]
    return "\n".join(lines) + "\n"


def _op_json(op: Op) -> dict[str, Any]:
    data = {"id": op.id, "name": op.name, "target": op.target, "kind": op.kind.value,
            "phase": op.phase.value, "aten": op.aten, "inputs": [list(v) for v in op.inputs],
            "outputs": [{"shape": list(t.shape), "dtype": t.dtype} for t in op.outputs],
            "module": op.module, "block": op.block, "grad_of": op.grad_of, "params": op.params,
            "flops": op.flops, "bytes_read": op.bytes_read, "bytes_written": op.bytes_written,
            "attrs": op.attrs}
    if op.members:
        data["members"] = [_op_json(m) for m in op.members]
    return data


def to_json(graph: Graph) -> dict[str, Any]:
    """The whole graph as a JSON-serialisable dict (deterministic: dump with sort_keys)."""
    return {"format": "watos-ir/1", "summary": summary(graph), "properties": sorted(graph.properties),
            "block_groups": [{"signature": g.signature, "representative": g.representative,
                              "blocks": g.blocks} for g in graph.block_groups],
            "ops": [_op_json(op) for op in graph.ops],
            "outputs": {k: list(v) for k, v in graph.outputs.items()},
            "analyses": to_plain(graph.analyses)}


def to_dot(graph: Graph, block: int | None = None) -> str:
    """Graphviz DOT of one traced block's ops (default: the first group's representative)."""
    if block is None and graph.block_groups:
        block = graph.block_groups[0].representative
    elif block is None and graph.model.traced_blocks:
        block = graph.model.traced_blocks[-1]
    ops = [op for op in graph.ops if op.block == block and op.kind is not OpKind.PARAM]
    ids = {op.id for op in ops}
    colors = {Phase.FORWARD: "lightblue", Phase.BACKWARD: "lightpink", Phase.OPTIMIZER: "khaki"}
    lines = [f'digraph "block_{block}" {{', "  rankdir=TB; node [shape=box, style=filled, fontsize=10];"]
    for op in ops:
        label = f"{op.target}\\n{op.outputs[0]}\\n{_si(op.flops)}FLOP"
        lines.append(f'  n{op.id} [label="{label}", fillcolor={colors[op.phase]}];')
    for op in ops:
        for producer, _ in dict.fromkeys(op.inputs):
            if producer in ids:
                lines.append(f"  n{producer} -> n{op.id};")
    lines.append("}")
    return "\n".join(lines) + "\n"
