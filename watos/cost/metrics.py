"""The step metrics every strategy reports: one function, one schema (:class:`~watos.ir.analyses.StepMetrics`).

From the step time T of ``sequences`` sequences of s tokens on ``devices`` devices of peak P (for the
training dtype):

    tokens/s = sequences·s / T                    MFU = model FLOPs / (T · devices · P)
    HFU = (model FLOPs + recomputed FLOPs) / (T · devices · P)

where model FLOPs are the traced forward and backward of the whole model for every sequence of the step
(recomputation not counted: the MFU of Chowdhery et al. 2022, Appendix B; Korthikanti et al. 2022 §5.3 for
HFU). A plan fits when its busiest device's memory fits the device's DRAM and SRAM.
"""
from __future__ import annotations

from pydantic import Field

from watos.hardware.stack import Software
from watos.hardware.target import Target
from watos.ir import Graph
from watos.ir.analyses import DeviceTimes, StageMetrics, StepMetrics
from watos.ir.pass_manager import PassConfig
from watos.ir.queries import model_flops

BREAKDOWN = ("compute", "bubble", "recompute", "tp_comm", "ep_comm", "zero_comm", "pp_comm", "contention",
             "dp_exposed", "optimizer", "step_overhead", "weight_streaming")
"""Where a step's time goes (seconds): compute on the critical stage, pipeline bubble, recomputation, exposed
TP/EP communication, ZeRO 2/3's per-micro-batch collectives beyond the compute that hides them, pipeline
sends, the slowdown of compute that hides communication, the data-parallel reduction and gather left
exposed, the optimizer, the stack's fixed time per step, and weights streamed in beyond the compute that
hides them (weight streaming)."""


class StepOptions(PassConfig):
    """The options of every pass that schedules a step and reports its :func:`step_metrics`: the target, the
    plan's degrees (its devices are tp·pp·dp·cp), micro-batches, the global batch and the dtype."""

    target: Target = Field(description="the hardware the plan runs on")
    tp: int = Field(1, description="tensor-parallel degree")
    pp: int = Field(1, description="pipeline stages")
    dp: int = Field(1, description="data-parallel replicas")
    cp: int = Field(1, description="context-parallel degree")
    micro_batches: int = Field(1, description="micro-batches per pipeline per step (m)")
    sequences_per_step: int = Field(1, description="sequences per optimizer step (global batch)")
    dtype: str = Field("bf16", description="the training dtype (selects the device's peak)")
    software: Software = Field(description="the stack the plan runs under, resolved (overlap, memory, overheads)")


def step_metrics(graph: Graph, target: Target, *, dtype: str, devices: int, sequences: int, step_time_s: float,
                 recomputed_flops: float, executed_flops: float, peak_memory_bytes: float, dram_bytes: float,
                 network_bytes: float, breakdown: dict[str, float], stages: list[StageMetrics]) -> StepMetrics:
    """The :class:`~watos.ir.analyses.StepMetrics` of one costed step (the module docstring); ``breakdown``
    gives some of :data:`BREAKDOWN` (the rest are 0), traffic is bytes per step over all devices."""
    unknown = breakdown.keys() - set(BREAKDOWN)
    if unknown:
        raise ValueError(f"step_metrics: unknown breakdown parts {sorted(unknown)}")
    tokens = sequences * graph.model.seq_len
    flops = model_flops(graph) * sequences / graph.model.micro_batch
    peak = target.device.peak_tflops_for(dtype)
    capacity = target.device.memory_capacity_bytes
    return {
        "step_time_s": step_time_s,
        "tokens_per_s": tokens / step_time_s,
        "tokens_per_s_per_device": tokens / step_time_s / devices,
        "model_flops_per_step": flops,
        "executed_flops_per_step": executed_flops,
        "mfu": flops / (step_time_s * devices * peak * 1e12),
        "hfu": (flops + recomputed_flops) / (step_time_s * devices * peak * 1e12),
        "peak_memory_bytes_per_device": peak_memory_bytes,
        "dram_bytes_per_step": dram_bytes,
        "network_bytes_per_step": network_bytes,
        "memory_capacity_bytes_per_device": capacity,
        "fits": peak_memory_bytes <= capacity,
        "breakdown_s": {part: breakdown.get(part, 0.0) for part in BREAKDOWN},
        "stages": stages,
    }


def executed_flops(times: DeviceTimes, segments: list[list[tuple[str, int]]], policies: list[str] | tuple[str, ...],
                   per_stage_runs: int) -> float:
    """FLOPs the devices execute in one step: every stage's per-device work and recomputation under its policy,
    times ``per_stage_runs`` (micro-batches × devices of one stage)."""
    return per_stage_runs * sum(times.over(seg, "device_flops") + times.over(seg, f"recompute_device_flops:{policy}")
                                for seg, policy in zip(segments, policies))


def recomputed_flops(times: DeviceTimes, segments: list[list[tuple[str, int]]],
                     policies: list[str] | tuple[str, ...]) -> float:
    """Model FLOPs one micro-batch of one pipeline re-runs under each stage's recompute policy."""
    return sum(times.over(seg, f"recompute_flops:{policy}") for seg, policy in zip(segments, policies))


def traffic_per_step(times: DeviceTimes, segments: list[list[tuple[str, int]]], kind: str, per_stage_runs: int,
                     stage_devices: int) -> float:
    """Bytes of ``kind`` (``dram`` or ``network``) one step moves over all devices: every micro-batch's traffic on
    every device of each stage (``per_stage_runs`` = micro-batches × devices of a stage), and the once-per-step
    traffic (optimizer, gradient reduction) on its ``stage_devices`` devices."""
    return sum(per_stage_runs * times.over(seg, f"{kind}_bytes") + stage_devices * times.over(seg, f"step_{kind}_bytes")
               for seg in segments)
