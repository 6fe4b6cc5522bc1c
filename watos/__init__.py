"""WATOS: plan LLM training on wafer-scale chips, compiler style.

The public API, one call per stage of the data flow (frontend → IR → lowering → costing → strategy →
exploration), each returning a typed result::

    graph = watos.trace("llama3-8b", seq_len=4096)                     # Graph: the traced training step
    lowered = watos.lower(graph, "watos-config3")                      # Graph: the target's kernels
    costed = watos.cost_plan(lowered, "watos-config3", watos.Plan(tp=4, pp=14, global_batch=56))
    watos.compile("llama3-8b", "watos-config3", {"tp": 4, "pp": 14})  # CompileResult
    watos.search("llama3-70b", "watos-config3")                        # SearchResult
    watos.explore("watos-wafer", ["llama3-70b"])                       # ExploreResult
    watos.validate("cases.json")                                       # ValidationResult

Names are imported on first use (PEP 562), so ``import watos`` and ``watos --help`` do not import torch.
Writing a pass: :mod:`watos.passes`.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    # stages
    "trace": "watos.pipelines", "lower": "watos.api", "cost_plan": "watos.api", "compile": "watos.api",
    "search": "watos.api", "explore": "watos.api", "validate": "watos.api",
    # inputs
    "load_model": "watos.frontend.sources", "ModelSource": "watos.frontend.sources",
    "load_target": "watos.hardware.target", "Target": "watos.hardware.target",
    "load_template": "watos.hardware.template", "Template": "watos.hardware.template",
    "Plan": "watos.plan", "Routing": "watos.plan", "Borrow": "watos.plan", "load_plan": "watos.plan",
    "make_problem": "watos.strategy.problem", "Problem": "watos.strategy.problem",
    # results
    "Graph": "watos.ir", "StepMetrics": "watos.ir.analyses", "CompileResult": "watos.api",
    "SearchResult": "watos.strategy.result", "PlanSummary": "watos.strategy.result",
    "ExploreResult": "watos.exploration.sweep", "ValidationResult": "watos.validation.report",
    "WatosError": "watos.errors",
}

__all__ = ["Borrow", "CompileResult", "ExploreResult", "Graph", "ModelSource", "Plan", "PlanSummary",
           "Problem", "Routing", "SearchResult", "StepMetrics", "Target", "Template", "ValidationResult",
           "WatosError", "compile", "cost_plan", "explore", "load_model", "load_plan", "load_target",
           "load_template", "lower", "make_problem", "search", "trace", "validate"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'watos' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


if TYPE_CHECKING:
    from watos.api import (
        CompileResult,
        compile,
        cost_plan,
        explore,
        lower,
        search,
        validate,
    )
    from watos.errors import WatosError
    from watos.exploration.sweep import ExploreResult
    from watos.frontend.sources import ModelSource, load_model
    from watos.hardware.target import Target, load_target
    from watos.hardware.template import Template, load_template
    from watos.ir import Graph
    from watos.ir.analyses import StepMetrics
    from watos.pipelines import trace
    from watos.plan import Borrow, Plan, Routing, load_plan
    from watos.strategy.problem import Problem, make_problem
    from watos.strategy.result import PlanSummary, SearchResult
    from watos.validation.report import ValidationResult
