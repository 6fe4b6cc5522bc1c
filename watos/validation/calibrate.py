"""Calibration: the efficiency parameters of every target and stack that has public runs, fitted once on them.

What is fitted (:data:`KNOBS`) is a short list per owner: per chip (a target whose efficiency others borrow:
``dgx-a100-80g`` for the A100, ``dgx-h100-80g`` for the H100, ``dgx-b200`` for Blackwell, ``cerebras-cs2`` for
the WSE, ``tpu-v5p`` and ``tpu-v5e`` for the TPUs), its GEMM ceiling and saturation, memory and network
efficiencies; per stack, its host time per kernel and the overlap factors it states. An owner is fitted on the cases it affects — a chip on the runs of every
target that borrows it, a stack on the runs of every framework it stands for — never per case. The
objective of a group is the mean absolute error of its cases plus half the excess of its worst case over
10 % (a case no plan fits counts as −100 %), plus the price of moving its knobs from their priors
(:data:`REGULARIZATION`), and for the A100 the Korthikanti et al. 2022 Table 4 layer times as a constraint. The search starts every knob at its prior (:data:`PRIORS`, whatever the shipped file says, so
the public files alone reproduce every value) and is a coordinate pattern search (each knob tried up and
down by a shrinking factor — ×8, ×2, ×1.3, ×1.1, ×1.03; the first lets a knob cross into another regime, a
stream-bound from a compute-bound one — improvements kept), owners in turn, twice over:
stacks before chips: deterministic, no seed.

:func:`leave_one_source_out` is the honest estimate of the error on runs the calibration never saw: for each
source, the owners its cases depend on are refitted from their priors (:data:`PRIORS`) on the other sources'
cases only, and the source is predicted with them; an owner only that source has runs for stays at its
prior. The other owners keep their full-calibration values (they do not touch the source's cases; that they
were fitted beside it is the one second-order leak left).
"""
from __future__ import annotations

import functools
import json
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from watos.errors import WatosError
from watos.hardware.stack import Stack, load_stack, stack_data
from watos.hardware.target import Target, efficiency_source, load_target, target_data, target_from_data
from watos.validation.cases import Case, CaseModel, hf_config
from watos.validation.predict import lowered_case, predict, stack_of
from watos.validation.report import error_summary


@dataclass(frozen=True)
class Knob:
    """One calibrated value: its owner (a target or a stack), where in the owner's YAML it sits, its bounds and
    its prior (where every fit starts, whatever the shipped file holds: see :data:`PRIORS`)."""

    owner: str
    kind: str  # "target" or "stack"
    path: tuple[str, ...]
    low: float
    high: float
    prior: float

    @property
    def name(self) -> str:
        return f"{self.owner}:{'.'.join(self.path)}"


PRIORS = {"matmul_max": 0.75, "fp8_matmul_max": 0.6, "matmul_half_gflop": 5.0, "matmul_half_dim": 128.0,
          "memory": 0.8, "network": 0.8, "tier": 0.8, "streaming": 0.5, "kernel_us": 10.0, "captured_kernel_us": 5.0,
          "tp_comm_hidden": 0.5, "contention": 0.1}
"""Where every fit starts, knowing no run: vendor GEMM benchmarks reach about three quarters of the dense
peak (FP8 less), HBM streams at about 80 % of its peak and links at about 80 % of theirs, a kernel launch
costs the host some 10 µs eagerly and half that captured; half the TP communication hidden, a tenth of the
hidden time lost to contention. A refit that leaves a source out starts here too, so it learns nothing from
the source it predicts."""


REGULARIZATION = 0.005
"""The objective's price of moving a knob away from its prior: 0.005 per squared natural log of the ratio (a
knob moves by e×, 2.7×, only if that buys half a point of mean error). Few runs cannot pin six knobs; without
it the search walks unconstrained ones to their bounds."""


