"""schedule: one training step of a 3D-parallel plan through its pipeline: time, throughput and memory.

Per stage and micro-batch, t = forward + backward + recompute of its blocks (and of the embedding on the
first stage, the head and loss on the last) plus what of its communication stays exposed
(:mod:`watos.cost.overlap`, under the stack's :class:`~watos.hardware.stack.Software`): TP collectives less
the share the stack's TP overlap hides; CP and EP exchanges; ZeRO 2/3's per-micro-batch reduce-scatters and
parameter all-gathers beyond the compute they are prefetched under (the first layer's gather always); the
pipeline sends unless the stack overlaps them; plus the slowdown of the compute that hides communication
(the stack's contention), and gradient accumulation. The step is the pipeline time of those stage times
(:func:`watos.cost.pipeline.pipeline_time`, Narayanan et al. 2021) plus the data-parallel tail: the
per-step gradient reduction beyond the last micro-batch's backward when the stack overlaps it, the
distributed optimizer's parameter all-gather beyond the next step's first forward when it overlaps that,
the optimizer update (its work divided over the ZeRO shards), and the stack's fixed time per step.
Memory per stage: :mod:`watos.cost.memory` with the micro-batches in flight of the schedule, the
checkpoints a Sender lends to its Helper (:mod:`watos.cost.borrowing`), and the stack's own memory.

Writes ``analyses["cost"]`` (:class:`~watos.ir.analyses.StepMetrics`, :func:`watos.cost.metrics.step_metrics`).
"""
from __future__ import annotations

from pydantic import Field

from watos.cost.borrowing import checkpoint_transfer_s
from watos.cost.memory import activation_bytes, parameter_sizes, stage_memory, with_activations
from watos.cost.metrics import StepOptions, executed_flops, recomputed_flops, step_metrics, traffic_per_step
from watos.cost.overlap import Exposure, contention, hidden_fraction, prefetched, under
from watos.cost.pipeline import in_flight, pipeline_time, stage_segments
from watos.ir import Graph
from watos.ir.pass_manager import Pass, register_pass
from watos.network.collectives import collective_time
from watos.plan import RECOMPUTE_POLICIES, PipelineSchedule

