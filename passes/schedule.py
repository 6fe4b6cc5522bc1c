"""schedule: simulate one training step of the pipeline and report time, throughput and memory.

Per stage and micro-batch, t = forward + backward + recompute + exposed TP/CP communication of its
blocks (and of the embedding on the first stage, the head and loss on the last), plus the p2p sends. For
m micro-batches over p stages with v model chunks per stage (Narayanan et al. 2021):

    T_pipeline = m · max_s t_s + (Σ_s t_s − max_s t_s) / v        (1F1B, interleaved 1F1B, GPipe)

which is (m + (p−1)/v)·t for equal stages. Data-parallel gradient collectives overlap the backward of
the last micro-batch when ``overlap_grad_reduce`` (only what exceeds it is exposed); the optimizer update
follows, its work divided over data parallelism under ZeRO ≥ 1.

Memory per device of stage s: 16-bit weights and gradients and fp32 Adam states (master, two moments:
12 bytes per parameter), divided by ZeRO (1: states, 2: + gradients, 3: + weights, over dp·cp), plus
activations of the micro-batches in flight (1F1B: min(m, p − s); interleaved: first stage
p·(1 + (p−1)/(p·v)) chunk-micro-batches of L/(p·v) blocks; GPipe: m), plus the largest transient op
output (workspace).

Writes ``analyses["cost"]``: step time, tokens/s, MFU, HFU, peak memory, a breakdown, per-stage figures.
"""
from __future__ import annotations

from typing import Literal

from watos.errors import WatosError
from watos.hardware import Target
from watos.ir import DTYPE_BYTES, Graph, OpKind, Phase
from watos.network import collective_time
from watos.pass_manager import Pass, PassConfig, register_pass

ADAM_STATE_BYTES = 12  # fp32 master weights and two fp32 moments per parameter


