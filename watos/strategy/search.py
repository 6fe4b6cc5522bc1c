"""Strategy search: the fastest plan for a model on a target (the WATOS method, §Strategy 1-5).

1. *Central scheduler*: every (TP, PP, DP) that uses all devices and divides the heads and the batch;
   shapes whose model states (weights, gradients, Adam states under the best ZeRO stage) overflow a
   device are pruned before anything is timed.
2. Each surviving shape is costed for every micro-batch size, sequence parallelism, ZeRO stage and
   interleaving, once, on compact placement; the costing reports what every recompute policy would cost
   each stage, and :func:`watos.strategy.gcmr.gcmr` chooses per-stage recomputation and Sender/Helper borrowing.
3. The best candidates are costed exactly with their per-stage choices, on every placement strategy.
4. An evolutionary refinement (seeded) mutates the best plans (a stage's policy, micro-batch, placement
   seed) and keeps improvements.

Where the whole space is small (:func:`space_size`), :func:`exhaustive` enumerates it instead; the test
suite checks the search against it.
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from watos.pipelines import attention_for, cost_plan, lower
from watos.errors import WatosError
from watos.strategy.gcmr import gcmr
from watos.hardware.target import Mesh2D, Target
from watos.ir import Graph
from watos.passes.recompute import POLICIES
from watos.passes.schedule import ADAM_STATE_BYTES, checkpoint_transfer_s, in_flight
from watos.passes.shard import expert_params
from watos.network.placement import STRATEGIES
from watos.plan import Borrow, Plan, Routing, check_plan, model_limits

MICRO_BATCHES = (1, 2, 4)
INTERLEAVES = (1, 2)


@dataclass(frozen=True)
class Problem:
    """What is being planned: a traced model (per micro-batch size), the target and the batch."""

    traced: Callable[[int], Graph]  # micro-batch size → traced graph (cached by the caller)
    target: Target
    devices: int
    global_batch: int
    dtype: str = "bf16"
    micro_batches: tuple[int, ...] = MICRO_BATCHES  # sizes tried
    interleaves: tuple[int, ...] = INTERLEAVES  # model chunks per stage tried
    policies: tuple[str, ...] = POLICIES  # recompute policies GCMR may choose
    routing: Routing = Routing()  # the MoE routing model every plan is costed under

    def lowered(self, micro_batch: int) -> Graph:
        """The traced graph at ``micro_batch`` lowered for the target's fusion (cached)."""
        return _lowered(self.traced, micro_batch, self.target.fusion)

    def on(self, target: Target, devices: int | None = None) -> Problem:
        """The same model and batch on another target."""
        return dataclasses.replace(self, target=target, devices=devices or self.devices)

    @functools.cached_property
    def limits(self) -> dict[str, int]:
        """What a plan must divide (:func:`~watos.plan.model_limits`)."""
        return model_limits(self.traced(1))

    @functools.cached_property
    def info(self) -> dict[str, int]:
        """:attr:`limits`, the parameter count and the expert parameters among them."""
        graph = self.traced(1)
        return {**self.limits, "parameters": graph.model.parameters,
                "expert_parameters": sum(op.outputs[0].numel * graph.weight(op) for op in expert_params(graph).values())}


@functools.lru_cache(maxsize=32)
def _lowered(traced: Callable[[int], Graph], micro_batch: int, fusion: str) -> Graph:
    return lower(traced(micro_batch), fusion)


def make_problem(source: Any, target: Target, *, seq: int, global_batch: int | None = None,
                 dtype: str = "bf16", devices: int | None = None, routing: Routing | None = None) -> Problem:
    """A problem for a model source (anything :func:`watos.load_model` takes) on all of a target's devices
    (a mesh's dies; ``devices`` for a switched target). Default batch: 16 sequences per device."""
    import watos

    if devices is None:
        if not isinstance(target.topology, Mesh2D):
            raise WatosError(f"target {target.name} is a cluster of GPU nodes: give the number of GPUs (--devices N)")
        devices = target.dies
    source = watos.load_model(source) if not isinstance(source, watos.ModelSource) else source
    attention = attention_for(target.fusion)

    @functools.cache
    def traced(micro_batch: int) -> Graph:
        return watos.trace(source, seq_len=seq, micro_batch=micro_batch, dtype=dtype, attention=attention)

    return Problem(traced, target, devices, global_batch or 16 * devices, dtype, routing=routing or Routing())


