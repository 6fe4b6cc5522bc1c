"""One training step of a pipeline as events: a dependency-driven simulation of GPipe, 1F1B and
Megatron's interleaved 1F1B.

Each stage runs its ops one at a time in the fixed order of its schedule; an op starts as soon as the
stage is free and its input is there. Model chunk ``c`` of stage ``s`` is virtual stage ``k = c·p + s``
(p stages, v chunks each, ``V = p·v`` virtual stages). The forward of micro-batch ``i`` on virtual stage
``k`` needs the forward of ``i`` on ``k − 1``; its backward needs the backward of ``i`` on ``k + 1``, or
on the last virtual stage its own forward. An input that comes from another physical stage arrives
``p2p_s`` after its producer ends.

With equal stages (forward ``t_f``, backward ``t_b``) and ``p2p_s = 0`` the step takes
``(m + p − 1)·(t_f + t_b)`` for GPipe and 1F1B, and ``(m + (p − 1)/v)·(t_f + t_b)`` for interleaved
1F1B with ``m`` a multiple of ``p``.
"""
from __future__ import annotations

import math
from collections.abc import Iterable

PipelineOp = tuple[str, int, int]  # (kind, micro_batch, chunk)
KINDS = ("gpipe", "1f1b", "interleaved")


def _gpipe_order(m: int) -> list[PipelineOp]:
    return [("fwd", i, 0) for i in range(m)] + [("bwd", i, 0) for i in range(m)]


def _1f1b_order(p: int, m: int, s: int) -> list[PipelineOp]:
    """PipeDream-flush: ``min(p − s − 1, m)`` warm-up forwards, then one forward and one backward
    in turn, then the remaining backwards."""
    warmup = min(p - s - 1, m)
    order = [("fwd", i, 0) for i in range(warmup)]
    for i in range(m - warmup):
        order += [("fwd", warmup + i, 0), ("bwd", i, 0)]
    return order + [("bwd", i, 0) for i in range(m - warmup, m)]


