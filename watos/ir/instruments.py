"""Pass instruments: observers of a pipeline (TVM's ``PassInstrument``), told before and after every pass.

:class:`PassTimings` records each pass's wall time; :class:`DumpIR` writes the IR after the import and after
every pass, numbered (``000_import``, ``001_canonicalize``...), in the three printed forms. The checks
after each pass are an instrument too (:class:`watos.ir.pass_manager.Verifier`), run by the manager so that
a failure names the pass.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

from watos.ir.graph import Graph
from watos.ir.printers import to_dot, to_json, to_text

if TYPE_CHECKING:
    from watos.ir.pass_manager import Pass


class Instrument:
    """Observes a pipeline: hooks run before and after each pass."""

    def before_pass(self, index: int, p: "Pass", graph: Graph) -> None:
        """Called before pass number ``index`` (1-based) runs."""

    def after_pass(self, index: int, p: "Pass", graph: Graph) -> None:
        """Called after pass number ``index`` ran and verified."""

    def start(self, graph: Graph) -> None:
        """Called once with the imported graph, before any pass."""


class PassTimings(Instrument):
    """Wall time of every pass, in order."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    def before_pass(self, index: int, p: "Pass", graph: Graph) -> None:
        self._t0 = time.perf_counter()

    def after_pass(self, index: int, p: "Pass", graph: Graph) -> None:
        self.seconds[p.name] = time.perf_counter() - self._t0


class DumpIR(Instrument):
    """Writes ``NNN_<pass>.txt``, ``.json`` and ``.dot`` (one block) after every pass (000: import);
    numbering continues across pipelines run with the same instrument."""

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.count = 0  # passes dumped so far: a second pipeline's dumps number on

    def _write(self, stem: str, graph: Graph) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / f"{stem}.txt").write_text(to_text(graph))
        (self.directory / f"{stem}.json").write_text(json.dumps(to_json(graph), sort_keys=True) + "\n")
        (self.directory / f"{stem}.dot").write_text(to_dot(graph))

    def start(self, graph: Graph) -> None:
        if not self.count:
            self._write("000_import", graph)

    def after_pass(self, index: int, p: "Pass", graph: Graph) -> None:
        self.count += 1
        self._write(f"{self.count:03d}_{p.name}", graph)
