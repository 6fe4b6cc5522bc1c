"""schedule: simulate one training step of the pipeline and report time, throughput and memory.

Per stage and micro-batch, t = forward + backward + recompute + exposed TP/CP/EP communication of its
blocks (and of the embedding on the first stage, the head and loss on the last), plus the p2p sends, plus
what ZeRO 2/3's per-micro-batch gradient reduce-scatters and parameter all-gathers take beyond the
compute they are prefetched under (DeepSpeed and FSDP overlap them layer by layer). For
m micro-batches over p stages with v model chunks per stage (Narayanan et al. 2021):

    T_pipeline = m · max_s t_s + (Σ_s t_s − max_s t_s) / v        (1F1B, interleaved 1F1B, GPipe)

which is (m + (p−1)/v)·t for equal stages. Per-step data-parallel collectives overlap the backward of
the last micro-batch when ``overlap_grad_reduce`` (only what exceeds it is exposed); the optimizer update
follows, its work divided over data parallelism under ZeRO ≥ 1.

Memory per device of stage s: 16-bit weights and gradients and fp32 Adam states (master, two moments:
12 bytes per parameter), divided by ZeRO (1: states, 2: + gradients, 3: + weights, over dp·cp; expert
weights are first divided over the EP group, and ZeRO shards them over the dp·cp/ep ranks that share
them, so a ZeRO-sharded share is total/(dp·cp) for both), plus
activations of the micro-batches in flight (1F1B: min(m, p − s); interleaved: first stage
p·(1 + (p−1)/(p·v)) chunk-micro-batches of L/(p·v) blocks; GPipe: m), plus the largest transient op
output and, under ZeRO 3, two blocks' gathered 16-bit parameters (workspace).

Writes ``analyses["cost"]``: step time, tokens/s, MFU, HFU, peak memory, a breakdown, per-stage figures.
"""
from __future__ import annotations

from typing import Literal

from watos.passes.recompute import POLICIES

from watos.errors import WatosError
from watos.hardware.target import Target
from watos.ir import DTYPE_BYTES, Graph, OpKind, Phase
from watos.network.collectives import collective_time
from watos.ir.pass_manager import Pass, PassConfig, register_pass

ADAM_STATE_BYTES = 12  # fp32 master weights and two fp32 moments per parameter
# Communication on the critical path of every micro-batch: tensor, context and expert parallelism; and
# ZeRO 2/3's per-micro-batch data-parallel collectives, which overlap the micro-batch's compute.
_EXPOSED_COMM = tuple(f"{group}_comm_{phase}" for group in ("tp", "cp", "ep") for phase in ("fwd", "bwd"))
_OVERLAPPED_COMM = tuple(f"{group}_comm_{phase}" for group in ("dp", "edp") for phase in ("fwd", "bwd"))


