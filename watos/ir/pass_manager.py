"""Pass infrastructure: passes registered by name in stages, a manager that checks and instruments a pipeline.

A pass declares its ``stage`` (``import``: the traced graph, whatever the target; ``lower``: the target's
kernels, plan-independent; ``cost``: one plan on one target), the graph properties it ``requires`` and
``provides`` (and ``invalidates``), a ``run`` that rewrites or annotates the graph in place, and a
``verify`` of what it ensures. A provided name registered in :mod:`watos.ir.analyses` is the analysis the
pass writes (``provides = {"pipeline"}``: it writes ``graph.analyses["pipeline"]``); any other is a
property of the ops. The manager checks ``requires`` before each pass and, after it, the IR, the pass's
ensures and that it wrote every analysis it promised (:class:`Verifier`), naming the failing pass and
those that ran before it when anything goes wrong. Instruments (timing, IR dumps) observe every pass.

A pass is registered with ``@register_pass("name")``: the built-in ones live in ``passes/`` (one per
file, each imported on first use); a file a user adds there, or a class their code registers, joins its
stage's pipeline right after the passes that provide what it requires (:func:`join_stage`).
"""
from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from pathlib import Path
from typing import Any, ClassVar, Iterable, Literal, get_args

from pydantic import ValidationError

from watos.errors import WatosError, describe_validation_error
from watos.files import StrictModel
from watos.ir.analyses import mismatch
from watos.ir.graph import Graph
from watos.ir.instruments import Instrument

Stage = Literal["import", "lower", "cost"]
STAGES: tuple[Stage, ...] = get_args(Stage)

_REGISTRY: dict[str, type["Pass"]] = {}


class PassError(WatosError):
    """A pass failed, or left the IR in a state that breaks what it promised."""


class PassConfig(StrictModel):
    """Base of per-pass options; unknown options are errors. Give every field a ``Field(description=...)``:
    ``watos passes`` lists them."""


class Pass:
    """One compiler pass over :class:`~watos.ir.graph.Graph` (the module docstring)."""

    name: ClassVar[str] = ""
    stage: ClassVar[Stage] = "import"
    requires: ClassVar[frozenset[str]] = frozenset()
    provides: ClassVar[frozenset[str]] = frozenset()
    invalidates: ClassVar[frozenset[str]] = frozenset()
    Config: ClassVar[type[PassConfig]] = PassConfig

    def __init__(self, **options: Any) -> None:
        try:
            self.config = self.Config(**options)
        except ValidationError as exc:
            raise PassError(f"pass {self.name}: option {describe_validation_error(exc)}") from None

    def run(self, graph: Graph) -> None:
        """Rewrite or annotate ``graph`` in place."""
        raise NotImplementedError

    def verify(self, graph: Graph) -> None:
        """Raise :class:`PassError` if what this pass ensures does not hold on ``graph``."""


