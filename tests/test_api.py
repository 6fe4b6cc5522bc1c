"""The public API: one call per stage, pinned names, lazy imports, typed results, and the README's code
using only ``watos`` and ``watos.passes``."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path
from typing import get_type_hints

import pytest
from conftest import FAMILIES

import watos

README = Path(__file__).parents[1] / "README.md"
PUBLIC = ["Borrow", "CompileResult", "ExploreResult", "Graph", "ModelSource", "Plan", "PlanSummary", "Problem",
          "Routing", "SearchResult", "StepMetrics", "Target", "Template", "ValidationResult", "WatosError",
          "compile", "cost_plan", "explore", "load_model", "load_plan", "load_target", "load_template", "lower",
          "make_problem", "search", "trace", "validate"]
TINY = "tests/fixtures/user_models.py:tiny_lm"


def test_public_names_are_pinned_and_resolve():
    assert watos.__all__ == PUBLIC
    for name in PUBLIC:
        assert getattr(watos, name) is not None
    assert set(PUBLIC) <= set(dir(watos))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        watos.nope  # noqa: B018


def test_import_and_help_do_not_import_torch():
    code = ("import sys, watos, watos.passes\nfrom watos.cli import build_parser\nbuild_parser()\n"
            "heavy = sorted(m for m in ('torch', 'transformers', 'matplotlib') if m in sys.modules)\n"
            "assert not heavy, heavy\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=README.parent)


def test_readme_python_imports_only_watos_and_watos_passes():
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert len(blocks) >= 3
    for block in blocks:
        for node in ast.walk(ast.parse(block)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) else []
            for name in names:
                if name.startswith("watos"):
                    assert name in ("watos", "watos.passes"), f"README code imports {name}"


def test_stages_compose_and_agree_with_compile():
    """trace → lower → cost_plan gives the StepMetrics that compile gives in one call."""
    model, plan = FAMILIES["llama"], watos.Plan(tp=2, dp=2, micro_batch=2, global_batch=8)
    graph = watos.trace(model, seq_len=32, micro_batch=2, attention="eager")
    lowered = watos.lower(graph, "dgx-a100-80g")
    assert lowered is not graph and "fusion" in lowered.analyses and "fusion" not in graph.analyses
    cost = watos.cost_plan(lowered, "dgx-a100-80g", plan).analyses["cost"]
    compiled = watos.compile(model, "dgx-a100-80g", plan, seq=32)
    assert set(get_type_hints(watos.StepMetrics)) <= set(cost)
    assert {k: compiled[k] for k in cost} == cost
    assert compiled["plan"] == plan.model_dump() and compiled["target"] == "dgx-a100-80g"
    with pytest.raises(watos.WatosError, match="does not divide"):
        watos.compile(model, "dgx-a100-80g", {"tp": 3}, seq=32)


def test_search_result_has_its_schema():
    problem = watos.make_problem(TINY, watos.load_target("watos-config3"), seq=32)
    problem = problem.on(problem.target.model_copy(update={"topology": problem.target.topology.model_copy(
        update={"rows": 2, "cols": 2})}), 4)
    result = watos.search(problem, baselines=False, generations=1)
    required = {"model", "target", "devices", "global_batch", "seq", "best", "runners_up", "rejected", "evaluated",
                "considered"}
    assert required <= set(result) <= set(get_type_hints(watos.SearchResult))
    assert set(result["best"]) == set(get_type_hints(watos.PlanSummary))
    assert result["devices"] == 4 and result["seq"] == 32 and "baselines" not in result