@register_pass("schedule")
class Schedule(Pass):
    requires = frozenset({"timed", "placed"})
    provides = frozenset({"scheduled"})
    in_default_pipeline = False

    class Config(PassConfig):
        target: Target
        tp: int = 1
        pp: int = 1
        dp: int = 1
        cp: int = 1
        ep: int = 1
        zero: int = 0
        micro_batches: int = 1
        sequences_per_step: int = 1
        interleave: int = 1
        kind: Literal["1f1b", "gpipe", "interleaved"] = "1f1b"
        strategy: Literal["3d", "weight-streaming"] = "3d"
        overlap_grad_reduce: bool = True
        dtype: str = "bf16"
        borrow: tuple[tuple[int, int, float], ...] = ()  # (sender stage, helper stage, bytes per die)
        # Bytes per parameter and micro-batch of adding the 16-bit weight gradient into the main gradient
        # (Megatron-LM's ``main_grad.add_``); 0 when the weight-gradient GEMM accumulates in place.
        grad_accumulation_bytes: float = 0.0

    def run(self, graph: Graph) -> None:
        if self.config.strategy == "weight-streaming":
            graph.analyses["cost"] = _weight_streaming(graph, self.config)
            return
        c = self.config
        cost = graph.analyses["device_cost"]
        pipe = graph.analyses["pipeline"]
        groups = graph.analyses["groups"]
        dies = graph.analyses["placement"]["dies"]
        # A stage boundary: each TP rank sends its slice, the receivers all-gather it (scatter/gather);
        # every boundary of every pipeline sends at once.
        boundaries = [[g[s], g[s + 1]] for g in groups["pp"] for s in range(c.pp - 1)]
        p2p = (collective_time(c.target, "p2p", pipe["p2p_bytes"], boundaries, dies)
               + collective_time(c.target, "all_gather", pipe["p2p_bytes"] * c.tp, groups["tp"], dies)) if c.pp > 1 else 0.0

        def part(where: str, key: str) -> float:
            return cost.get(where, {}).get(key, 0.0)

        policies = graph.analyses["recompute"]["policy"]

        def stage_sum(s: int, key: str) -> float:
            return sum(part(w, key) * n for w, n in stage_segments(pipe, s, c.pp))

        sizes = _parameter_sizes(graph, c.tp, c.ep)
        memory = [_memory(graph, stage_segments(pipe, s, c.pp), s, c, sizes) for s in range(c.pp)]
        dram = c.target.device.dram_bandwidth_gb_per_s * 1e9 * c.target.device.efficiency.memory

        def work(s: int, policy: str) -> float:
            """One micro-batch's forward, backward and recomputation on stage s."""
            return sum(stage_sum(s, k) for k in ("fwd", "bwd", f"recompute:{policy}"))

        def zero_exposed(s: int, policy: str) -> float:
            """ZeRO 2/3's per-micro-batch collectives of stage s beyond the compute that hides them."""
            return max(0.0, sum(stage_sum(s, k) for k in _OVERLAPPED_COMM) - work(s, policy))

        def stage_time(s: int, policy: str) -> float:
            """One micro-batch through stage s: its compute, recompute, exposed TP/CP/EP and ZeRO communication,
            pipeline sends and gradient accumulation."""
            return (work(s, policy) + sum(stage_sum(s, k) for k in _EXPOSED_COMM) + zero_exposed(s, policy)
                    + (2 * c.interleave * p2p if c.pp > 1 else 0)
                    + c.grad_accumulation_bytes * memory[s]["parameters"] / dram)

        borrowed = _borrowing(graph, c, memory, dies)
        stages = []
        for s in range(c.pp):
            dp_comm = stage_sum(s, "step_comm")
            optimizer = stage_sum(s, "optimizer") / (c.dp * c.cp if c.zero >= 1 else 1)
            exposed_dp = max(0.0, dp_comm - stage_sum(s, "bwd")) if c.overlap_grad_reduce else dp_comm
            time = stage_time(s, policies[s])
            transfer = borrowed[s]["transfer_s"]
            forward = stage_sum(s, "fwd") + sum(stage_sum(s, k) for k in _EXPOSED_COMM if k.endswith("_fwd"))
            stages.append({
                "stage": s, "recompute": policies[s], "time_per_microbatch_s": time + max(0.0, transfer - time),
                "forward_s": forward, "borrow_transfer_s": transfer,
                "compute_per_microbatch_s": work(s, policies[s]),
                "dp_comm_s": dp_comm, "dp_exposed_s": exposed_dp, "optimizer_s": optimizer,
                "memory": {**memory[s], "borrowed_out_bytes": borrowed[s]["out"], "borrowed_in_bytes": borrowed[s]["in"],
                           "total_bytes": memory[s]["total_bytes"] - borrowed[s]["out"] + borrowed[s]["in"]},
                # What each recompute policy would cost this stage (GCMR chooses among them).
                "options": {policy: {"time_per_microbatch_s": stage_time(s, policy),
                                     "total_bytes": memory[s]["total_bytes"] - memory[s]["activations_bytes"]
                                     + _activation_bytes(graph, stage_segments(pipe, s, c.pp), s, c, policy)}
                            for policy in POLICIES},
            })
        times = [st["time_per_microbatch_s"] for st in stages]
        pipelined = pipeline_time(times, c.micro_batches, c.interleave)
        tail = max(st["dp_exposed_s"] + st["optimizer_s"] for st in stages)
        step = pipelined + tail
        devices = c.tp * c.pp * c.dp * c.cp
        tokens = c.sequences_per_step * graph.model.seq_len
        model_flops = _model_flops(graph) * c.sequences_per_step / graph.model.micro_batch
        recompute_flops = sum(stage_sum(s, f"recompute_flops:{policies[s]}") for s in range(c.pp)) * c.micro_batches * c.dp
        peak = c.target.device.peak_tflops.get(c.dtype) or max(c.target.device.peak_tflops.values())
        compute = c.micro_batches * max(stage_sum(s, "fwd") + stage_sum(s, "bwd") for s in range(c.pp))
        executed = c.micro_batches * c.tp * c.dp * c.cp * sum(
            stage_sum(s, "device_flops") + stage_sum(s, f"recompute_device_flops:{policies[s]}") for s in range(c.pp))
        peak_memory = max(st["memory"]["total_bytes"] for st in stages)
        per_replica = c.micro_batches * c.tp * c.dp * c.cp
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
            # Traffic of one step over all devices (energy): kernels' DRAM bytes, collectives' bytes.
            "dram_bytes_per_step": sum(per_replica * stage_sum(s, "dram_bytes") + devices // c.pp
                                       * stage_sum(s, "step_dram_bytes") for s in range(c.pp)),
            "network_bytes_per_step": sum(per_replica * stage_sum(s, "network_bytes") + devices // c.pp
                                          * stage_sum(s, "step_network_bytes") for s in range(c.pp)),
            "memory_capacity_bytes_per_device": capacity,
            "fits": peak_memory <= capacity,
            "breakdown_s": {
                "compute": compute,
                "bubble": pipelined - c.micro_batches * max(times),
                "recompute": c.micro_batches * max(stage_sum(s, f"recompute:{policies[s]}") for s in range(c.pp)),
                "tp_comm": c.micro_batches * max(stage_sum(s, "tp_comm_fwd") + stage_sum(s, "tp_comm_bwd")
                                                 for s in range(c.pp)),
                "ep_comm": c.micro_batches * max(stage_sum(s, "ep_comm_fwd") + stage_sum(s, "ep_comm_bwd")
                                                 for s in range(c.pp)),
                "zero_comm": c.micro_batches * max(zero_exposed(s, policies[s]) for s in range(c.pp)),
                "pp_comm": c.micro_batches * 2 * c.interleave * p2p if c.pp > 1 else 0.0,
                "dp_exposed": max(st["dp_exposed_s"] for st in stages),
                "optimizer": max(st["optimizer_s"] for st in stages),
            },
            "stages": stages,
        }