def register_pass(name: str):
    """Class decorator: register a :class:`Pass` subclass under ``name``."""

    def decorate(cls: type[Pass]) -> type[Pass]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise PassError(f"a pass named {name!r} is already registered ({_REGISTRY[name].__module__})")
        if cls.stage not in STAGES:
            raise PassError(f"pass {name}: stage {cls.stage!r} is not one of {', '.join(STAGES)}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def registered_passes() -> dict[str, type[Pass]]:
    """All registered passes by name (built-in passes from ``passes/`` are imported first)."""
    _import_builtin_passes()
    return dict(_REGISTRY)


def load_pass_file(path: str) -> None:
    """Import a user's Python file so the passes it registers become available."""
    file = Path(path)
    if not file.is_file():
        raise WatosError(f"pass plugin not found: {path}")
    spec = importlib.util.spec_from_file_location(f"watos_user_pass_{file.stem}", file)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except WatosError:
        raise
    except Exception as exc:  # the user's file: report its failure as one line
        raise WatosError(f"{path}: importing it raised {type(exc).__name__}: {exc}") from None


_DISCOVERED: set[tuple[str, ...]] = set()  # the ``watos.passes`` folders already imported


def _import_builtin_passes() -> None:
    import watos.passes as package  # the one import of a later layer: lazy discovery of the pass files

    folders = tuple(package.__path__)
    if folders in _DISCOVERED:  # a costing pipeline is built per plan: scan the folders once
        return
    for info in sorted(pkgutil.iter_modules(folders), key=lambda m: m.name):
        importlib.import_module(f"{package.__name__}.{info.name}")
    _DISCOVERED.add(folders)


def join_stage(stage: Stage, builtin: list[Pass], shipped: Iterable[str] = (),
               context: dict[str, Any] | None = None) -> list[Pass]:
    """A stage's pipeline: its ``builtin`` passes, with every other registered pass of that stage (not among
    the ``shipped`` names, which the named pipelines place themselves) inserted right after the last pass
    that provides something it requires (at the end if it requires nothing); passes placed at the same
    point keep their registration order. A joining pass is made with the ``context`` values (a costing
    stage: ``target``, ``plan``, ``dtype``) that its options declare."""
    context = context or {}
    ordered: list[Any] = list(builtin)
    skip = set(shipped) | {p.name for p in builtin}
    extra = [cls for name, cls in registered_passes().items() if cls.stage == stage and name not in skip]
    for cls in extra:
        position = len(ordered)
        if cls.requires:
            providers = {need: [i for i, p in enumerate(ordered) if need in p.provides] for need in cls.requires}
            missing = sorted(need for need, found in providers.items() if not found)
            if missing:
                raise PassError(f"pass {cls.name} requires {missing}, which no {stage}-stage pass before it provides")
            position = max(found[0] for found in providers.values()) + 1
            while position < len(ordered) and isinstance(ordered[position], type):
                position += 1
        ordered.insert(position, cls)
    return [p(**{k: v for k, v in context.items() if k in p.Config.model_fields}) if isinstance(p, type) else p
            for p in ordered]


def make_pipeline(names: Iterable[str]) -> list[Pass]:
    """Instantiate registered passes by name, in the given order."""
    registry = registered_passes()
    unknown = [n for n in names if n not in registry]
    if unknown:
        raise PassError(f"unknown pass {unknown[0]!r}; registered: {', '.join(sorted(registry))}")
    return [registry[n]() for n in names]


class Verifier(Instrument):
    """What every pass promises, checked after it runs: the IR's structural invariants, the pass's own
    ``verify``, and every analysis it ``provides`` written as its registered record."""

    def after_pass(self, index: int, p: Pass, graph: Graph) -> None:
        graph.verify()
        p.verify(graph)
        for key in sorted(p.provides):
            if (problem := mismatch(key, graph.analyses.get(key))) is not None:
                raise PassError(f"it provides {key!r} but {problem}")


class PassManager:
    """Runs passes in order; checks ``requires`` before each and runs the :class:`Verifier` after each."""

    def __init__(self, passes: Iterable[Pass], instruments: Iterable[Instrument] = (), verify: bool = True) -> None:
        """``verify=False`` skips the checks after each pass (``requires`` is still checked): for hot loops
        that run a pipeline verified before on the same graph, such as a strategy search."""
        self.passes = list(passes)
        self.instruments = list(instruments)
        self.verifier = Verifier() if verify else None

    def run(self, graph: Graph) -> Graph:
        """Run every pass on ``graph`` (in place) and return it."""
        for instrument in self.instruments:
            instrument.start(graph)
        done: list[str] = []
        for index, p in enumerate(self.passes, start=1):
            missing = p.requires - graph.properties
            if missing:
                raise PassError(f"pass {p.name} requires {sorted(missing)}, which no earlier pass "
                                f"provides (ran: {', '.join(done) or 'none'})")
            for instrument in self.instruments:
                instrument.before_pass(index, p, graph)
            try:
                p.run(graph)
                graph.properties -= p.invalidates
                graph.properties |= p.provides
                if self.verifier is not None:
                    self.verifier.after_pass(index, p, graph)
            except Exception as exc:  # name the failing pass, whatever went wrong inside it
                detail = str(exc) if isinstance(exc, WatosError) else f"{type(exc).__name__}: {exc}"
                raise PassError(f"pass {p.name} failed (after {', '.join(done) or 'none'}): "
                                f"{detail}") from exc
            done.append(p.name)
            for instrument in self.instruments:
                instrument.after_pass(index, p, graph)
        return graph
