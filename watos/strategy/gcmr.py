"""GCMR: globally coordinated memory-efficient recomputation (the WATOS paper, §Strategy 2-3).

Under 1F1B, stage s holds the activations of p − s micro-batches: early stages overflow their DRAM while
late ones leave it unused. GCMR chooses a recomputation policy per stage and pairs memory-starved
*Sender* stages with memory-rich *Helper* stages, whose DRAM keeps part of the Sender's checkpoints
(reached over the die-to-die links), to minimise the pipeline time

    T = m · max_s t_s + (Σ_s t_s − max_s t_s) / v                  (Narayanan et al. 2021; watos.cost.pipeline)

subject to every stage fitting its dies. Stage s is paired with stage p−1−s, whose in-flight counts sum to
p + 1 for every pair (the 1F1B imbalance mirrored). The dynamic programme runs over candidate bounds B on
the slowest stage: for each B every pair independently takes its cheapest feasible choice (policies for
both stages, and how much the heavier one borrows) whose stages stay within B, and the best T over all B
is kept; each pair's choices are first reduced to their (max, sum) Pareto front, so the programme is
exact over the option set and costs O((9·p)²).
"""
from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field

from watos.cost.pipeline import pipeline_time

Transfer = Callable[[int, int, float], float]  # (sender, helper, bytes) → seconds per micro-batch


@dataclass(frozen=True)
class Choice:
    """Per-stage recompute policies, Sender/Helper borrowing (sender, helper, bytes) and the estimate."""

    policies: tuple[str, ...]
    borrow: tuple[tuple[int, int, float], ...] = ()
    pipeline_time_s: float = 0.0
    stage_times_s: tuple[float, ...] = field(default=())


def gcmr(stages: list[dict], capacity: float, micro_batches: int, interleave: int = 1,
         transfer: Transfer | None = None) -> Choice | None:
    """The best per-stage choice, or None when no choice fits. ``stages[s]["options"][policy]`` holds
    ``time_per_microbatch_s`` and ``total_bytes`` (the schedule pass writes them); ``transfer`` prices
    checkpoint traffic (None: no borrowing)."""
    p = len(stages)
    fronts = []
    for a in range(p // 2 + p % 2):
        front = _pair_front(stages, a, p - 1 - a, capacity, transfer)
        if not front:
            return None
        fronts.append(front)
    best: Choice | None = None
    for bound in sorted({entry[0] for front in fronts for entry in front}):
        picks = [next((e for e in front if e[0] <= bound), None) for front in fronts]
        if any(pick is None for pick in picks):
            continue
        times = [0.0] * p
        policies = [""] * p
        borrow = []
        for _, _, assignment, lent in picks:
            for s, (policy, t) in assignment.items():
                times[s], policies[s] = t, policy
            borrow.extend(lent)
        total = pipeline_time(times, micro_batches, interleave)
        if best is None or total < best.pipeline_time_s - 1e-12:
            best = Choice(tuple(policies), tuple(borrow), total, tuple(times))
    return best


def _pair_front(stages: list[dict], a: int, b: int, capacity: float, transfer: Transfer | None) -> list[tuple]:
    """Feasible choices for the pair (a, b) as (max time, sum time, {stage: (policy, time)}, borrow),
    reduced to the Pareto front and sorted by sum time (ties: less borrowed)."""
    members = (a,) if a == b else (a, b)
    candidates = []
    for combo in itertools.product(*(sorted(stages[s]["options"]) for s in members)):
        need = {s: stages[s]["options"][policy]["total_bytes"] for s, policy in zip(members, combo)}
        time = {s: stages[s]["options"][policy]["time_per_microbatch_s"] for s, policy in zip(members, combo)}
        lent: list[tuple[int, int, float]] = []
        if a != b and transfer is not None:
            for sender, helper in ((a, b), (b, a)):
                short = need[sender] - capacity
                if short > 0 and need[helper] + short <= capacity:
                    lent.append((sender, helper, short))
                    need[sender] -= short
                    need[helper] += short
                    time[sender] += max(0.0, transfer(sender, helper, short) - time[sender])
        if all(n <= capacity for n in need.values()):
            assignment = {s: (policy, time[s]) for s, policy in zip(members, combo)}
            candidates.append((max(time.values()), sum(time.values()), assignment, tuple(lent)))
    candidates.sort(key=lambda e: (e[1], e[0], sum(x[2] for x in e[3])))
    front = []
    for entry in candidates:
        if not front or entry[0] < min(e[0] for e in front):
            front.append(entry)
    return front