def _chip(owner: str, *fields: str, tier: str | None = None) -> list[Knob]:
    bounds = {"matmul_max": (0.3, 0.98), "fp8_matmul_max": (0.2, 0.98), "matmul_half_gflop": (0.05, 60.0),
              "matmul_half_dim": (8.0, 1024.0), "memory": (0.4, 1.0), "network": (0.3, 1.0), "streaming": (0.02, 1.0)}
    knobs = [Knob(owner, "target", ("device", "efficiency", f), *bounds[f], PRIORS[f]) for f in fields]
    return knobs + ([Knob(owner, "target", ("topology", "tiers", tier, "efficiency"), 0.2, 1.0, PRIORS["tier"])]
                    if tier else [])


def _stack(owner: str, *fields: tuple[str, str, float, float]) -> list[Knob]:
    return [Knob(owner, "stack", (section, name), low, high, PRIORS[name]) for section, name, low, high in fields]


KNOBS: tuple[Knob, ...] = (
    *_chip("dgx-a100-80g", "matmul_max", "matmul_half_gflop", "matmul_half_dim", "memory", "network",
           tier="infiniband"),
    *_chip("dgx-h100-80g", "matmul_max", "matmul_half_gflop", "matmul_half_dim", "fp8_matmul_max", "memory",
           "network", tier="infiniband"),
    *_chip("dgx-b200", "matmul_max", "fp8_matmul_max"),
    *_chip("cerebras-cs2", "matmul_max", "streaming"),
    *_chip("tpu-v5p", "matmul_max", "matmul_half_gflop", "matmul_half_dim", "network"),
    *_chip("tpu-v5e", "matmul_max"),
    *_stack("megatron-lm", ("overheads", "kernel_us", 0.0, 40.0)),
    *_stack("megatron-core", ("overheads", "kernel_us", 0.0, 30.0), ("overlap", "tp_comm_hidden", 0.0, 1.0),
            ("overlap", "contention", 0.0, 0.6)),
    *_stack("torchtitan", ("overheads", "kernel_us", 0.0, 30.0), ("overheads", "captured_kernel_us", 0.0, 30.0),
            ("overlap", "contention", 0.0, 0.6)),
    *_stack("fms-fsdp", ("overheads", "captured_kernel_us", 0.0, 30.0), ("overlap", "contention", 0.0, 0.6)),
    *_stack("nemo-automodel", ("overheads", "kernel_us", 0.0, 30.0)),
    *_stack("maxtext", ("overlap", "contention", 0.0, 0.6)),
)
"""Every calibrated value (module docstring)."""


class Calibration:
    """Values for the knobs (a knob not given is at its prior) over the shipped files: the targets and stacks
    they make."""

    def __init__(self, values: dict[str, float] | None = None) -> None:
        self.values = dict(values or {})

    def with_values(self, **changes: float) -> "Calibration":
        return Calibration({**self.values, **changes})

    def without(self, owners: Iterable[str]) -> "Calibration":
        """This calibration with the values of ``owners``' knobs dropped (back at their priors)."""
        owners = set(owners)
        return Calibration({name: v for name, v in self.values.items() if name.partition(":")[0] not in owners})

    def value(self, knob: Knob) -> float:
        """The knob's value: this calibration's, else its prior."""
        return self.values.get(knob.name, knob.prior)

    @classmethod
    def shipped(cls) -> "Calibration":
        """The values the shipped files hold (what ``watos validate`` predicts with)."""
        return cls({knob.name: _shipped_value(knob) for knob in KNOBS})

    def complete(self) -> "Calibration":
        """This calibration with every knob's value written out (the priors of those it leaves)."""
        return Calibration({knob.name: self.value(knob) for knob in KNOBS})

    def target(self, name: str) -> Target:
        """A shipped target with this calibration's values (a borrowed efficiency is the calibrated source's)."""
        return _target(name, tuple(sorted(self.complete().values.items())))

    def stack(self, name: str) -> Stack:
        """A shipped stack with this calibration's values."""
        return _stack_of(name, tuple(sorted(self.complete().values.items())))


