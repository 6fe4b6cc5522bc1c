"""Fault studies: how much throughput a wafer keeps when dies and links fail, under two policies costed on
the same seeded fault maps (the WATOS paper §VI-D).

* ``non_robust``: the fault-free best plan and its placement; traffic is rerouted around dead links (the
  up*/down* routes of :mod:`watos.network.routing`) and a dead die's ranks move to the nearest working die,
  which then carries both ranks' work and memory.
* ``robust``: the plan searched again on the dies that survive: every (tp, pp, dp) shape on as many working
  dies as are left (and, while none fits, one die fewer, to at most :data:`FEWER_DIES` fewer; the two
  largest counts that fit are tried), with the fault-free plan's micro-batch and sequence parallelism,
  GCMR's recompute and borrowing, placed on working dies only and costed with its memory capacity per
  die; the fastest wins (the non-robust plan is one of its choices, so it never does worse).

A working die cut off from the rest of its wafer is lost like a dead one; a map whose largest connected part
holds fewer than half of the working dies *disconnects* the wafer and is counted, not averaged in
(:func:`watos.network.faults.surviving`). Throughput is normalised by the fault-free best; each rate reports
the mean over its maps with a 95 % bootstrap interval (percentiles of 1000 seeded resamples of the mean).
"""
from __future__ import annotations

import numpy as np

from watos.errors import WatosError
from watos.hardware.target import Mesh2D
from watos.network.faults import random_faults, surviving
from watos.plan import Plan
from watos.strategy.problem import Problem, plan_error, try_evaluate
from watos.strategy.search import screen, search
from watos.strategy.space import candidate_plans, shapes

POLICIES = ("non_robust", "robust")
FEWER_DIES = 8
RESAMPLES = 1000


def fault_study(problem: Problem, rates: list[tuple[float, float]], samples: int, *, seed: int = 0) -> dict:
    """Normalised throughput per (die rate, link rate) and policy over ``samples`` seeded fault maps
    (module docstring)."""
    if not isinstance(problem.target.topology, Mesh2D):
        raise WatosError(f"faults: target {problem.target.name} is not a wafer (a mesh of dies)")
    if samples < 1:
        raise WatosError("faults: --samples must be at least 1")
    found = search(problem, seed=seed)
    best = Plan(**found["best"]["plan"])
    reference = found["best"]["tokens_per_s"]
    rows = []
    for dies, links in rates:
        per_map, split, lost = [], 0, []
        for k in range(samples):
            drawn = random_faults(problem.target, dies, links, seed=seed * 1_000_003 + k)
            faults, cut = surviving(problem.target.model_copy(update={"faults": drawn}))
            if cut:
                split += 1
                continue
            target = problem.target.model_copy(update={"faults": None if faults.empty else faults})
            non_robust = _throughput(problem, target, best.model_copy(update={"fault_policy": "non_robust"}))
            robust = max(non_robust, _robust(problem, target, best, len(faults.dead_dies)))
            per_map.append((non_robust / reference, robust / reference))
            lost.append(len(faults.dead_dies))
        rows.append({"dies": dies, "links": links, "samples": samples, "disconnected": split / samples,
                     "lost_dies_mean": float(np.mean(lost)) if lost else None,
                     **{policy: _interval([m[i] for m in per_map], seed) for i, policy in enumerate(POLICIES)},
                     "maps": [{"non_robust": a, "robust": b} for a, b in per_map]})
    return {"target": problem.target.name, "reference_tokens_per_s": reference, "plan": found["best"]["plan"],
            "rates": rows}


def _robust(problem: Problem, target, template: Plan, lost: int) -> float:
    """The robust policy's tokens per second (module docstring)."""
    best, counts = 0.0, 0
    for devices in range(problem.devices - lost, max(0, problem.devices - lost - FEWER_DIES), -1):
        on = problem.on(target, devices=devices)
        fitted = [screen(on, plan) for tp, pp, dp in shapes(on)
                  for plan in candidate_plans(on, tp, pp, dp, "compact")
                  if plan.micro_batch == template.micro_batch and plan.interleave == 1
                  and plan.sequence_parallel == (template.sequence_parallel and tp > 1)]
        speeds = [o.cost["tokens_per_s"] for o in fitted if not isinstance(o, str)]
        if speeds:
            best, counts = max(best, *speeds), counts + 1
            if counts == 2:
                break
    return best


def _throughput(problem: Problem, target, plan: Plan) -> float:
    """Tokens per second of the plan on the faulty target (0 when it does not divide, place or fit)."""
    on = problem.on(target, devices=plan.devices)
    if plan_error(on, plan):
        return 0.0
    cost = try_evaluate(on, plan)
    return cost["tokens_per_s"] if not isinstance(cost, str) and cost["fits"] else 0.0


def _interval(values: list[float], seed: int) -> dict:
    """Mean and 95 % bootstrap interval (None when no map was kept)."""
    if not values:
        return {"mean": None, "low": None, "high": None}
    data = np.asarray(values)
    means = np.random.default_rng(seed).choice(data, size=(RESAMPLES, len(data))).mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {"mean": float(data.mean()), "low": float(low), "high": float(high)}