def pipeline_time(stage_times: list[float], micro_batches: int, interleave: int = 1) -> float:
    """Narayanan et al. 2021: m micro-batches through stages taking t_s each (v model chunks per stage):
    m · max_s t_s + (Σ_s t_s − max_s t_s) / v (the module docstring)."""
    slowest = max(stage_times)
    return micro_batches * slowest + (sum(stage_times) - slowest) / interleave


def stage_segments(pipe: dict, s: int, pp: int) -> list[tuple[str, int]]:
    """(block group representative or ``pre``/``post``, how many) that stage ``s`` runs."""
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
    params = sum(sizes["params"].get(where, 0.0) * n for where, n in segments)  # this die's share, EP applied
    sharded = (params + (c.ep - 1) * sum(sizes["experts"].get(where, 0.0) * n for where, n in segments)) / (c.dp * c.cp)

    def per_die(zero_level: int) -> float:
        return sharded if c.zero >= zero_level else params

    weights, grads, states = 2 * per_die(3), 2 * per_die(2), ADAM_STATE_BYTES * per_die(1)
    policy = graph.analyses["recompute"]["policy"][stage]
    activations = _activation_bytes(graph, segments, stage, c, policy)
    # ZeRO 3 gathers a block's parameters to run it, the next block's while it runs (prefetch): two buffers.
    gathered = 2 * 2 * max(sizes["params"].get(where, 0.0) for where, _ in segments) if c.zero >= 3 else 0.0
    workspace = sizes["workspace"] + gathered
    total = weights + grads + states + activations + workspace
    return {"weights_bytes": weights, "gradients_bytes": grads, "optimizer_bytes": states,
            "activations_bytes": activations, "workspace_bytes": workspace, "total_bytes": total,
            "parameters": params}