# Communication on the critical path of every micro-batch unless overlapped: tensor, context and expert
# parallelism; and ZeRO 2/3's per-micro-batch data-parallel collectives, prefetched under the compute.
_TP_COMM = ("tp_comm_fwd", "tp_comm_bwd")
_EXPOSED_COMM = tuple(f"{group}_comm_{phase}" for group in ("cp", "ep") for phase in ("fwd", "bwd"))
_ZERO_COMM = tuple(f"{group}_comm_{phase}" for group in ("dp", "edp", "dps") for phase in ("fwd", "bwd"))


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
        shard_group: int | None = Field(None, description="ZeRO shards within groups of this many DP ranks (HSDP)")
        borrow: tuple[tuple[int, int, float], ...] = Field(
            (), description="Sender/Helper checkpoint storage: (sender stage, helper stage, bytes per die)")
        grad_bytes: int = Field(2, description="bytes per gradient element held (the main-gradient buffer's dtype)")
        grad_accumulation_bytes: float = Field(
            0.0, description="bytes per parameter and micro-batch of adding the 16-bit weight gradient into the main "
                             "gradient (Megatron-LM's main_grad.add_); 0 when the weight-gradient GEMM accumulates in place")

    def run(self, graph: Graph) -> None:
        c, sw = self.config, self.config.software
        times = graph.analyses["device_cost"]
        layout = graph.analyses["pipeline"]
        groups = graph.analyses["sharding"].groups
        dies = graph.analyses["placement"].dies
        recompute = graph.analyses["recompute"]
        policies = recompute.policy
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
        shards = c.shard_group or c.dp * c.cp
        memory = [stage_memory(sizes, segments[s], activations(s, policies[s]), zero=c.zero, shards=shards, ep=c.ep,
                               grad_bytes=c.grad_bytes,
                               software=sw) for s in range(c.pp)]
        dram = c.target.device.dram_bytes_per_s

        def work(s: int, policy: str) -> float:
            """One micro-batch's forward, backward and recomputation on stage s."""
            return sum(stage_sum(s, k) for k in ("fwd", "bwd", f"recompute:{policy}"))

        def exposures(s: int, policy: str) -> dict[str, Exposure]:
            """What of stage s's per-micro-batch communication stays exposed, and what hides under compute."""
            blocks = sum(n for where, n in segments[s] if where not in ("pre", "post")) or 1
            first_gather = sum(stage_sum(s, f"{g}_comm_fwd") for g in ("dp", "edp", "dps")) / blocks
            return {"tp": hidden_fraction(sum(stage_sum(s, k) for k in _TP_COMM), sw.tp_comm_hidden),
                    "zero": prefetched(sum(stage_sum(s, k) for k in _ZERO_COMM), work(s, policy), first_gather,
                                       sw.fsdp_prefetch),
                    "pp": under(2 * c.interleave * p2p, work(s, policy), sw.p2p_overlap)}

        def stage_parts(s: int, policy: str) -> dict[str, float]:
            """One micro-batch through stage s, part by part (seconds): its forward and backward compute and
            recompute, its exposed communication by phase (TP's exposed share split by phase as TP is), the
            slowdown of the compute that hides the rest, and gradient accumulation."""
            shown = exposures(s, policy)
            tp_exposed = 1 - sw.tp_comm_hidden
            return {"forward": stage_sum(s, "fwd"), "backward": stage_sum(s, "bwd"),
                    "recompute": stage_sum(s, f"recompute:{policy}"),
                    **{f"{group}_comm_{phase}": stage_sum(s, f"{group}_comm_{phase}") * (tp_exposed if group == "tp" else 1)
                       for group in ("tp", "cp", "ep") for phase in ("fwd", "bwd")},
                    "zero_comm": shown["zero"].exposed, "pp_comm": shown["pp"].exposed,
                    "contention": contention(sum(e.hidden for e in shown.values()), sw.contention),
                    "grad_accumulation": c.grad_accumulation_bytes * memory[s]["parameters"] / dram}

        def stage_time(s: int, policy: str) -> float:
            """One micro-batch through stage s: the sum of :func:`stage_parts`."""
            return sum(stage_parts(s, policy).values())

        borrowed = self._borrowing(groups["pp"], dies)
        stages = []
        for s in range(c.pp):
            grad = under(stage_sum(s, "step_grad_comm"), stage_sum(s, "bwd"), sw.grad_reduce_overlap)
            param = under(stage_sum(s, "step_param_comm"), stage_sum(s, "fwd"), sw.param_gather_overlap)
            optimizer = stage_sum(s, "optimizer") / (shards if c.zero >= 1 else 1)
            time = stage_time(s, policies[s])
            transfer = borrowed[s]["transfer_s"]
            forward = stage_sum(s, "fwd") + sum(stage_sum(s, k) for k in (*_TP_COMM, *_EXPOSED_COMM) if k.endswith("_fwd"))
            stages.append({
                "stage": s, "recompute": policies[s], "time_per_microbatch_s": time + max(0.0, transfer - time),
                "forward_s": forward, "borrow_transfer_s": transfer,
                "parts_s": {**stage_parts(s, policies[s]), "borrow_wait": max(0.0, transfer - time)},
                "compute_per_microbatch_s": work(s, policies[s]),
                "dp_comm_s": grad.exposed + grad.hidden + param.exposed + param.hidden,
                "dp_exposed_s": grad.exposed + param.exposed + contention(grad.hidden + param.hidden, sw.contention),
                "optimizer_s": optimizer,
                "memory": {**memory[s], "borrowed_out_bytes": borrowed[s]["out"], "borrowed_in_bytes": borrowed[s]["in"],
                           "total_bytes": memory[s]["total_bytes"] - borrowed[s]["out"] + borrowed[s]["in"]},
                # What each recompute policy would cost this stage (GCMR chooses among them).
                "options": {policy: {"time_per_microbatch_s": stage_time(s, policy),
                                     "total_bytes": with_activations(memory[s], activations(s, policy), sw)}
                            for policy in RECOMPUTE_POLICIES},
            })
        stage_times = [st["time_per_microbatch_s"] for st in stages]
        pipelined = pipeline_time(stage_times, c.micro_batches, c.interleave)
        tail = max(st["dp_exposed_s"] + st["optimizer_s"] for st in stages)
        devices = c.tp * c.pp * c.dp * c.cp
        per_stage_runs = c.micro_batches * c.tp * c.dp * c.cp
        shown = [exposures(s, policies[s]) for s in range(c.pp)]
        graph.analyses["cost"] = step_metrics(
            graph, c.target, dtype=c.dtype, devices=devices, sequences=c.sequences_per_step,
            step_time_s=pipelined + tail + sw.step_overhead_s,
            recomputed_flops=recomputed_flops(times, segments, policies) * c.micro_batches * c.dp,
            executed_flops=executed_flops(times, segments, policies, per_stage_runs),
            # a die running several ranks (dead neighbours' work moved onto it) holds all their memory
            peak_memory_bytes=max(st["memory"]["total_bytes"] for st in stages)
            * graph.analyses["placement"].crowding,
            dram_bytes=traffic_per_step(times, segments, "dram", per_stage_runs, devices // c.pp),
            network_bytes=traffic_per_step(times, segments, "network", per_stage_runs, devices // c.pp),
            breakdown={
                "compute": c.micro_batches * max(stage_sum(s, "fwd") + stage_sum(s, "bwd") for s in range(c.pp)),
                "bubble": pipelined - c.micro_batches * max(stage_times),
                "recompute": c.micro_batches * max(stage_sum(s, f"recompute:{policies[s]}") for s in range(c.pp)),
                "tp_comm": c.micro_batches * max(e["tp"].exposed for e in shown),
                "ep_comm": c.micro_batches * max(stage_sum(s, "ep_comm_fwd") + stage_sum(s, "ep_comm_bwd")
                                                 for s in range(c.pp)),
                "zero_comm": c.micro_batches * max(e["zero"].exposed for e in shown),
                "pp_comm": c.micro_batches * max(e["pp"].exposed for e in shown),
                "contention": c.micro_batches * max(contention(sum(x.hidden for x in e.values()), sw.contention)
                                                    for e in shown),
                "dp_exposed": max(st["dp_exposed_s"] for st in stages),
                "optimizer": max(st["optimizer_s"] for st in stages),
                "step_overhead": sw.step_overhead_s,
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