def _shipped_value(knob: Knob) -> float:
    """A knob's value in its shipped file, or what the file's schema makes of its absence."""
    if knob.kind == "stack":
        section, name = knob.path
        return float(getattr(getattr(load_stack(knob.owner), section), name))
    target = load_target(knob.owner)
    if knob.path[0] == "topology":
        tier = next(t for t in target.topology.tiers if t.name == knob.path[2])
        return float(tier.efficiency or target.device.efficiency.network)
    value = getattr(target.device.efficiency, knob.path[-1])
    return float(value if value is not None else target.device.efficiency.matmul_max)


def _set(data: Any, path: tuple[str, ...], value: float) -> None:
    for key in path[:-1]:
        data = next(item for item in data if item.get("name") == key) if isinstance(data, list) \
            else data.setdefault(key, {})
    data[path[-1]] = value


@functools.lru_cache(maxsize=4096)
def _target(name: str, values: tuple[tuple[str, float], ...]) -> Target:
    data = target_data(name)
    source = efficiency_source(name)
    if source != name:
        data["device"]["efficiency"] = _target(source, values).device.efficiency.model_dump()
    for key, value in values:
        owner, _, path = key.partition(":")
        if owner == name and path.startswith(("device", "topology")):
            _set(data, tuple(path.split(".")), value)
    return target_from_data(data, f"hw_targets/{name}.yaml (calibrated)")


@functools.lru_cache(maxsize=4096)
def _stack_of(name: str, values: tuple[tuple[str, float], ...]) -> Stack:
    data = stack_data(name)
    for key, value in values:
        owner, _, path = key.partition(":")
        if owner == name:
            _set(data, tuple(path.split(".")), value)
    return Stack(**data)


def owners_of(case: Case) -> set[str]:
    """The knob owners a case's prediction depends on: its target's chip and its stack."""
    try:
        chip = efficiency_source(case.system.target)
    except WatosError:
        return set()
    stack = stack_of(case)[0] or target_data(case.system.target).get("stack")
    return {chip, stack} if stack else {chip}


TABLE4 = {("none", False): (7.7, 11.9), ("none", True): (7.2, 11.8), ("full", False): (7.7, 19.5),
          ("selective", False): (7.7, 13.2), ("selective", True): (7.2, 13.1)}
"""Korthikanti et al. 2022, Table 4: one layer of the 22B GPT (tp 8, micro-batch 4), (forward, backward) ms."""
GPT_22B = CaseModel(family="gpt", hidden=6144, layers=48, heads=64, ffn=24576, vocab=51200, seq=2048)


def table4_error(calibration: Calibration) -> float:
    """Largest relative error of the 22B per-layer forward and backward times on the A100 against Table 4."""
    from watos.pipelines import cost_plan
    from watos.plan import Plan

    target, stack = calibration.target("dgx-a100-80g"), calibration.stack("megatron-lm")
    spec = json.dumps(hf_config(GPT_22B), sort_keys=True)
    worst = 0.0
    for (recompute, sp), (forward, backward) in TABLE4.items():
        plan = Plan(tp=8, micro_batch=4, global_batch=4, recompute=recompute, sequence_parallel=sp)
        software = stack.resolve(plan.features)
        graph = cost_plan(lowered_case(spec, 2048, 4, software.fusion, "fp16"), target, plan, dtype="fp16",
                          verify=False, software=software)
        layer = graph.analyses["device_cost"].parts[str(graph.block_groups[0].representative)]
        fwd = (layer["fwd"] + layer["tp_comm_fwd"]) * 1e3
        bwd = (layer["bwd"] + layer["tp_comm_bwd"] + layer.get(f"recompute:{recompute}", 0.0)) * 1e3
        worst = max(worst, abs(fwd / forward - 1), abs(bwd / backward - 1))
    return worst


def predict_with(cases: Iterable[Case], calibration: Calibration) -> list[dict[str, Any]]:
    """Every case's prediction under a calibration."""
    return [predict(case, calibration.target, calibration.stack) for case in cases]


