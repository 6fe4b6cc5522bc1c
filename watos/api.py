"""The public API, one call per stage of the data flow, each returning a typed result (re-exported lazily
by ``watos``: ``import watos`` does not import torch).

    graph = watos.trace("llama3-8b", seq_len=4096)                     # frontend + import pipeline → Graph
    lowered = watos.lower(graph, "watos-config3")                      # the target's kernels → Graph
    costed = watos.cost_plan(lowered, "watos-config3", watos.Plan(tp=4, pp=14, global_batch=56))
    costed.analyses["cost"]["tokens_per_s"]                            # StepMetrics
    watos.compile("llama3-8b", "watos-config3", {"tp": 4, "pp": 14})  # all of the above → CompileResult
    watos.search("llama3-70b", "watos-config3")                        # the best plan → SearchResult
    watos.explore("watos-wafer", ["llama3-70b"])                       # wafer architectures → ExploreResult
    watos.validate("cases.json")                                       # published runs → ValidationResult
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from watos.exploration.sweep import DEFAULT_SPACE, ExploreResult
from watos.exploration.sweep import explore as explore_space
from watos.frontend.sources import ModelSource, load_model
from watos.hardware.stack import Features
from watos.hardware.target import Target, load_target
from watos.ir import Graph
from watos.ir.analyses import StepMetrics
from watos.ir.instruments import Instrument
from watos.ir.pass_manager import PassManager
from watos.ir.queries import model_limits
from watos.pipelines import attention_for, import_passes, trace
from watos.pipelines import cost_plan as _cost_plan
from watos.pipelines import lower as _lower
from watos.plan import Plan, Routing, check_plan, make_plan, routing_note, software_of, traced_dtype
from watos.strategy.baselines import run_baselines
from watos.strategy.problem import Problem, make_problem
from watos.strategy.result import SearchResult
from watos.strategy.search import Observer
from watos.strategy.search import search as search_plans
from watos.validation.report import ValidationResult
from watos.validation.run import validate as validate_file

__all__ = ["CompileResult", "compile", "cost_plan", "explore", "lower", "search", "trace", "validate"]


class CompileResult(StepMetrics, total=False):
    """:class:`~watos.ir.analyses.StepMetrics` of one plan, with what was costed: the model's name, the
    target's, the software stack's, the plan's fields and, for an MoE model, the routing model assumed
    (``moe_routing``)."""

    model: str
    target: str
    stack: str
    plan: dict
    moe_routing: str


def _target(target: Target | str) -> Target:
    return target if isinstance(target, Target) else load_target(target)


def _plan(plan: Plan | dict) -> Plan:
    return plan if isinstance(plan, Plan) else make_plan(dict(plan))


def lower(graph: Graph, target: Target | str | None = None, *, stack: str | None = None,
          features: Features | dict | None = None, fusion: str | None = None,
          instruments: Iterable[Instrument] = ()) -> Graph:
    """A copy of a traced graph lowered for the kernels of ``target``'s stack (or ``stack``, with
    ``features``), or for a ``fusion`` level (``none``, ``basic``, ``flash``) given instead; plan-independent:
    lower once, cost many plans."""
    if fusion is None:
        if target is None:
            raise TypeError("lower: give a target or a fusion level")
        plan = Plan(stack=stack, features=Features(**features) if isinstance(features, dict) else features or Features())
        software = software_of(plan, _target(target))
        fusion, fused_loss = software.fusion, software.fused_loss
    else:
        fused_loss = False
    return _lower(graph, fusion, instruments, fused_loss)


def cost_plan(lowered: Graph, target: Target | str, plan: Plan | dict, *, dtype: str = "bf16",
              instruments: Iterable[Instrument] = ()) -> Graph:
    """A costed copy of a lowered graph; ``analyses["cost"]`` is the plan's
    :class:`~watos.ir.analyses.StepMetrics` (the graph was traced at ``plan.micro_batch``)."""
    return _cost_plan(lowered, _target(target), _plan(plan), instruments, dtype)


def compile(model: Any, target: Target | str, plan: Plan | dict, *, seq: int = 2048, dtype: str = "bf16",
            instruments: Iterable[Instrument] = ()) -> CompileResult:
    """Trace ``model`` at the plan's micro-batch, check that the plan divides it and the target, lower it
    and cost it: the whole pipeline for one plan (``instruments`` observe every pass of all three stages)."""
    target, plan = _target(target), _plan(plan)
    from watos.frontend.trace import (
        trace_step,  # torch: imported when a model is traced, not before
    )

    instruments = list(instruments)
    source = load_model(model) if not isinstance(model, ModelSource) else model
    software = software_of(plan, target)
    fusion = software.fusion
    graph = trace_step(source, seq_len=seq, micro_batch=plan.micro_batch, dtype=traced_dtype(dtype),
                       attention=attention_for(fusion))
    check_plan(plan, **model_limits(graph), devices=target.dies)  # before any pass: a plan error is one line
    PassManager(import_passes(), instruments).run(graph)
    costed = _cost_plan(_lower(graph, fusion, instruments, software.fused_loss), target, plan, instruments, dtype)
    result: CompileResult = {"model": graph.model.name, "target": target.name, "stack": software.stack,
                             "plan": plan.model_dump(),
                             **costed.analyses["cost"]}
    if note := routing_note(graph, plan.routing):
        result["moe_routing"] = note
    return result


def search(model: Any, target: Target | str | None = None, *, seq: int = 4096, global_batch: int | None = None,
           dtype: str = "bf16", devices: int | None = None, routing: Routing | dict | None = None, seed: int = 0,
           considered: Sequence[Plan | dict] = (), baselines: bool = True, generations: int = 3,
           observe: Observer | None = None) -> SearchResult:
    """The fastest plan for ``model`` on ``target`` (or a prepared :class:`~watos.strategy.problem.Problem`),
    the runners-up, what limited the rejected shapes, the ``considered`` plans, and the baselines; ``observe``
    hears of every plan the search costs (:data:`~watos.strategy.search.Observer`)."""
    if isinstance(model, Problem):
        problem = model
    else:
        if target is None:
            raise TypeError("search: give a target (or a Problem)")
        problem = make_problem(model, _target(target), seq=seq, global_batch=global_batch, dtype=dtype,
                               devices=devices, routing=routing if isinstance(routing, Routing | None)
                               else Routing(**routing))
    given = [_plan({"global_batch": problem.global_batch, "routing": problem.routing.model_dump(), **p})
             if isinstance(p, dict) else p for p in considered]
    found = search_plans(problem, seed=seed, considered=given, generations=generations, observe=observe)
    traced = problem.traced(1)
    result: SearchResult = {"model": traced.model.name, "target": problem.target.name,
                            "stack": problem.software.stack, "devices": problem.devices,
                            "global_batch": problem.global_batch, "seq": traced.model.seq_len, **found}
    if baselines:
        if observe:
            observe("baselines", None, "")  # a phase without plans of its own: the baselines are costed next
        result["baselines"] = run_baselines(problem)
    if note := routing_note(traced, problem.routing):
        result["moe_routing"] = note
    return result


def explore(template: str, models: Sequence[str], space: dict[str, list] | None = None, **options: Any) -> ExploreResult:
    """Sweep a wafer template's ``space`` (default :data:`~watos.exploration.sweep.DEFAULT_SPACE`) for ``models``:
    every point's best strategy, the best point and the Pareto fronts (options: those of
    :func:`watos.exploration.sweep.explore`)."""
    return explore_space(template, list(models), space or DEFAULT_SPACE, **options)


def validate(path: str, *, leave_one_source_out: bool = False,
             progress: Callable[[str], None] | None = None) -> ValidationResult:
    """Predict every published run of a validation file and compare with what was measured;
    ``leave_one_source_out``: also predict each source with a calibration that never saw it (``progress``
    hears of every refit)."""
    return validate_file(path, leave_one_source_out=leave_one_source_out, progress=progress)
