"""Pipeline-parallel time and memory in flight (Narayanan et al. 2021).

For m micro-batches over p stages with v model chunks per stage, stage s taking t_s per micro-batch:

    T_pipeline = m · max_s t_s + (Σ_s t_s − max_s t_s) / v        (1F1B, interleaved 1F1B, GPipe)

which is (m + (p−1)/v)·t for equal stages. Stage s holds the activations of min(m, p − s) micro-batches
under 1F1B; the first stage of interleaved 1F1B p·(1 + (p−1)/(p·v)) chunk-micro-batches of L/(p·v) blocks;
every stage of GPipe all m.
"""
from __future__ import annotations

from watos.ir.analyses import PipelineLayout


def pipeline_time(stage_times: list[float], micro_batches: int, interleave: int = 1) -> float:
    """m · max_s t_s + (Σ_s t_s − max_s t_s) / v (the module docstring)."""
    slowest = max(stage_times)
    return micro_batches * slowest + (sum(stage_times) - slowest) / interleave


def in_flight(kind: str, pp: int, interleave: int, micro_batches: int, stage: int) -> float:
    """Micro-batches whose activations stage ``stage`` holds at its peak (the module docstring)."""
    if kind == "gpipe":
        flight = micro_batches
    elif interleave > 1:
        flight = pp * (1 + (pp - 1) / (pp * interleave)) if stage == 0 else pp - stage
    else:
        flight = min(micro_batches, pp - stage)
    return min(flight, max(micro_batches, 1) * interleave)


def stage_segments(layout: PipelineLayout, s: int) -> list[tuple[str, int]]:
    """(block group representative or ``pre``/``post``, how many) that stage ``s`` runs."""
    segments = list(layout.stage_blocks[s].items())
    if s == 0:
        segments.append(("pre", 1))
    if s == layout.pp - 1:
        segments.append(("post", 1))
    return segments
