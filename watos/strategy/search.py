"""Strategy search: the fastest plan for a model on a target (the WATOS method, §Strategy 1-5).

1. *Central scheduler*: every (TP, PP, DP) that uses all devices and divides the heads and the batch
   (:mod:`watos.strategy.space`); shapes whose model states (weights, gradients, Adam states under the best
   ZeRO stage) overflow a device are pruned before anything is timed.
2. Each surviving shape is costed for every micro-batch size, sequence parallelism, ZeRO stage and
   interleaving, once, on compact placement; the costing reports what every recompute policy would cost
   each stage, and :func:`watos.strategy.gcmr.gcmr` chooses per-stage recomputation and Sender/Helper
   borrowing.
3. The best candidates are costed exactly with their per-stage choices, on every placement strategy.
4. An evolutionary refinement (seeded) mutates the best plans (a stage's policy, micro-batch, placement
   seed) and keeps improvements.

Where the whole space is small (:func:`watos.strategy.space.space_size`), :func:`exhaustive` enumerates it
instead; the test suite checks the search against it.
"""
from __future__ import annotations

import functools
import random
from collections.abc import Callable, Sequence

from watos.cost.borrowing import checkpoint_transfer_s
from watos.cost.pipeline import in_flight
from watos.errors import WatosError
from watos.hardware.target import Mesh2D
from watos.ir.analyses import StepMetrics
from watos.network.placement import PLACEMENTS, place
from watos.plan import RECOMPUTE_POLICIES, Borrow, Plan, parallel_groups
from watos.strategy.gcmr import gcmr
from watos.strategy.problem import Problem, evaluate, plan_error, try_evaluate
from watos.strategy.result import (
    Outcome,
    config_key,
    distinct,
    plan_json,
    plan_key,
    plan_summary,
)
from watos.strategy.space import all_shapes, candidate_plans, every_plan, expert_degrees, shapes


def with_gcmr(problem: Problem, plan: Plan, cost: dict) -> tuple[Plan, float] | None:
    """The plan with GCMR's per-stage recompute and borrowing, and GCMR's estimate of its pipeline time
    (None: nothing fits)."""
    stages = [{**st, "options": {p: o for p, o in st["options"].items() if p in problem.recompute_policies}}
              for st in cost["stages"]]
    transfer = _transfer(problem, plan) if isinstance(problem.target.topology, Mesh2D) and plan.pp > 1 else None
    choice = gcmr(stages, problem.capacity, plan.micro_batches, plan.interleave, transfer)
    if choice is None:
        return None
    policies = choice.policies[0] if len(set(choice.policies)) == 1 else choice.policies
    borrow = tuple(Borrow(sender=s, helper=h, gb=b / 1e9) for s, h, b in choice.borrow)
    return plan.model_copy(update={"recompute": policies, "borrow": borrow}), choice.pipeline_time_s


def _transfer(problem: Problem, plan: Plan) -> Callable[[int, int, float], float]:
    """Seconds per micro-batch for a Sender's borrowed checkpoints, as the schedule pass prices them
    (on compact placement: the final placement is optimised for the pairs afterwards)."""
    mesh = problem.target.topology
    group = plan.tp * plan.cp
    dead = frozenset(problem.target.faults.dead_dies) if problem.target.faults else frozenset()
    dies = place("compact", mesh.rows, mesh.cols, group, plan.dp, plan.pp, wafers=problem.target.wafers, dead=dead)
    pipelines = parallel_groups(plan.tp, plan.cp, plan.dp, plan.pp)["pp"]

    @functools.cache
    def seconds(sender: int, helper: int, nbytes: float) -> float:
        flight = in_flight(plan.pipeline_kind, plan.pp, plan.interleave, plan.micro_batches, sender)
        return checkpoint_transfer_s(problem.target, pipelines, dies, sender, helper, nbytes, flight)

    return seconds


Observer = Callable[[str, Plan, StepMetrics | str], None]
"""Told of every plan the search costs: the phase (``screen``, ``considered``, ``placement``, ``refine``), the
plan, and its cost or the one-line reason it cannot run; :func:`watos.search` then announces ``baselines``
(plan None) before it costs them."""


