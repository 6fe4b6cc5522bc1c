"""Pass infrastructure: passes registered by name, a manager that checks and instruments a pipeline.

A pass declares the graph properties it ``requires`` and ``provides`` (and ``invalidates``), a ``run``
that rewrites or annotates the graph in place, and a ``verify`` of what it ensures. The manager checks
``requires`` before each pass, verifies the IR and the pass's ensures after it, and names the failing
pass and those that ran before it when anything goes wrong. Instruments (timing, IR dumps) observe
every pass.

A pass is registered with ``@register_pass("name")``: the built-in ones live in ``passes/`` (one per
file, each imported on first use); a file a user adds there, or a class their code registers, joins the
default pipeline right after the passes that provide what it requires.
"""
from __future__ import annotations

import importlib
import pkgutil
import time
from pathlib import Path
from typing import Any, ClassVar, Iterable

from pydantic import BaseModel, ConfigDict, ValidationError

from watos.errors import WatosError, describe_validation_error
from watos.ir import Graph

_REGISTRY: dict[str, type["Pass"]] = {}


class PassError(WatosError):
    """A pass failed, or left the IR in a state that breaks what it promised."""


class PassConfig(BaseModel):
    """Base of per-pass options; unknown options are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Pass:
    """One compiler pass over :class:`~watos.ir.Graph`."""

    name: ClassVar[str] = ""
    requires: ClassVar[frozenset[str]] = frozenset()
    provides: ClassVar[frozenset[str]] = frozenset()
    invalidates: ClassVar[frozenset[str]] = frozenset()
    in_default_pipeline: ClassVar[bool] = True
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


def _import_builtin_passes() -> None:
    import watos.passes as package

    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        importlib.import_module(f"{package.__name__}.{info.name}")


BUILTIN_PIPELINE = ("canonicalize", "annotate", "group_blocks", "saved_activations")
"""The shipped default pipeline, in order."""


def default_pipeline() -> list[Pass]:
    """The built-in pipeline, with every other registered default pass inserted right after the
    last pass that provides something it requires (at the end if it requires nothing); passes
    placed at the same point keep their registration order."""
    registry = registered_passes()
    ordered = [registry[name] for name in BUILTIN_PIPELINE]
    extra = [cls for name, cls in registry.items() if name not in BUILTIN_PIPELINE and cls.in_default_pipeline]
    for cls in extra:
        position = len(ordered)
        if cls.requires:
            providers = {need: [i for i, p in enumerate(ordered) if need in p.provides] for need in cls.requires}
            missing = sorted(need for need, found in providers.items() if not found)
            if missing:
                raise PassError(f"pass {cls.name} requires {missing}, which no registered pass provides")
            position = max(found[0] for found in providers.values()) + 1
            while position < len(ordered) and ordered[position] in extra:
                position += 1
        ordered.insert(position, cls)
    return [cls() for cls in ordered]


def make_pipeline(names: Iterable[str]) -> list[Pass]:
    """Instantiate registered passes by name, in the given order."""
    registry = registered_passes()
    unknown = [n for n in names if n not in registry]
    if unknown:
        raise PassError(f"unknown pass {unknown[0]!r}; registered: {', '.join(sorted(registry))}")
    return [registry[n]() for n in names]


class Instrument:
    """Observes a pipeline: hooks run before and after each pass."""

    def before_pass(self, index: int, p: Pass, graph: Graph) -> None:
        """Called before pass number ``index`` (1-based) runs."""

    def after_pass(self, index: int, p: Pass, graph: Graph) -> None:
        """Called after pass number ``index`` ran and verified."""

    def start(self, graph: Graph) -> None:
        """Called once with the imported graph, before any pass."""


class PassTimings(Instrument):
    """Wall time of every pass, in order."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def before_pass(self, index: int, p: Pass, graph: Graph) -> None:
        self._t0 = time.perf_counter()

    def after_pass(self, index: int, p: Pass, graph: Graph) -> None:
        self.seconds[p.name] = time.perf_counter() - self._t0


class PassManager:
    """Runs passes in order; checks ``requires``, verifies the IR and each pass's ensures."""

    def __init__(self, passes: Iterable[Pass], instruments: Iterable[Instrument] = (), verify: bool = True) -> None:
        """``verify=False`` skips the IR and ensures checks after each pass (``requires`` is still checked):
        for hot loops that run a pipeline verified before on the same graph, such as a strategy search."""
        self.passes = list(passes)
        self.instruments = list(instruments)
        self.verify = verify

    def run(self, graph: Graph) -> Graph:
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
                if self.verify:
                    graph.verify()
                    p.verify(graph)
            except Exception as exc:  # name the failing pass, whatever went wrong inside it
                detail = str(exc) if isinstance(exc, WatosError) else f"{type(exc).__name__}: {exc}"
                raise PassError(f"pass {p.name} failed (after {', '.join(done) or 'none'}): "
                                f"{detail}") from exc
            done.append(p.name)
            for instrument in self.instruments:
                instrument.after_pass(index, p, graph)
        return graph
