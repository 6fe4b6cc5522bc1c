"""weight_streaming: one training step of Cerebras-style weight streaming (Cerebras, "Weight streaming
execution", 2022; the WATOS paper's baseline): time, throughput and memory.

Each system (a wafer, or a CS-2) keeps activations on the device and streams every block's weights in from
off-device memory for the forward, and again for the backward while streaming the gradients out; streaming
overlaps compute, so a block takes the longer of the two:

    t_block = max(fwd, W/B) + max(bwd + recompute, 2W/B)        (W: the block's 16-bit weights, B: stream bandwidth)

and the ops before and after the blocks max(fwd + bwd, 3W/B). A micro-batch runs every block in turn; the step
is the micro-batches one after another. The devices are data parallel (weights broadcast, gradients reduced
by the interconnect at the same bandwidth); the optimizer runs off-device, overlapped. A device holds its
micro-batch's activations under the recompute policy and two blocks of streamed weights (the block that
runs and the next); checkpoints that do not fit beside them are held off the device (the appliance's
memory beside the weight stream; not charged: the published runs fit no other reading). The stream reaches
``efficiency.streaming`` of its bandwidth. Network traffic counts every device receiving the weights twice and sending the
gradients once per micro-batch.

Writes ``analyses["cost"]`` (:class:`~watos.ir.analyses.StepMetrics`, :func:`watos.cost.metrics.step_metrics`).
"""
from __future__ import annotations

from watos.cost.memory import activation_bytes, framework_bytes, parameter_sizes
from watos.cost.metrics import StepOptions, executed_flops, recomputed_flops, step_metrics, traffic_per_step
from watos.errors import WatosError
from watos.ir import DTYPE_BYTES, Graph
from watos.ir.analyses import DeviceTimes
from watos.ir.pass_manager import Pass, register_pass
from watos.plan import RECOMPUTE_POLICIES


@register_pass("weight_streaming")
class WeightStreaming(Pass):
    stage = "cost"
    requires = frozenset({"device_cost"})
    provides = frozenset({"cost"})

    Config = StepOptions  # the target needs weight_streaming memory; dp counts the data-parallel systems

    def run(self, graph: Graph) -> None:
        c = self.config
        streaming = c.target.weight_streaming
        if streaming is None:
            raise WatosError(f"target {c.target.name} has no weight_streaming memory for strategy weight-streaming")
        times = graph.analyses["device_cost"]
        recompute = graph.analyses["recompute"]
        policy = recompute.policy[0]
        bandwidth = streaming.bandwidth_gb_per_s * 1e9 * c.target.device.efficiency.streaming
        weights = {where: numel * DTYPE_BYTES[graph.model.dtype]
                   for where, numel in parameter_sizes(graph, c.tp).params.items()}
        # Every block on one device, in turn.
        segments = [(str(g.representative), g.count) for g in graph.block_groups] + [("pre", 1), ("post", 1)]
        buffers = 2 * max(weights.values(), default=0.0)
        capacity = c.target.device.memory_capacity_bytes

        def placed(rule: str) -> tuple[float, float]:
            """(activation bytes on the device, share of the checkpoints held off it) under a recompute rule: the
            block being re-run and the streamed weights stay, the checkpoints that do not fit beside them go."""
            working = activation_bytes(recompute, segments, rule, 0)  # the block the backward re-runs
            checkpoints = activation_bytes(recompute, segments, rule, 1) - working
            room = max(0.0, (capacity - c.software.reserved_bytes) / (1 + c.software.allocator_slack) - buffers - working)
            kept = min(checkpoints, room)
            return working + kept, (checkpoints - kept) / checkpoints if checkpoints else 0.0

        def memory(rule: str) -> float:
            live = placed(rule)[0] + buffers
            return live + framework_bytes(live, c.software)

        options = {rule: _streamed(graph, times, weights, bandwidth, rule) for rule in RECOMPUTE_POLICIES}
        per_microbatch, forward, compute, recompute_s = options[policy]
        step = c.micro_batches * per_microbatch + c.software.step_overhead_s
        devices = c.tp * c.pp * c.dp * c.cp
        per_stage_runs = c.micro_batches * c.tp * c.dp * c.cp
        activations = placed(policy)[0]
        streamed = c.micro_batches * devices * 3 * sum(weights.get(w, 0.0) * n for w, n in segments)
        stages = [{"stage": 0, "recompute": policy, "time_per_microbatch_s": per_microbatch, "forward_s": forward,
                   "borrow_transfer_s": 0.0, "compute_per_microbatch_s": compute + recompute_s,
                   "parts_s": {"compute": compute, "recompute": recompute_s,
                               "weight_streaming": per_microbatch - compute - recompute_s},
                   "dp_comm_s": 0.0, "dp_exposed_s": 0.0, "optimizer_s": 0.0,
                   "memory": {"weights_bytes": buffers, "gradients_bytes": 0.0, "optimizer_bytes": 0.0,
                              "activations_bytes": activations, "workspace_bytes": 0.0,
                              "framework_bytes": framework_bytes(activations + buffers, c.software), "parameters": 0.0,
                              "borrowed_out_bytes": 0.0, "borrowed_in_bytes": 0.0, "total_bytes": memory(policy)},
                   "options": {rule: {"time_per_microbatch_s": options[rule][0], "total_bytes": memory(rule)}
                               for rule in RECOMPUTE_POLICIES}}]
        graph.analyses["cost"] = step_metrics(
            graph, c.target, dtype=c.dtype, devices=devices, sequences=c.sequences_per_step, step_time_s=step,
            recomputed_flops=recomputed_flops(times, [segments], [policy]) * c.micro_batches * c.dp,
            executed_flops=executed_flops(times, [segments], [policy], per_stage_runs),
            peak_memory_bytes=memory(policy),
            dram_bytes=traffic_per_step(times, [segments], "dram", per_stage_runs, devices),
            network_bytes=traffic_per_step(times, [segments], "network", per_stage_runs, devices) + streamed,
            breakdown={"compute": c.micro_batches * compute, "recompute": c.micro_batches * recompute_s,
                       # streaming time not hidden behind compute
                       "weight_streaming": c.micro_batches * (per_microbatch - compute - recompute_s),
                       "step_overhead": c.software.step_overhead_s},
            stages=stages)


def _streamed(graph: Graph, times: DeviceTimes, weights: dict[str, float], bandwidth: float,
              policy: str) -> tuple[float, float, float, float]:
    """Seconds per micro-batch under ``policy``: in all, of the forward, of compute, and of recomputation
    (the module docstring's t_block over every block, then the ops outside them)."""
    per_microbatch = forward_s = compute = recompute_s = 0.0
    for group in graph.block_groups or []:
        where = str(group.representative)
        w = weights.get(where, 0.0)
        rerun = times.get(where, f"recompute:{policy}")
        forward = max(times.get(where, "fwd"), w / bandwidth)
        backward = max(times.get(where, "bwd") + rerun, 2 * w / bandwidth)
        per_microbatch += group.count * (forward + backward)
        forward_s += group.count * forward
        compute += group.count * (times.get(where, "fwd") + times.get(where, "bwd"))
        recompute_s += group.count * rerun
    for segment in ("pre", "post"):
        work = times.get(segment, "fwd") + times.get(segment, "bwd")
        per_microbatch += max(work, 3 * weights.get(segment, 0.0) / bandwidth)
        compute += work
    return per_microbatch, forward_s, compute, recompute_s