def search(problem: Problem, *, seed: int = 0, keep: int = 6, generations: int = 3,
           considered: Sequence[Plan] = (), observe: Observer | None = None) -> dict:
    """The best plan, runners-up, and why the others lost (see module docstring); ``considered`` plans
    (a user's, or a paper's) are evaluated as the screened ones are, reported whatever their rank
    (``considered``), and compete for best; ``observe`` hears of every plan costed."""
    observe = observe or (lambda phase, plan, outcome: None)
    mesh = isinstance(problem.target.topology, Mesh2D)
    rejected: list[dict] = []
    screened: list[tuple[float, Plan]] = []
    rejected += [{"shape": {"tp": tp, "pp": pp, "dp": dp}, "limited_by": reason}
                 for tp, pp, dp, reason in all_shapes(problem) if reason is not None and reason.startswith("batch")]
    for tp, pp, dp in shapes(problem):
        states = min(problem.model_state_bytes(tp, pp, dp, z, max(expert_degrees(problem, dp)))
                     for z in ((0,) if dp == 1 else (1, 3)))
        if states > problem.capacity:
            rejected.append({"shape": {"tp": tp, "pp": pp, "dp": dp},
                             "limited_by": f"memory: model states need {states / 1e9:.3g} GB/device, "
                                           f"has {problem.capacity / 1e9:.3g}"})
            continue
        for plan in candidate_plans(problem, tp, pp, dp, "compact" if mesh else "row_major"):
            outcome = screen(problem, plan)
            observe("screen", plan if isinstance(outcome, str) else outcome.plan,
                    outcome if isinstance(outcome, str) else outcome.cost)
            if isinstance(outcome, str):
                rejected.append({"shape": {"tp": tp, "pp": pp, "dp": dp}, "plan": plan_json(plan), "limited_by": outcome})
            else:
                screened.append((outcome.cost["step_time_s"], outcome.plan))
    shown = []
    for plan in considered:
        outcome = screen(problem, plan)
        observe("considered", plan if isinstance(outcome, str) else outcome.plan,
                outcome if isinstance(outcome, str) else outcome.cost)
        if isinstance(outcome, str):
            shown.append({"plan": plan_json(plan), "limited_by": outcome})
        else:
            shown.append(plan_summary(outcome.plan, outcome.cost))
            screened.append((outcome.cost["step_time_s"], outcome.plan))
    if not screened:
        costed = [r["limited_by"] for r in rejected if not r["limited_by"].startswith("batch")]
        raise WatosError(f"no plan fits {problem.target.name}: " + (costed[0] if costed else _why_no_shape(problem)))
    screened.sort(key=lambda e: (e[0], plan_key(e[1])))
    exact = _exact(problem, [p for _, p in screened[:keep]], mesh, observe)
    outcomes = distinct(exact + _refine(problem, exact, seed, generations, keep, observe), config_key)
    best, runners = outcomes[0], outcomes[1:keep]
    return {"best": plan_summary(best.plan, best.cost),
            "runners_up": [plan_summary(o.plan, o.cost) for o in runners],
            "rejected": rejected, "evaluated": len(screened), "considered": shown}


def _why_no_shape(problem: Problem) -> str:
    """Why no (tp, pp, dp) using every device divides the model and the batch: tp = pp = 1 always splits the
    model, so it is the batch, which none of the data-parallel degrees the model allows divides."""
    allowed = [(tp, dp) for tp, _, dp, reason in all_shapes(problem) if reason is None or reason.startswith("batch")]
    degrees = ", ".join(str(dp) for dp in sorted({dp for _, dp in allowed}))
    return (f"the data-parallel degrees that the model's {problem.info['heads']} attention heads and "
            f"{problem.info['layers']} blocks leave on {problem.devices} devices ({degrees}) do not divide the "
            f"global batch of {problem.global_batch} sequences")


def screen(problem: Problem, plan: Plan) -> Outcome | str:
    """The plan with GCMR's recompute and borrowing and its cost, or the one-line reason it cannot run."""
    if error := plan_error(problem, plan):
        return error
    cost = try_evaluate(problem, plan)
    if isinstance(cost, str):
        return cost
    chosen = with_gcmr(problem, plan, cost)
    if chosen is None:
        return "memory: no recompute/borrowing choice fits"
    return Outcome(chosen[0], evaluate(problem, chosen[0]))


def _exact(problem: Problem, plans: list[Plan], mesh: bool, observe: Observer) -> list[Outcome]:
    """Each plan on every placement strategy (a mesh), optimised placement seeded by the plan's seed."""
    outcomes = []
    for plan in plans:
        for placement in (PLACEMENTS if mesh else ("row_major",)):
            candidate = plan.model_copy(update={"placement": placement})
            cost = try_evaluate(problem, candidate)
            observe("placement", candidate, cost)
            if not isinstance(cost, str) and cost["fits"]:
                outcomes.append(Outcome(candidate, cost))
    return sorted(outcomes, key=lambda o: (o.cost["step_time_s"], plan_key(o.plan)))


def _refine(problem: Problem, outcomes: list[Outcome], seed: int, generations: int, keep: int,
            observe: Observer) -> list[Outcome]:
    """Seeded evolutionary refinement: mutate the population, keep the fittest distinct plans."""
    rng = random.Random(seed)
    population = distinct(outcomes)[:keep]
    for _ in range(generations):
        children = []
        for parent in population:
            child = _mutate(problem, parent.plan, rng)
            if child is None:
                continue
            cost = try_evaluate(problem, child)
            observe("refine", child, cost)
            if not isinstance(cost, str) and cost["fits"]:
                children.append(Outcome(child, cost))
        population = distinct(population + children)[:keep]
    return population


def _mutate(problem: Problem, plan: Plan, rng: random.Random) -> Plan | None:
    """One random change: a stage's recompute policy, the placement seed, or the micro-batch size."""
    move = rng.choice(("policy", "seed", "micro_batch"))
    if move == "policy":
        policies = list(plan.recompute) if not isinstance(plan.recompute, str) else [plan.recompute] * plan.pp
        stage = rng.randrange(plan.pp)
        policies[stage] = rng.choice([p for p in RECOMPUTE_POLICIES if p != policies[stage]])
        update = {"recompute": policies[0] if len(set(policies)) == 1 else tuple(policies)}
    elif move == "seed":
        update = {"seed": plan.seed + 1 + rng.randrange(100), "placement": "optimized"}
    else:
        update = {"micro_batch": rng.choice([m for m in problem.micro_batch_sizes if m != plan.micro_batch] or [plan.micro_batch])}
    child = plan.model_copy(update=update)
    return None if plan_error(problem, child) else child


def exhaustive(problem: Problem) -> Outcome:
    """The best of every plan: each shape, knob, per-stage recompute policy and placement strategy
    (no borrowing); for checking the search on small spaces."""
    best = None
    for plan in every_plan(problem):
        cost = try_evaluate(problem, plan)
        if not isinstance(cost, str) and cost["fits"] and (best is None or cost["step_time_s"] < best.cost["step_time_s"]):
            best = Outcome(plan, cost)
    if best is None:
        raise WatosError(f"no plan fits {problem.target.name}")
    return best