def in_flight(kind: str, pp: int, interleave: int, micro_batches: int, stage: int) -> float:
    """Micro-batches whose activations stage ``stage`` holds at its peak (see module docstring)."""
    if kind == "gpipe":
        flight = micro_batches
    elif interleave > 1:
        flight = pp * (1 + (pp - 1) / (pp * interleave)) if stage == 0 else pp - stage
    else:
        flight = min(micro_batches, pp - stage)
    return min(flight, max(micro_batches, 1) * interleave)


def _activation_bytes(graph: Graph, segments: list[tuple[str, int]], stage: int, c, policy: str) -> float:
    recompute = graph.analyses["recompute"]
    kept = recompute["block_bytes"][policy]
    per_microbatch = sum(kept.get(w, 0) * n for w, n in segments)
    per_microbatch += sum(recompute[f"{w}_bytes"] for w, _ in segments if w in ("pre", "post"))
    return per_microbatch * in_flight(c.kind, c.pp, c.interleave, c.micro_batches, stage)


def _borrowing(graph: Graph, c, memory: list[dict], dies: list[int]) -> list[dict]:
    """Sender/Helper checkpoint storage: bytes each stage's dies lend or borrow, and the seconds per
    micro-batch its checkpoints spend in flight (:func:`checkpoint_transfer_s`)."""
    stages = [{"out": 0.0, "in": 0.0, "transfer_s": 0.0} for _ in range(c.pp)]
    for sender, helper, nbytes in c.borrow:
        stages[sender]["out"] += nbytes
        stages[helper]["in"] += nbytes
        stages[sender]["transfer_s"] += checkpoint_transfer_s(c.target, graph.analyses["groups"]["pp"], dies,
                                                              sender, helper, nbytes,
                                                              in_flight(c.kind, c.pp, c.interleave, c.micro_batches, sender))
    return stages


def checkpoint_traffic(nbytes: float, micro_batches_in_flight: float) -> float:
    """Bytes per micro-batch a Sender's dies move to and from their Helpers for ``nbytes`` borrowed: the
    borrowed share of each micro-batch's checkpoints, out in the forward and back in the backward."""
    return 2 * nbytes / micro_batches_in_flight


def checkpoint_transfer_s(target: Target, pipelines: list[list[int]], dies: list[int], sender: int, helper: int,
                          nbytes: float, micro_batches_in_flight: float) -> float:
    """Seconds per micro-batch for ``nbytes`` of a Sender stage's checkpoints kept by a Helper stage: the
    borrowed share of every micro-batch goes out in the forward and back in the backward (2·bytes /
    micro-batches in flight), from each Sender die to its counterpart Helper die over the D2D route, all
    pairs at once, no faster than the Helper's DRAM."""
    traffic = checkpoint_traffic(nbytes, micro_batches_in_flight)
    dram = target.device.dram_bandwidth_gb_per_s * 1e9 * target.device.efficiency.memory
    pairs = [[g[sender], g[helper]] for g in pipelines]
    return max(collective_time(target, "p2p", traffic, pairs, dies), traffic / dram)


