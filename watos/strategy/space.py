"""What may be tried: the parallel shapes that use every device, the knobs of each, and (for checking the
search on small problems) every plan there is."""
from __future__ import annotations

import itertools
from collections.abc import Iterator

from watos.hardware.target import Mesh2D
from watos.network.placement import PLACEMENTS
from watos.plan import RECOMPUTE_POLICIES, Plan, head_split_error
from watos.strategy.problem import Problem, plan_error


def divisors(n: int) -> list[int]:
    """The divisors of ``n``, ascending."""
    return [d for d in range(1, n + 1) if n % d == 0]


def shapes(problem: Problem) -> Iterator[tuple[int, int, int]]:
    """(tp, pp, dp) using every device, tp dividing the heads, pp at most the blocks, dp the batch."""
    return ((tp, pp, dp) for tp, pp, dp, reason in all_shapes(problem) if reason is None)


def all_shapes(problem: Problem) -> Iterator[tuple[int, int, int, str | None]]:
    """Every (tp, pp, dp) that uses every device, with why it cannot split the model or the batch (None: it can)."""
    info = problem.info
    for tp in divisors(problem.devices):
        heads = head_split_error(tp, info["heads"], info["kv_heads"])
        for pp in divisors(problem.devices // tp):
            dp = problem.devices // (tp * pp)
            if heads is not None:
                yield tp, pp, dp, heads
            elif pp > info["layers"]:
                yield tp, pp, dp, f"pp={pp} exceeds the {info['layers']} blocks"
            elif problem.global_batch % dp:
                yield tp, pp, dp, f"batch: the global batch of {problem.global_batch} sequences is not a multiple of dp={dp}"
            else:
                yield tp, pp, dp, None


def expert_degrees(problem: Problem, dp: int) -> list[int]:
    """Expert-parallel degrees a shape allows: those dividing both dp and the experts per layer."""
    experts = problem.limits["experts"]
    return [e for e in divisors(dp) if experts and experts % e == 0] or [1]


def candidate_plans(problem: Problem, tp: int, pp: int, dp: int, placement: str) -> Iterator[Plan]:
    """Every knob combination of one shape that divides: expert parallelism (MoE), ZeRO (1 when data
    parallel, 3 when that is what fits), micro-batch, sequence parallelism, interleaving; recompute
    ``none`` (GCMR decides)."""
    for ep in expert_degrees(problem, dp):
        zero1 = problem.model_state_bytes(tp, pp, dp, 1, ep)
        zeros = [0] if dp == 1 else [1] + ([3] if zero1 > problem.capacity else [])
        for zero, mb, sp, v in itertools.product(zeros, problem.micro_batch_sizes,
                                                 (False, True) if tp > 1 else (False,), problem.interleaves):
            plan = problem.plan(tp=tp, pp=pp, dp=dp, ep=ep, zero=zero, micro_batch=mb, sequence_parallel=sp,
                                interleave=v, placement=placement)
            if plan_error(problem, plan) is None:
                yield plan


def every_plan(problem: Problem) -> Iterator[Plan]:
    """Every plan: each shape, knob, per-stage recompute policy and placement (no borrowing)."""
    mesh = isinstance(problem.target.topology, Mesh2D)
    for tp, pp, dp in shapes(problem):
        for base in candidate_plans(problem, tp, pp, dp, "row_major"):
            for policies in itertools.product(RECOMPUTE_POLICIES, repeat=pp):
                for placement in (PLACEMENTS if mesh else ("row_major",)):
                    yield base.model_copy(update={"recompute": policies[0] if len(set(policies)) == 1 else policies,
                                                  "placement": placement})


def space_size(problem: Problem) -> int:
    """Plans :func:`every_plan` enumerates."""
    return sum(1 for _ in every_plan(problem))
