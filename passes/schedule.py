"""schedule: one training step of a 3D-parallel plan through its pipeline: time, throughput and memory.

Per stage and micro-batch, t = forward + backward + recompute + exposed TP/CP/EP communication of its
blocks (and of the embedding on the first stage, the head and loss on the last), plus the p2p sends, plus
what ZeRO 2/3's per-micro-batch gradient reduce-scatters and parameter all-gathers take beyond the
compute they are prefetched under (DeepSpeed and FSDP overlap them layer by layer). The step is the
pipeline time of those stage times (:func:`watos.cost.pipeline.pipeline_time`, Narayanan et al. 2021)
plus the data-parallel tail: per-step gradient collectives overlap the backward of the last micro-batch
when ``overlap_grad_reduce`` (only what exceeds it is exposed); the optimizer update follows, its work
divided over data parallelism under ZeRO ≥ 1. Memory per stage: :mod:`watos.cost.memory` with the
micro-batches in flight of the schedule, and the checkpoints a Sender lends to its Helper
(:mod:`watos.cost.borrowing`).

Writes ``analyses["cost"]`` (:class:`~watos.ir.analyses.StepMetrics`, :func:`watos.cost.metrics.step_metrics`).
"""
from __future__ import annotations

from pydantic import Field

from watos.cost.borrowing import checkpoint_transfer_s
from watos.cost.memory import activation_bytes, parameter_sizes, stage_memory
from watos.cost.metrics import StepOptions, executed_flops, recomputed_flops, step_metrics, traffic_per_step
from watos.cost.pipeline import in_flight, pipeline_time, stage_segments
from watos.ir import Graph
from watos.ir.pass_manager import Pass, register_pass
from watos.network.collectives import collective_time
from watos.plan import RECOMPUTE_POLICIES, PipelineSchedule

# Communication on the critical path of every micro-batch: tensor, context and expert parallelism; and
# ZeRO 2/3's per-micro-batch data-parallel collectives, which overlap the micro-batch's compute.
_EXPOSED_COMM = tuple(f"{group}_comm_{phase}" for group in ("tp", "cp", "ep") for phase in ("fwd", "bwd"))
_OVERLAPPED_COMM = tuple(f"{group}_comm_{phase}" for group in ("dp", "edp") for phase in ("fwd", "bwd"))


@register_pass("schedule")
class Schedule(Pass):
    stage = "cost"
    requires = frozenset({"device_cost", "placement"})
    provides = frozenset({"cost"})

    class Config(StepOptions):
        ep: int = Field(1, description="expert-parallel degree")
        zero: int = Field(0, description="ZeRO stage (0-3)")
        interleave: int = Field(1, description="model chunks per pipeline stage")
        kind: PipelineSchedule = Field("1f1b", description="pipeline schedule")
        overlap_grad_reduce: bool = Field(True, description="overlap per-step gradient collectives with the last backward")
        borrow: tuple[tuple[int, int, float], ...] = Field(
            (), description="Sender/Helper checkpoint storage: (sender stage, helper stage, bytes per die)")
        grad_accumulation_bytes: float = Field(
            0.0, description="bytes per parameter and micro-batch of adding the 16-bit weight gradient into the main "
                             "gradient (Megatron-LM's main_grad.add_); 0 when the weight-gradient GEMM accumulates in place")

    def run(self, graph: Graph) -> None:
        c = self.config
        times = graph.analyses["device_cost"]
        layout = graph.analyses["pipeline"]
        groups = graph.analyses["sharding"].groups
        dies = graph.analyses["placement"].dies
        policies = graph.analyses["recompute"].policy
        recompute = graph.analyses["recompute"]
        segments = [stage_segments(layout, s) for s in range(c.pp)]
        # A stage boundary: each TP rank sends its slice, the receivers all-gather it (scatter/gather);
        # every boundary of every pipeline sends at once.
        boundaries = [[g[s], g[s + 1]] for g in groups["pp"] for s in range(c.pp - 1)]
        p2p = (collective_time(c.target, "p2p", layout.p2p_bytes, boundaries, dies)
               + collective_time(c.target, "all_gather", layout.p2p_bytes * c.tp, groups["tp"], dies)) if c.pp > 1 else 0.0

        def stage_sum(s: int, key: str) -> float:
            return times.over(segments[s], key)

        def activations(s: int, policy: str) -> float:
            return activation_bytes(recompute, segments[s], policy, in_flight(c.kind, c.pp, c.interleave, c.micro_batches, s))

        sizes = parameter_sizes(graph, c.tp, c.ep)
        memory = [stage_memory(sizes, segments[s], activations(s, policies[s]), zero=c.zero, dp=c.dp, cp=c.cp, ep=c.ep)
                  for s in range(c.pp)]
        dram = c.target.device.dram_bytes_per_s

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

        borrowed = self._borrowing(groups["pp"], dies)
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
                                     + activations(s, policy)}
                            for policy in RECOMPUTE_POLICIES},
            })
        stage_times = [st["time_per_microbatch_s"] for st in stages]
        pipelined = pipeline_time(stage_times, c.micro_batches, c.interleave)
        tail = max(st["dp_exposed_s"] + st["optimizer_s"] for st in stages)
        devices = c.tp * c.pp * c.dp * c.cp
        per_stage_runs = c.micro_batches * c.tp * c.dp * c.cp
        graph.analyses["cost"] = step_metrics(
            graph, c.target, dtype=c.dtype, devices=devices, sequences=c.sequences_per_step, step_time_s=pipelined + tail,
            recomputed_flops=recomputed_flops(times, segments, policies) * c.micro_batches * c.dp,
            executed_flops=executed_flops(times, segments, policies, per_stage_runs),
            peak_memory_bytes=max(st["memory"]["total_bytes"] for st in stages),
            dram_bytes=traffic_per_step(times, segments, "dram", per_stage_runs, devices // c.pp),
            network_bytes=traffic_per_step(times, segments, "network", per_stage_runs, devices // c.pp),
            breakdown={
                "compute": c.micro_batches * max(stage_sum(s, "fwd") + stage_sum(s, "bwd") for s in range(c.pp)),
                "bubble": pipelined - c.micro_batches * max(stage_times),
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
            stages=stages)

    def _borrowing(self, pipelines: list[list[int]], dies: tuple[int, ...]) -> list[dict]:
        """Sender/Helper checkpoint storage: bytes each stage's dies lend or borrow, and the seconds per
        micro-batch its checkpoints spend in flight (:func:`watos.cost.borrowing.checkpoint_transfer_s`)."""
        c = self.config
        stages = [{"out": 0.0, "in": 0.0, "transfer_s": 0.0} for _ in range(c.pp)]
        for sender, helper, nbytes in c.borrow:
            stages[sender]["out"] += nbytes
            stages[helper]["in"] += nbytes
            flight = in_flight(c.kind, c.pp, c.interleave, c.micro_batches, sender)
            stages[sender]["transfer_s"] += checkpoint_transfer_s(c.target, pipelines, dies, sender, helper, nbytes, flight)
        return stages
