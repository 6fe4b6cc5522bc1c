"""Architecture co-exploration: which wafer trains these models best (the WATOS paper, §Hardware
template and its co-exploration).

A *space* (YAML) gives values for some of a template's variables, either a list or ``{min, max, step}``.
Every point of the space becomes a target (:func:`watos.hardware.template.instantiate`); every model gets its own
strategy on it (:func:`quick_search`: each TP/PP/DP shape that fits, GCMR recompute per stage, compact
placement; the exact cost of the best); a point's figures are the geometric means over the models of
tokens/s and tokens per joule. Energy per step = FLOPs executed · pJ/FLOP + DRAM bytes · 8 · pJ/bit +
D2D bytes · 8 · pJ/bit + static power · dies · step time. Points are independent: they run on a process
pool or Ray (:mod:`watos.exploration.executors`) and land in a resumable store (:mod:`watos.exploration.store`), so a sweep that is
killed picks up where it stopped. Pareto fronts: throughput against total DRAM, power and compute area.
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import json
import math
import random
from typing import TypedDict

from watos.errors import WatosError
from watos.files import parse_yaml_mapping, read_file
from watos.hardware.template import Template, derive, instantiate, load_template
from watos.plan import Plan, routing_note
from watos.strategy.problem import (
    Problem,
    evaluate,
    make_problem,
    plan_error,
    try_evaluate,
)
from watos.strategy.result import plan_summary
from watos.strategy.search import with_gcmr
from watos.strategy.space import expert_degrees, shapes

OBJECTIVES = ("throughput", "tokens-per-joule")
DEFAULT_SPACE = {"dram_stacks_per_die": [1, 2, 3, 4, 5, 6], "compute_fraction": [0.7, 0.8, 0.9]}
"""What ``watos explore`` sweeps without a space file: DRAM stacks per die against the compute share of the die."""
FRONTS = (("throughput", "dram_capacity_gb"), ("throughput", "power_w"), ("throughput", "compute_area_mm2"))


def load_space(path: str, template: Template) -> dict[str, list]:
    """Values of each swept variable; errors name the file and variable."""
    data = parse_yaml_mapping(read_file(path, "space file"), path, "a space")
    space = {}
    for name, values in data.items():
        if name not in template.variables:
            raise WatosError(f"{path}: unknown variable {name!r} of template {template.name} "
                             f"(variables: {', '.join(template.variables)})")
        if isinstance(values, dict):
            if set(values) != {"min", "max", "step"} or not all(isinstance(v, (int, float)) for v in values.values()) \
                    or values["step"] <= 0 or values["max"] < values["min"]:
                raise WatosError(f"{path}: {name}: a range is {{min, max, step}} with step > 0 and max >= min")
            count = int(math.floor((values["max"] - values["min"]) / values["step"] + 1e-9)) + 1
            values = [round(values["min"] + i * values["step"], 10) for i in range(count)]
        if not isinstance(values, list) or not values or not all(isinstance(v, (int, float)) for v in values):
            raise WatosError(f"{path}: {name}: give a non-empty list of numbers or {{min, max, step}}")
        space[name] = values
    if not space:
        raise WatosError(f"{path}: the space is empty")
    return space


def grid(space: dict[str, list]) -> list[dict]:
    """Every combination of the space's values, in a fixed order."""
    names = sorted(space)
    return [dict(zip(names, values)) for values in itertools.product(*(space[n] for n in names))]