def _parameter_sizes(graph: Graph, tp: int, ep: int = 1) -> dict:
    """Per-device parameter counts of each block representative and of the pre/post segments (``params``;
    ``experts``: the expert weights among them), and the largest transient op output (workspace)."""
    split = set(graph.analyses.get("split_params", []))
    expert = set(graph.analyses.get("expert_params", []))
    params: dict[str, float] = {}
    experts: dict[str, float] = {}
    for op in graph.ops:
        if op.kind is OpKind.PARAM:
            where = str(op.block) if op.block is not None else _param_segment(graph, op)
            numel = op.outputs[0].numel / (tp if op.attrs["name"] in split else 1)
            if op.attrs["name"] in expert:
                numel /= ep
                experts[where] = experts.get(where, 0.0) + numel
            params[where] = params.get(where, 0.0) + numel
    workspace = max((op.outputs[0].nbytes / op.attrs.get("shard", 1) for op in graph.ops
                     if op.phase is Phase.FORWARD and op.kind not in (OpKind.PARAM, OpKind.INPUT)), default=0)
    return {"params": params, "experts": experts, "workspace": workspace}


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
    policy = graph.analyses["recompute"]["policy"][0]
    bandwidth = streaming.bandwidth_gb_per_s * 1e9
    weights = {where: numel * DTYPE_BYTES[graph.model.dtype]
               for where, numel in _parameter_sizes(graph, c.tp)["params"].items()}
    per_microbatch = compute = recompute_s = 0.0
    for group in graph.block_groups or []:
        w = weights.get(str(group.representative), 0.0)
        part = cost.get(str(group.representative), {})
        rerun = part.get(f"recompute:{policy}", 0.0)
        forward = max(part.get("fwd", 0.0), w / bandwidth)
        backward = max(part.get("bwd", 0.0) + rerun, 2 * w / bandwidth)
        per_microbatch += group.count * (forward + backward)
        compute += group.count * (part.get("fwd", 0.0) + part.get("bwd", 0.0))
        recompute_s += group.count * rerun
    for segment in ("pre", "post"):
        part = cost.get(segment, {})
        per_microbatch += max(part.get("fwd", 0.0) + part.get("bwd", 0.0), 3 * weights.get(segment, 0.0) / bandwidth)
        compute += part.get("fwd", 0.0) + part.get("bwd", 0.0)
    step = c.micro_batches * per_microbatch
    devices = c.dp
    tokens = c.sequences_per_step * graph.model.seq_len
    model_flops = _model_flops(graph) * c.sequences_per_step / graph.model.micro_batch
    peak = c.target.device.peak_tflops.get(c.dtype) or max(c.target.device.peak_tflops.values())
    recompute = graph.analyses["recompute"]
    activations = sum(recompute["block_bytes"][policy].get(str(g.representative), 0) * g.count
                      for g in graph.block_groups)
    activations += recompute["pre_bytes"] + recompute["post_bytes"]
    buffers = 2 * max(weights.values(), default=0.0)
    memory = activations + buffers
    capacity = c.target.device.dram_capacity_gb * 1e9 + c.target.device.sram_capacity_mb * 1e6
    return {
        "step_time_s": step, "tokens_per_s": tokens / step, "tokens_per_s_per_device": tokens / step / devices,
        "mfu": model_flops / (step * devices * peak * 1e12), "hfu": model_flops / (step * devices * peak * 1e12),
        "peak_memory_bytes_per_device": memory, "memory_capacity_bytes_per_device": capacity,
        "fits": memory <= capacity,
        "breakdown_s": {"compute": c.micro_batches * compute, "recompute": c.micro_batches * recompute_s,
                        # streaming time not hidden behind compute
                        "weight_streaming": step - c.micro_batches * (compute + recompute_s)},
        "stages": [{"stage": 0, "recompute": policy, "time_per_microbatch_s": per_microbatch,
                    "memory": {"activations_bytes": activations, "weights_bytes": buffers, "total_bytes": memory,
                               "borrowed_out_bytes": 0.0, "borrowed_in_bytes": 0.0}}],
    }