def evaluate(problem: Problem, plan: Plan) -> dict:
    """The cost of one plan (``analyses["cost"]`` of the costing pipeline). The search runs the pipeline
    thousands of times on one lowered graph, so it checks the IR only for the first plan of each graph."""
    graph = problem.lowered(plan.micro_batch)
    verify = _CHECKED not in graph.properties
    graph.properties.add(_CHECKED)
    return cost_plan(graph, problem.target, plan, dtype=problem.dtype, verify=verify).analyses["cost"]


def try_evaluate(problem: Problem, plan: Plan) -> dict | str:
    """:func:`evaluate`, or the one-line reason a plan cannot be costed (groups that cannot be placed
    whole on a wafer)."""
    try:
        return evaluate(problem, plan)
    except WatosError as exc:
        return str(exc)


_CHECKED = "costing_checked"  # a lowered graph the costing pipeline has run on with every check


def shapes(problem: Problem) -> Iterator[tuple[int, int, int]]:
    """(tp, pp, dp) using every device, tp dividing the heads, pp at most the blocks, dp the batch."""
    info = problem.info
    for tp in _divisors(problem.devices):
        if info["heads"] % tp or (info["kv_heads"] % tp and tp % info["kv_heads"]):
            continue
        for pp in _divisors(problem.devices // tp):
            dp = problem.devices // (tp * pp)
            if pp <= info["layers"] and problem.global_batch % dp == 0:
                yield tp, pp, dp


def model_state_bytes(problem: Problem, tp: int, pp: int, dp: int, zero: int, ep: int = 1) -> float:
    """Weights, gradients and Adam states per device of an average stage (a lower bound on memory;
    expert weights divided over ``ep``, every ZeRO-sharded share over dp)."""
    total = problem.info["parameters"] / (tp * pp)
    local = total - problem.info["expert_parameters"] * (1 - 1 / ep) / (tp * pp)
    return sum(nbytes * (total / dp if zero >= level else local)
               for nbytes, level in ((2, 3), (2, 2), (ADAM_STATE_BYTES, 1)))


def expert_degrees(problem: Problem, dp: int) -> list[int]:
    """Expert-parallel degrees a shape allows: those dividing both dp and the experts per layer."""
    experts = problem.limits["experts"]
    return [e for e in _divisors(dp) if experts and experts % e == 0] or [1]


def capacity(target: Target) -> float:
    return target.device.dram_capacity_gb * 1e9 + target.device.sram_capacity_mb * 1e6


def candidate_plans(problem: Problem, tp: int, pp: int, dp: int, placement: str) -> Iterator[Plan]:
    """Every knob combination of one shape that divides: expert parallelism (MoE), ZeRO (1 when data
    parallel, 3 when that is what fits), micro-batch, sequence parallelism, interleaving; recompute
    ``none`` (GCMR decides)."""
    for ep in expert_degrees(problem, dp):
        zero1 = model_state_bytes(problem, tp, pp, dp, 1, ep)
        zeros = [0] if dp == 1 else [1] + ([3] if zero1 > capacity(problem.target) else [])
        for zero, mb, sp, v in itertools.product(zeros, problem.micro_batches, (False, True) if tp > 1 else (False,),
                                                 problem.interleaves):
            plan = Plan(tp=tp, pp=pp, dp=dp, ep=ep, routing=problem.routing, zero=zero, micro_batch=mb,
                        global_batch=problem.global_batch, sequence_parallel=sp, interleave=v, placement=placement)
            if plan_error(problem, plan) is None:
                yield plan


def plan_error(problem: Problem, plan: Plan) -> str | None:
    """Why the plan does not divide the model or the devices (:func:`~watos.plan.check_plan`), or None."""
    try:
        check_plan(plan, **problem.limits, devices=problem.devices)
    except WatosError as exc:
        return str(exc)
    return None


def with_gcmr(problem: Problem, plan: Plan, cost: dict) -> tuple[Plan, float] | None:
    """The plan with GCMR's per-stage recompute and borrowing, and GCMR's estimate of its pipeline time
    (None: nothing fits)."""
    stages = [{**st, "options": {p: o for p, o in st["options"].items() if p in problem.policies}}
              for st in cost["stages"]]
    transfer = _transfer(problem, plan) if isinstance(problem.target.topology, Mesh2D) and plan.pp > 1 else None
    choice = gcmr(stages, capacity(problem.target), plan.micro_batches, plan.interleave, transfer)
    if choice is None:
        return None
    policies = choice.policies[0] if len(set(choice.policies)) == 1 else choice.policies
    borrow = tuple(Borrow(sender=s, helper=h, gb=b / 1e9) for s, h, b in choice.borrow)
    return plan.model_copy(update={"recompute": policies, "borrow": borrow}), choice.pipeline_time_s


def _transfer(problem: Problem, plan: Plan) -> Callable[[int, int, float], float]:
    """Seconds per micro-batch for a Sender's borrowed checkpoints, as the schedule pass prices them
    (on compact placement: the final placement is optimised for the pairs afterwards)."""
    from watos.passes.shard import parallel_groups
    from watos.network.placement import place

    mesh = problem.target.topology
    group = plan.tp * plan.cp
    dies = place("compact", mesh.rows, mesh.cols, group, plan.dp, plan.pp, wafers=problem.target.wafers)
    pipelines = parallel_groups(plan.tp, plan.cp, plan.dp, plan.pp)["pp"]

    @functools.cache
    def seconds(sender: int, helper: int, nbytes: float) -> float:
        flight = in_flight(plan.pipeline_kind, plan.pp, plan.interleave, plan.micro_batches, sender)
        return checkpoint_transfer_s(problem.target, pipelines, dies, sender, helper, nbytes, flight)

    return seconds


@dataclass
class Outcome:
    plan: Plan
    cost: dict


def search(problem: Problem, *, seed: int = 0, keep: int = 6, generations: int = 3,
           considered: Sequence[Plan] = ()) -> dict:
    """The best plan, runners-up, and why the others lost (see module docstring); ``considered`` plans
    (a user's, or a paper's) are evaluated as the screened ones are, reported whatever their rank
    (``considered``), and compete for best."""
    mesh = isinstance(problem.target.topology, Mesh2D)
    rejected: list[dict] = []
    screened: list[tuple[float, Plan]] = []
    for tp, pp, dp in shapes(problem):
        states = min(model_state_bytes(problem, tp, pp, dp, z, max(expert_degrees(problem, dp)))
                     for z in ((0,) if dp == 1 else (1, 3)))
        if states > capacity(problem.target):
            rejected.append({"shape": {"tp": tp, "pp": pp, "dp": dp},
                             "limited_by": f"memory: model states need {states / 1e9:.3g} GB/device, "
                                           f"has {capacity(problem.target) / 1e9:.3g}"})
            continue
        for plan in candidate_plans(problem, tp, pp, dp, "compact" if mesh else "row_major"):
            outcome = _screen(problem, plan)
            if isinstance(outcome, str):
                rejected.append({"shape": {"tp": tp, "pp": pp, "dp": dp}, "plan": _plan_json(plan), "limited_by": outcome})
            else:
                screened.append((outcome.cost["step_time_s"], outcome.plan))
    shown = []
    for plan in considered:
        outcome = _screen(problem, plan)
        if isinstance(outcome, str):
            shown.append({"plan": _plan_json(plan), "limited_by": outcome})
        else:
            shown.append(summarise(outcome.plan, outcome.cost))
            screened.append((outcome.cost["step_time_s"], outcome.plan))
    if not screened:
        raise WatosError(f"no plan fits {problem.target.name}: " + (rejected[0]["limited_by"] if rejected else "no shape divides"))
    screened.sort(key=lambda e: (e[0], _plan_key(e[1])))
    exact = _exact(problem, [p for _, p in screened[:keep]], mesh)
    outcomes = _distinct(exact + _refine(problem, exact, seed, generations, keep), _config_key)
    best, runners = outcomes[0], outcomes[1:keep]
    return {"best": summarise(best.plan, best.cost),
            "runners_up": [summarise(o.plan, o.cost) for o in runners],
            "rejected": rejected, "evaluated": len(screened), "considered": shown}


def _screen(problem: Problem, plan: Plan) -> Outcome | str:
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


def _exact(problem: Problem, plans: list[Plan], mesh: bool) -> list[Outcome]:
    """Each plan on every placement strategy (a mesh), optimised placement seeded by the plan's seed."""
    outcomes = []
    for plan in plans:
        for strategy in (STRATEGIES if mesh else ("row_major",)):
            candidate = plan.model_copy(update={"placement": strategy})
            cost = try_evaluate(problem, candidate)
            if not isinstance(cost, str) and cost["fits"]:
                outcomes.append(Outcome(candidate, cost))
    return sorted(outcomes, key=lambda o: (o.cost["step_time_s"], _plan_key(o.plan)))


def _refine(problem: Problem, outcomes: list[Outcome], seed: int, generations: int, keep: int) -> list[Outcome]:
    """Seeded evolutionary refinement: mutate the population, keep the fittest distinct plans."""
    rng = random.Random(seed)
    population = _distinct(outcomes)[:keep]
    for _ in range(generations):
        children = []
        for parent in population:
            child = _mutate(problem, parent.plan, rng)
            if child is None:
                continue
            cost = try_evaluate(problem, child)
            if not isinstance(cost, str) and cost["fits"]:
                children.append(Outcome(child, cost))
        population = _distinct(population + children)[:keep]
    return population


def _mutate(problem: Problem, plan: Plan, rng: random.Random) -> Plan | None:
    """One random change: a stage's recompute policy, the placement seed, or the micro-batch size."""
    move = rng.choice(("policy", "seed", "micro_batch"))
    if move == "policy":
        policies = list(plan.recompute) if not isinstance(plan.recompute, str) else [plan.recompute] * plan.pp
        stage = rng.randrange(plan.pp)
        policies[stage] = rng.choice([p for p in POLICIES if p != policies[stage]])
        update = {"recompute": policies[0] if len(set(policies)) == 1 else tuple(policies)}
    elif move == "seed":
        update = {"seed": plan.seed + 1 + rng.randrange(100), "placement": "optimized"}
    else:
        update = {"micro_batch": rng.choice([m for m in problem.micro_batches if m != plan.micro_batch] or [plan.micro_batch])}
    child = plan.model_copy(update=update)
    return None if plan_error(problem, child) else child


def _distinct(outcomes: list[Outcome], key: Callable[[Plan], Any] | None = None) -> list[Outcome]:
    """Fastest first, one outcome per ``key`` (default: per plan)."""
    key = key or _plan_key
    seen, result = set(), []
    for o in sorted(outcomes, key=lambda o: (o.cost["step_time_s"], _plan_key(o.plan))):
        if key(o.plan) not in seen:
            seen.add(key(o.plan))
            result.append(o)
    return result


def _config_key(plan: Plan) -> tuple:
    """A plan's parallel configuration, whatever its placement."""
    return (plan.tp, plan.pp, plan.dp, plan.ep, plan.zero, plan.micro_batch, plan.sequence_parallel, plan.interleave,
            str(plan.recompute))


def space_size(problem: Problem) -> int:
    """Plans :func:`exhaustive` would enumerate."""
    return sum(1 for _ in _every_plan(problem))


def exhaustive(problem: Problem) -> Outcome:
    """The best of every plan: each shape, knob, per-stage recompute policy and placement strategy
    (no borrowing); for checking the search on small spaces."""
    best = None
    for plan in _every_plan(problem):
        cost = try_evaluate(problem, plan)
        if not isinstance(cost, str) and cost["fits"] and (best is None or cost["step_time_s"] < best.cost["step_time_s"]):
            best = Outcome(plan, cost)
    if best is None:
        raise WatosError(f"no plan fits {problem.target.name}")
    return best


def _every_plan(problem: Problem) -> Iterator[Plan]:
    mesh = isinstance(problem.target.topology, Mesh2D)
    for tp, pp, dp in shapes(problem):
        for base in candidate_plans(problem, tp, pp, dp, "row_major"):
            for policies in itertools.product(POLICIES, repeat=pp):
                for strategy in (STRATEGIES if mesh else ("row_major",)):
                    yield base.model_copy(update={"recompute": policies[0] if len(set(policies)) == 1 else policies,
                                                  "placement": strategy})


def summarise(plan: Plan, cost: dict) -> dict:
    """The figures a report shows for one plan."""
    stages = cost["stages"]
    busy = cost["breakdown_s"]["compute"] + cost["breakdown_s"]["recompute"]
    return {"plan": _plan_json(plan), "tokens_per_s": cost["tokens_per_s"], "step_time_s": cost["step_time_s"],
            "mfu": cost["mfu"], "peak_dram_gb_per_die": cost["peak_memory_bytes_per_device"] / 1e9,
            "dram_utilisation": sum(st["memory"]["total_bytes"] for st in stages)
            / (len(stages) * cost["memory_capacity_bytes_per_device"]),
            "compute_busy": busy / cost["step_time_s"], "limited_by": limited_by(cost)}


def limited_by(cost: dict) -> str:
    """What holds a plan back most: the largest share of its step that is not compute."""
    parts = {k: v for k, v in cost["breakdown_s"].items() if k not in ("compute",)}
    name, seconds = max(sorted(parts.items()), key=lambda kv: kv[1])
    labels = {"bubble": "pipeline bubble", "recompute": "recomputation", "tp_comm": "TP communication (a hot link)",
              "ep_comm": "expert all-to-all", "zero_comm": "ZeRO gathers and reductions per micro-batch",
              "pp_comm": "pipeline sends", "dp_exposed": "data-parallel gradient reduction", "optimizer": "optimizer"}
    return f"{labels.get(name, name)}: {seconds / cost['step_time_s']:.0%} of the step"


def _plan_json(plan: Plan) -> dict:
    return plan.model_dump(mode="json")


def _plan_key(plan: Plan) -> str:
    return plan.model_dump_json()


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]