def _interleaved_order(p: int, m: int, s: int, v: int) -> list[PipelineOp]:
    """Megatron-LM's ``forward_backward_pipelining_with_interleaving`` for pipeline rank ``s``.

    Chunk-op ``j`` (of ``m·v``) works on micro-batch ``(j // (p·v))·p + j % p`` of chunk
    ``(j % (p·v)) // p`` (backwards walk the chunks from the last). Warm-up is
    ``2·(p − s − 1) + (v − 1)·p`` chunk-forwards, all of them when ``m == p``, capped at ``m·v``;
    then one chunk-forward and one chunk-backward in turn, then the remaining chunk-backwards.
    """
    total = m * v
    warmup = total if m == p else min(2 * (p - s - 1) + (v - 1) * p, total)

    def op(kind: str, j: int) -> PipelineOp:
        chunk = (j % (p * v)) // p
        return kind, (j // (p * v)) * p + j % p, chunk if kind == "fwd" else v - 1 - chunk

    order = [op("fwd", j) for j in range(warmup)]
    for j in range(total - warmup):
        order += [op("fwd", warmup + j), op("bwd", j)]
    return order + [op("bwd", j) for j in range(total - warmup, total)]


def _orders(p: int, m: int, v: int, kind: str) -> list[list[PipelineOp]]:
    if kind == "interleaved" and v > 1:
        return [_interleaved_order(p, m, s, v) for s in range(p)]
    if kind == "gpipe":
        return [_gpipe_order(m) for _ in range(p)]
    return [_1f1b_order(p, m, s) for s in range(p)]


def _check(stage_fwd_s: list[float], stage_bwd_s: list[float], micro_batches: int, p2p_s: float,
           interleave: int, kind: str) -> None:
    p = len(stage_fwd_s)
    times = [*stage_fwd_s, *stage_bwd_s, p2p_s]
    if p == 0 or len(stage_bwd_s) != p:
        raise ValueError(f"pipeline: {p} forward and {len(stage_bwd_s)} backward stage times; need as many, at least one")
    if not all(math.isfinite(t) and t >= 0 for t in times):
        raise ValueError("pipeline: stage and p2p times must be finite and >= 0")
    if micro_batches < 1 or interleave < 1:
        raise ValueError(f"pipeline: micro_batches={micro_batches} and interleave={interleave} must be >= 1")
    if kind not in KINDS:
        raise ValueError(f"pipeline: unknown schedule {kind!r}; one of {', '.join(KINDS)}")
    if interleave > 1 and kind != "interleaved":
        raise ValueError(f"pipeline: interleave={interleave} needs the interleaved schedule, not {kind!r}")
    if interleave > 1 and micro_batches % p:
        raise ValueError(f"pipeline: interleaved 1F1B needs micro-batches ({micro_batches}) to be a multiple of the stages ({p})")


def pipeline_events(stage_fwd_s: list[float], stage_bwd_s: list[float], micro_batches: int,
                    p2p_s: float = 0.0, interleave: int = 1, kind: str = "1f1b") -> list[dict]:
    """The forward and backward ops of one step on ``p = len(stage_fwd_s)`` stages.

    ``stage_fwd_s[s]`` / ``stage_bwd_s[s]``: seconds of one micro-batch on stage ``s`` over all its
    ``interleave`` chunks (a chunk-op takes ``1/interleave`` of it; backward includes recompute).
    ``kind``: ``gpipe``, ``1f1b`` or ``interleaved`` (Megatron's interleaved 1F1B; it needs
    ``micro_batches % p == 0`` when ``interleave > 1``; with ``interleave == 1`` Megatron runs plain
    1F1B, and so does this). Returns ``{"stage", "kind", "micro_batch", "chunk", "start_s", "dur_s"}``
    dicts sorted by ``(start_s, stage)``; ValueError on bad arguments.
    """
    _check(stage_fwd_s, stage_bwd_s, micro_batches, p2p_s, interleave, kind)
    p, v = len(stage_fwd_s), interleave
    last = p * v - 1
    orders = _orders(p, micro_batches, v, kind)
    dur = {"fwd": [t / v for t in stage_fwd_s], "bwd": [t / v for t in stage_bwd_s]}
    end: dict[tuple[str, int, int], float] = {}  # (kind, micro_batch, virtual stage) -> end time

    def ready(s: int, kind_: str, i: int, k: int) -> float | None:
        """When the input of an op has arrived on stage ``s``; None while its producer has not run."""
        if kind_ == "fwd" and k == 0:
            return 0.0
        producer = ("fwd", i, k - 1) if kind_ == "fwd" else ("fwd", i, k) if k == last else ("bwd", i, k + 1)
        if producer not in end:
            return None
        return end[producer] + (p2p_s if producer[2] % p != s else 0.0)

    events, free, nxt = [], [0.0] * p, [0] * p
    while any(nxt[s] < len(orders[s]) for s in range(p)):
        progressed = False
        for s in range(p):
            while nxt[s] < len(orders[s]):
                kind_, i, c = orders[s][nxt[s]]
                arrival = ready(s, kind_, i, c * p + s)
                if arrival is None:
                    break
                start = max(free[s], arrival)
                free[s] = end[kind_, i, c * p + s] = start + dur[kind_][s]
                events.append({"stage": s, "kind": kind_, "micro_batch": i, "chunk": c,
                               "start_s": start, "dur_s": dur[kind_][s]})
                nxt[s] += 1
                progressed = True
        if not progressed:
            raise RuntimeError(f"pipeline: {kind} schedule deadlocks at ops {nxt}")
    return sorted(events, key=lambda e: (e["start_s"], e["stage"]))


def makespan(events: Iterable[dict]) -> float:
    """Seconds from the step's start to the end of its last event (0 for none)."""
    return max((e["start_s"] + e["dur_s"] for e in events), default=0.0)
