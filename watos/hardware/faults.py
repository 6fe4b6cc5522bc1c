"""Fault maps: which dies and die-to-die links of a target do not work, and which dies work with fewer cores.

Dies are global row-major indices (wafer w's dies follow wafer w−1's); a dead link is an unordered pair of
neighbouring dies and fails both ways. A degraded die keeps ``degraded[die]`` of its cores (and so of its
compute). A fault map is part of a target (``faults:`` in its YAML) or drawn at random on its network
(:func:`watos.network.faults.random_faults`).
"""
from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from watos.files import StrictModel

Die = Annotated[int, Field(ge=0)]


class FaultMap(StrictModel):
    """Dead dies, dead links (pairs of neighbouring dies) and degraded dies (die → fraction of cores)."""

    dead_dies: list[Die] = Field(default_factory=list)
    dead_links: list[tuple[Die, Die]] = Field(default_factory=list)
    degraded: dict[Die, Annotated[float, Field(gt=0, lt=1)]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _consistent(self) -> "FaultMap":
        if any(a == b for a, b in self.dead_links):
            raise ValueError("dead_links: a link joins two different dies")
        if set(self.degraded) & set(self.dead_dies):
            raise ValueError("degraded: a dead die cannot also be degraded")
        return self

    @property
    def empty(self) -> bool:
        """No fault at all."""
        return not (self.dead_dies or self.dead_links or self.degraded)

    def compute_fraction(self, die: int) -> float:
        """The fraction of its compute a die keeps (0 when dead)."""
        return 0.0 if die in self.dead_dies else self.degraded.get(die, 1.0)
