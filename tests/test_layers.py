"""The house along the data flow: every module imports only its own layer or earlier ones, no module
under watos/ is over 400 lines, and the README's Layout and docs/architecture.md name what is there."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
LAYERS = (
    ("watos.errors", "watos.files"),
    ("watos.ir",),
    ("watos.models", "watos.frontend"),
    ("watos.hardware",),
    ("watos.network",),
    ("watos.plan",),
    ("watos.cost",),
    ("watos.passes",),
    ("watos.pipelines",),
    ("watos.strategy",),
    ("watos.validation",),
    ("watos.exploration",),
    ("watos.report",),
    ("watos.api", "watos"),  # the public API: the facade re-exports every stage, lazily
    ("watos.cli", "watos.__main__"),
)
"""Layers in data-flow order (style.md); a module may import its own layer and those listed before it."""
ALLOWED = {("watos.ir.pass_manager", "watos.passes")}  # the pass registry's lazy discovery of passes/
FOLDERS = {"watos": ROOT / "watos", "watos.passes": ROOT / "passes", "watos.models": ROOT / "models"}


def layer_of(module: str) -> int:
    """Index in :data:`LAYERS` of the longest package prefix of ``module``."""
    best = max(((len(name), index) for index, names in enumerate(LAYERS) for name in names
                if module == name or module.startswith(name + ".")), default=None)
    if best is None:
        raise AssertionError(f"{module} is in no layer: add its package to LAYERS")
    return best[1]


def modules() -> dict[str, Path]:
    """Every Python module of the package, by dotted name (passes/ and models/ install into watos)."""
    found = {}
    for package, folder in FOLDERS.items():
        for path in folder.rglob("*.py"):
            parts = path.relative_to(folder).with_suffix("").parts
            if package == "watos" and parts[0] in ("passes", "models"):
                continue
            name = ".".join((package, *parts)).removesuffix(".__init__")
            found[name] = path
    return found


def imports(module: str, path: Path) -> set[str]:
    """Every watos module ``module`` imports, at the top or inside a function (lazy imports count)."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")[: len(module.split(".")) - node.level + is_package]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
    return {name for name in found if name == "watos" or name.startswith("watos.")}


def test_every_module_imports_only_earlier_layers():
    violations = []
    for module, path in sorted(modules().items()):
        own = layer_of(module)
        for imported in sorted(imports(module, path)):
            if layer_of(imported) > own and (module, imported) not in ALLOWED:
                violations.append(f"{module} (layer {LAYERS[own][0]}) imports {imported} "
                                  f"(layer {LAYERS[layer_of(imported)][0]})")
    assert not violations, "\n".join(violations)


def test_the_layer_test_catches_a_later_import(tmp_path):
    late = tmp_path / "late.py"
    late.write_text("def f():\n    from watos.strategy.search import search\n")
    assert layer_of("watos.cost.late") < layer_of(next(iter(imports("watos.cost.late", late))))


@pytest.mark.parametrize("module", sorted(name for name in modules() if name.startswith("watos.")))
def test_no_module_exceeds_400_lines(module):
    path = modules()[module]
    if FOLDERS["watos"] in path.parents:
        assert len(path.read_text().splitlines()) <= 400, f"{path} is over 400 lines"


def test_readme_layout_and_architecture_doc_name_every_package():
    packages = sorted(p.name for p in FOLDERS["watos"].iterdir() if (p / "__init__.py").exists())
    layout = re.search(r"## Layout\n.*?```\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert layout, "README lost its Layout section"
    architecture = (ROOT / "docs" / "architecture.md").read_text()
    for package in packages:
        assert f"{package}/" in layout.group(1), f"README Layout does not show watos/{package}/"
        assert f"{package}/" in architecture, f"docs/architecture.md does not show watos/{package}/"
    for module in sorted(p.stem for p in FOLDERS["watos"].glob("*.py") if p.stem not in ("__init__", "__main__")):
        assert f"{module}.py" in layout.group(1) and f"{module}.py" in architecture, module