def objective(results: list[dict[str, Any]]) -> float:
    """Mean absolute error plus half the worst case's excess over 10 % (module docstring)."""
    summary = error_summary(results)
    return summary["mean_abs_error"] + 0.5 * max(0.0, summary["max_abs_error"] - 0.10)


Progress = Callable[[str], None]


def fit(cases: list[Case], start: Calibration | None = None, *, owners: Iterable[str] | None = None,
        steps: tuple[float, ...] = (8.0, 2.0, 1.3, 1.1, 1.03), rounds: int = 2,
        progress: Progress | None = None) -> Calibration:
    """Fit the knobs of ``owners`` (default: every owner with cases) on ``cases`` (module docstring)."""
    calibration = start or Calibration()
    by_owner: dict[str, list[Case]] = {}
    for case in cases:
        for owner in owners_of(case):
            by_owner.setdefault(owner, []).append(case)
    # stacks first: with the chips at their priors a stack's host time per kernel is what its runs pin best;
    # then the chips under those stacks, and round again
    ordered = sorted(KNOBS, key=lambda k: k.kind != "stack")
    wanted = [k.owner for k in ordered if k.owner in by_owner and (owners is None or k.owner in owners)]
    for _ in range(rounds):
        for owner in dict.fromkeys(wanted):
            calibration = _fit_owner(owner, by_owner[owner], calibration, steps, progress)
    return calibration


def _fit_owner(owner: str, cases: list[Case], calibration: Calibration, steps: tuple[float, ...],
               progress: Progress | None) -> Calibration:
    knobs = [k for k in KNOBS if k.owner == owner]
    constrained = owner in ("dgx-a100-80g", "megatron-lm")

    def score(trial: Calibration) -> float:
        penalty = 10 * max(0.0, table4_error(trial) - 0.095) if constrained else 0.0
        drift = REGULARIZATION * sum(math.log(max(trial.value(k), 1e-4) / k.prior) ** 2 for k in knobs)
        return objective(predict_with(cases, trial)) + penalty + drift

    best = score(calibration)
    for step in steps:
        improved = True
        while improved:
            improved = False
            for knob in knobs:
                current = calibration.value(knob)
                for factor in (step, 1 / step):
                    value = round(min(knob.high, max(knob.low, current * factor if current else step - 1)), 4)
                    if value == current:
                        continue
                    trial = calibration.with_values(**{knob.name: value})
                    result = score(trial)
                    if result < best - 1e-6:
                        best, calibration, improved = result, trial, True
                        break
    if progress:
        progress(f"{owner}: objective {best:.4f} over {len(cases)} cases: "
                 + ", ".join(f"{k.path[-2] if k.path[-1] == 'efficiency' else k.path[-1]}={calibration.value(k):g}"
                             for k in knobs))
    return calibration


def leave_one_source_out(cases: list[Case], calibration: Calibration | None = None,
                         progress: Progress | None = None) -> dict[str, Any]:
    """Each source predicted by a calibration refitted without it (module docstring): per source its errors,
    and the mean and largest absolute error over every case so predicted."""
    base = calibration or Calibration.shipped()
    sources: dict[str, list[Case]] = {}
    for case in cases:
        sources.setdefault(case.source, []).append(case)
    results, per_source = [], {}
    for source, held in sorted(sources.items()):
        rest = [c for c in cases if c.source != source]
        touched = set().union(*(owners_of(c) for c in held))
        if progress:
            progress(f"leaving out {source}: refitting {', '.join(sorted(touched))}")
        refit = fit(rest, base.without(touched), owners=touched, progress=progress)
        predicted = predict_with(held, refit)
        results += predicted
        per_source[source] = {**error_summary(predicted), "errors": {r["id"]: r.get("error") for r in predicted}}
    overall = error_summary(results)
    return {"mean_abs_error": overall["mean_abs_error"], "max_abs_error": overall["max_abs_error"],
            "cases": overall["cases"], "sources": per_source}