@register_pass("schedule")
class Schedule(Pass):
    requires = frozenset({"timed"})
    provides = frozenset({"scheduled"})
    in_default_pipeline = False

    class Config(PassConfig):
        target: Target
        tp: int = 1
        pp: int = 1
        dp: int = 1
        cp: int = 1
        zero: int = 0
        micro_batches: int = 1
        sequences_per_step: int = 1
        interleave: int = 1
        kind: Literal["1f1b", "gpipe", "interleaved"] = "1f1b"
        strategy: Literal["3d", "weight-streaming"] = "3d"
        overlap_grad_reduce: bool = True
        dtype: str = "bf16"

    def run(self, graph: Graph) -> None:
        if self.config.strategy == "weight-streaming":
            graph.analyses["cost"] = _weight_streaming(graph, self.config)
            return
        c = self.config
        cost = graph.analyses["device_cost"]
        pipe = graph.analyses["pipeline"]
        groups = graph.analyses["groups"]
        # A stage boundary: each TP rank sends its slice, the receivers all-gather it (scatter/gather).
        p2p = (collective_time(c.target, "p2p", pipe["p2p_bytes"], groups["pp"][:1])
               + collective_time(c.target, "all_gather", pipe["p2p_bytes"] * c.tp, groups["tp"])) if c.pp > 1 else 0.0

        def part(where: str, key: str) -> float:
            return cost.get(where, {}).get(key, 0.0)

        def per_microbatch(where: str) -> float:
            return sum(part(where, k) for k in ("fwd", "bwd", "recompute", "tp_comm_fwd", "tp_comm_bwd",
                                                "cp_comm_fwd", "cp_comm_bwd"))

        sizes = _parameter_sizes(graph, c.tp)
        stages = []
        for s in range(c.pp):
            segments = _stage_segments(pipe, s, c.pp)
            time = sum(per_microbatch(w) * n for w, n in segments) + (2 * c.interleave * p2p if c.pp > 1 else 0)
            dp_comm = sum((part(w, "dp_comm_bwd") + part(w, "dp_comm_fwd")) * n for w, n in segments)
            optimizer = sum(part(w, "optimizer") * n for w, n in segments) / (c.dp * c.cp if c.zero >= 1 else 1)
            backward = sum(part(w, "bwd") * n for w, n in segments)
            exposed_dp = max(0.0, dp_comm - backward) if c.overlap_grad_reduce else dp_comm
            stages.append({"stage": s, "time_per_microbatch_s": time, "dp_comm_s": dp_comm,
                           "dp_exposed_s": exposed_dp, "optimizer_s": optimizer,
                           "memory": _memory(graph, segments, s, c, sizes)})
        times = [st["time_per_microbatch_s"] for st in stages]
        v = c.interleave if c.kind == "interleaved" or c.interleave > 1 else 1
        pipeline_time = c.micro_batches * max(times) + (sum(times) - max(times)) / v
        tail = max(st["dp_exposed_s"] + st["optimizer_s"] for st in stages)
        step = pipeline_time + tail
        devices = c.tp * c.pp * c.dp * c.cp
        tokens = c.sequences_per_step * graph.model.seq_len
        model_flops = _model_flops(graph) * c.sequences_per_step / graph.model.micro_batch
        recompute_flops = sum(part(w, "recompute_flops") * n for st in pipe["stage_blocks"]
                              for w, n in st.items()) * c.micro_batches * c.dp
        peak = c.target.device.peak_tflops.get(c.dtype) or max(c.target.device.peak_tflops.values())
        compute = c.micro_batches * max(sum(part(w, k) * n for w, n in _stage_segments(pipe, s, c.pp)
                                            for k in ("fwd", "bwd")) for s in range(c.pp))
        executed = c.micro_batches * c.tp * c.dp * c.cp * sum(
            part(w, "device_flops") * n for s in range(c.pp) for w, n in _stage_segments(pipe, s, c.pp))
        peak_memory = max(st["memory"]["total_bytes"] for st in stages)
        capacity = c.target.device.dram_capacity_gb * 1e9 + c.target.device.sram_capacity_mb * 1e6
        graph.analyses["cost"] = {
            "step_time_s": step,
            "tokens_per_s": tokens / step,
            "tokens_per_s_per_device": tokens / step / devices,
            "model_flops_per_step": model_flops,
            "executed_flops_per_step": executed,
            "mfu": model_flops / (step * devices * peak * 1e12),
            "hfu": (model_flops + recompute_flops) / (step * devices * peak * 1e12),
            "peak_memory_bytes_per_device": peak_memory,
            "memory_capacity_bytes_per_device": capacity,
            "fits": peak_memory <= capacity,
            "breakdown_s": {
                "compute": compute,
                "bubble": pipeline_time - c.micro_batches * max(times),
                "recompute": c.micro_batches * max(sum(part(w, "recompute") * n
                                                       for w, n in _stage_segments(pipe, s, c.pp)) for s in range(c.pp)),
                "tp_comm": c.micro_batches * max(sum((part(w, "tp_comm_fwd") + part(w, "tp_comm_bwd")) * n
                                                     for w, n in _stage_segments(pipe, s, c.pp)) for s in range(c.pp)),
                "pp_comm": c.micro_batches * 2 * c.interleave * p2p if c.pp > 1 else 0.0,
                "dp_exposed": max(st["dp_exposed_s"] for st in stages),
                "optimizer": max(st["optimizer_s"] for st in stages),
            },
            "stages": stages,
        }


def _stage_segments(pipe: dict, s: int, pp: int) -> list[tuple[str, int]]:
    segments = list(pipe["stage_blocks"][s].items())
    if s == 0:
        segments.append(("pre", 1))
    if s == pp - 1:
        segments.append(("post", 1))
    return segments


def _model_flops(graph: Graph) -> float:
    """Forward + backward FLOPs of one micro-batch of the whole model, as traced (no recompute)."""
    return float(graph.total("flops", (op for op in graph.ops if op.phase is not Phase.OPTIMIZER
                                      and op.kind is not OpKind.COLLECTIVE)))


def _memory(graph: Graph, segments: list[tuple[str, int]], stage: int, c, sizes: dict) -> dict:
    """Bytes per device on one stage (see module docstring); ``sizes`` from :func:`_parameter_sizes`."""
    params = sum(sizes["params"].get(where, 0.0) * n for where, n in segments)
    replicas = c.dp * c.cp
    weights = 2 * params / (replicas if c.zero >= 3 else 1)
    grads = 2 * params / (replicas if c.zero >= 2 else 1)
    states = ADAM_STATE_BYTES * params / (replicas if c.zero >= 1 else 1)
    recompute = graph.analyses["recompute"]
    per_microbatch = sum(recompute["block_bytes"].get(w, 0) * n for w, n in segments)
    per_microbatch += sum(recompute[f"{w}_bytes"] for w, _ in segments if w in ("pre", "post"))
    if c.kind == "gpipe":
        in_flight = c.micro_batches
    elif c.interleave > 1:
        in_flight = c.pp * (1 + (c.pp - 1) / (c.pp * c.interleave)) if stage == 0 else c.pp - stage
    else:
        in_flight = min(c.micro_batches, c.pp - stage)
    activations = per_microbatch * min(in_flight, max(c.micro_batches, 1) * c.interleave)
    workspace = sizes["workspace"]
    total = weights + grads + states + activations + workspace
    return {"weights_bytes": weights, "gradients_bytes": grads, "optimizer_bytes": states,
            "activations_bytes": activations, "workspace_bytes": workspace, "total_bytes": total,
            "parameters": params}