def evolve_generation(space: dict[str, list], scored: list[tuple[dict, float]], size: int, seed: int) -> list[dict]:
    """The next generation of an evolutionary sweep: mutations and crossovers of the best half."""
    rng = random.Random(seed)
    names = sorted(space)
    parents = [p for p, _ in sorted(scored, key=lambda e: -e[1])[:max(2, len(scored) // 2)]] or [
        {n: rng.choice(space[n]) for n in names}]
    children = []
    for _ in range(size):
        a, b = rng.choice(parents), rng.choice(parents)
        child = {n: (a if rng.random() < 0.5 else b)[n] for n in names}
        name = rng.choice(names)
        index = space[name].index(child[name]) + rng.choice((-1, 1))
        child[name] = space[name][min(max(index, 0), len(space[name]) - 1)]
        children.append(child)
    return children


@functools.lru_cache(maxsize=8)
def _problem(model: str, seq: int, dtype: str, stack: str) -> Problem:
    """A model's problem under a stack (cached per process, so every point reuses its traces and lowerings;
    the target is replaced per point)."""
    from watos.hardware.target import load_target

    return make_problem(model, load_target("watos-config3").model_copy(update={"stack": stack}), seq=seq,
                        dtype=dtype)


def quick_search(problem: Problem) -> tuple[Plan, dict] | None:
    """A fast strategy for one hardware point: every shape whose model states fit, micro-batch 1,
    sequence parallelism with TP, an MoE model's experts over the largest EP group the shape allows,
    ZeRO-1 (ZeRO-3 where that is what fits), compact placement, GCMR's per-stage recompute and borrowing;
    the best by GCMR's estimate, costed exactly."""
    best = None
    for tp, pp, dp in shapes(problem):
        ep = max(expert_degrees(problem, dp))
        zero = 0 if dp == 1 else (1 if problem.model_state_bytes(tp, pp, dp, 1, ep) <= problem.capacity else 3)
        if problem.model_state_bytes(tp, pp, dp, zero, ep) > problem.capacity:
            continue
        plan = problem.plan(tp=tp, pp=pp, dp=dp, ep=ep, zero=zero, micro_batch=1, sequence_parallel=tp > 1,
                            placement="compact")
        if plan_error(problem, plan):
            continue
        cost = try_evaluate(problem, plan)
        chosen = None if isinstance(cost, str) else with_gcmr(problem, plan, cost)
        if chosen is None:
            continue
        plan, pipelined = chosen
        estimate = pipelined + max(st["dp_exposed_s"] + st["optimizer_s"] for st in cost["stages"])
        if best is None or estimate < best[0]:
            best = (estimate, plan)
    if best is None:
        return None
    return best[1], evaluate(problem, best[1])


def evaluate_point(task: dict) -> dict:
    """One hardware point: its target, each model's best strategy, and the point's figures. ``task``:
    template (a name or file), point, models, seq, dtype, batch_per_die and optionally stack. Module-level:
    workers call it."""
    template = load_template(task["template"])
    point = task["point"]
    try:
        derived = derive(template, point)
        target = instantiate(template, point)
        if task.get("stack"):
            target = target.model_copy(update={"stack": task["stack"]})
    except WatosError as exc:
        return {"point": point, "infeasible": str(exc)}
    results, speeds, efficiencies = {}, [], []
    energy = template.model_copy(update=point).energy
    for model in task["models"]:
        problem = dataclasses.replace(_problem(model, task["seq"], task["dtype"], target.stack_name), target=target,
                                      devices=derived["dies"], global_batch=task["batch_per_die"] * derived["dies"],
                                      micro_batch_sizes=(1,), interleaves=(1,))
        found = quick_search(problem)
        if found is None:
            return {"point": point, "derived": derived, "infeasible": f"{model}: no strategy fits "
                                                                      f"{derived['dram_gb']:g} GB per die"}
        plan, cost = found
        joules = (cost["executed_flops_per_step"] * energy.pj_per_flop + 8 * cost["dram_bytes_per_step"]
                  * energy.pj_per_bit_dram + 8 * cost["network_bytes_per_step"] * energy.pj_per_bit_d2d) * 1e-12 \
            + energy.static_w_per_die * derived["dies"] * cost["step_time_s"]
        tokens = cost["tokens_per_s"] * cost["step_time_s"]
        results[model] = {**plan_summary(plan, cost), "joules_per_step": joules, "tokens_per_joule": tokens / joules,
                          "power_w": joules / cost["step_time_s"]}
        if note := routing_note(problem.traced(1), problem.routing):
            results[model]["moe_routing"] = note
        speeds.append(cost["tokens_per_s"])
        efficiencies.append(tokens / joules)
    return {"point": point, "derived": derived, "results": results,
            "throughput": _geomean(speeds), "tokens_per_joule": _geomean(efficiencies),
            "power_w": max(r["power_w"] for r in results.values()),
            "dram_capacity_gb": derived["dram_gb"] * derived["dies"], "compute_area_mm2": derived["compute_area_mm2"]}


def _geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


def score(record: dict, objective: str) -> float:
    """A record's objective value (0 for an infeasible point)."""
    if "infeasible" in record:
        return 0.0
    return record["throughput"] if objective == "throughput" else record["tokens_per_joule"]


class ExploreResult(TypedDict):
    """What ``watos explore`` reports: the template, models, objective and space swept; every point (its
    variables, derived hardware, each model's plan and figures, or why it is infeasible), the best point,
    how many points were evaluated and were feasible, and the Pareto fronts by name."""

    template: str
    models: list[str]
    objective: str
    space: dict[str, list]
    points: list[dict]
    best: dict | None
    evaluated: int
    feasible: int
    pareto: dict[str, list[dict]]


def explore(template_spec: str, models: list[str], space: dict[str, list], *, objective: str = "throughput",
            seq: int = 4096, dtype: str = "bf16", batch_per_die: int = 16, executor: str = "local",
            workers: int = 1, ray_address: str | None = None, store_path: str | None = None,
            budget: int = 2000, seed: int = 0, stack: str | None = None, progress=None) -> ExploreResult:
    """Sweep a template's space (grid when it has at most ``budget`` points, else an evolutionary search
    of ``budget`` evaluations) and return every point's figures, the best point and the Pareto fronts; every
    point runs under ``stack`` (default: the template's)."""
    from watos.exploration.executors import run_all
    from watos.exploration.pareto import pareto_front
    from watos.exploration.store import ResultStore, point_key

    if objective not in OBJECTIVES:
        raise WatosError(f"objective must be one of {', '.join(OBJECTIVES)}, got {objective!r}")
    template = load_template(template_spec)
    base = {"template": template_spec, "models": list(models), "seq": seq, "dtype": dtype,
            "batch_per_die": batch_per_die, **({"stack": stack} if stack else {})}
    store = ResultStore(store_path, meta={**base, "template_fields": template.model_dump(mode="json")}) \
        if store_path else None
    records: dict[str, dict] = dict(store.done()) if store else {}

    def run(points: list[dict]) -> None:
        todo = [p for p in points if point_key(p) not in records]
        if progress:
            progress(len(points) - len(todo), len(points))

        def finished(task: dict, record: dict) -> None:
            key = point_key(task["point"])
            records[key] = record
            if store:
                store.append(key, record)
            if progress:
                progress(None, None)

        run_all(evaluate_point, [{**base, "point": p} for p in todo], executor=executor, workers=workers,
                ray_address=ray_address, on_result=finished)

    everything = grid(space)
    if len(everything) <= budget:
        swept = everything
        run(swept)
    else:
        swept, size = [], max(4, budget // 10)
        rng = random.Random(seed)
        generation = [{n: rng.choice(space[n]) for n in sorted(space)} for _ in range(size)]
        for index in range(budget // size):
            run(generation)
            swept += generation
            scored = [(p, score(records[point_key(p)], objective)) for p in swept]
            generation = evolve_generation(space, scored, size, seed + index + 1)
    points = _unique([records[point_key(p)] for p in swept])
    feasible = [p for p in points if "infeasible" not in p]
    best = min(feasible, key=lambda r: (-score(r, objective), json.dumps(r["point"], sort_keys=True)), default=None)
    return {"template": template.name, "models": list(models), "objective": objective, "space": space,
            "points": points, "best": best, "evaluated": len(points), "feasible": len(feasible),
            "pareto": {f"{a}_vs_{b}": pareto_front(feasible, a, b) for a, b in FRONTS}}


def _unique(records: list[dict]) -> list[dict]:
    seen, result = set(), []
    for r in sorted(records, key=lambda r: sorted(r["point"].items())):
        key = tuple(sorted(r["point"].items()))
        if key not in seen:
            seen.add(key)
            result.append(r)
    return result