def _parameter_sizes(graph: Graph, tp: int) -> dict:
    """Per-device parameter counts of each block representative and of the pre/post segments, and
    the largest transient op output (workspace)."""
    split = set(graph.analyses.get("split_params", []))
    params: dict[str, float] = {}
    for op in graph.ops:
        if op.kind is OpKind.PARAM:
            where = str(op.block) if op.block is not None else _param_segment(graph, op)
            params[where] = params.get(where, 0.0) + op.outputs[0].numel / (tp if op.attrs["name"] in split else 1)
    workspace = max((op.outputs[0].nbytes / op.attrs.get("shard", 1) for op in graph.ops
                     if op.phase is Phase.FORWARD and op.kind not in (OpKind.PARAM, OpKind.INPUT)), default=0)
    return {"params": params, "workspace": workspace}


def _param_segment(graph: Graph, param_op) -> str:
    for op in graph.ops:
        if op.phase is Phase.FORWARD and param_op.attrs["name"] in op.params and "segment" in op.attrs:
            return op.attrs["segment"]
    return "pre"


def _weight_streaming(graph: Graph, c) -> dict:
    """Cerebras weight streaming: each system keeps activations on the wafer and streams every block's
    weights in from off-wafer memory for the forward, and again for the backward while streaming the
    gradients out; streaming overlaps compute, so each block takes the longer of the two. Systems are
    data parallel (weights broadcast, gradients reduced by the interconnect at the same bandwidth); the
    optimizer runs off-wafer, overlapped."""
    streaming = c.target.weight_streaming
    if streaming is None:
        raise WatosError(f"target {c.target.name} has no weight_streaming memory for strategy weight-streaming")
    cost = graph.analyses["device_cost"]
    bandwidth = streaming.bandwidth_gb_per_s * 1e9
    weights = {where: numel * DTYPE_BYTES[graph.model.dtype]
               for where, numel in _parameter_sizes(graph, c.tp)["params"].items()}
    per_microbatch = 0.0
    for group in graph.block_groups or []:
        w = weights.get(str(group.representative), 0.0)
        part = cost.get(str(group.representative), {})
        forward = max(part.get("fwd", 0.0), w / bandwidth)
        backward = max(part.get("bwd", 0.0) + part.get("recompute", 0.0), 2 * w / bandwidth)
        per_microbatch += group.count * (forward + backward)
    for segment in ("pre", "post"):
        part = cost.get(segment, {})
        per_microbatch += max(part.get("fwd", 0.0) + part.get("bwd", 0.0), 3 * weights.get(segment, 0.0) / bandwidth)
    step = c.micro_batches * per_microbatch
    devices = c.dp
    tokens = c.sequences_per_step * graph.model.seq_len
    model_flops = _model_flops(graph) * c.sequences_per_step / graph.model.micro_batch
    peak = c.target.device.peak_tflops.get(c.dtype) or max(c.target.device.peak_tflops.values())
    recompute = graph.analyses["recompute"]
    activations = sum(recompute["block_bytes"].get(str(g.representative), 0) * g.count for g in graph.block_groups)
    activations += recompute["pre_bytes"] + recompute["post_bytes"]
    buffers = 2 * max(weights.values(), default=0.0)
    memory = activations + buffers
    capacity = c.target.device.dram_capacity_gb * 1e9 + c.target.device.sram_capacity_mb * 1e6
    return {
        "step_time_s": step, "tokens_per_s": tokens / step, "tokens_per_s_per_device": tokens / step / devices,
        "mfu": model_flops / (step * devices * peak * 1e12), "hfu": model_flops / (step * devices * peak * 1e12),
        "peak_memory_bytes_per_device": memory, "memory_capacity_bytes_per_device": capacity,
        "fits": memory <= capacity,
        "breakdown_s": {"per_microbatch": per_microbatch,
                        "weight_streaming": c.micro_batches * 3 * sum(weights.values()) / bandwidth},
        "stages": [],
    }

