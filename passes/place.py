"""place: put every device rank on a die of the mesh (see :mod:`watos.network.placement` for the strategies).

On a switched target (GPU nodes) ranks sit where the launcher puts them, rank r on device r, and the
pass records that. Writes ``analyses["placement"]`` (:class:`~watos.ir.analyses.PlacementMap`): the
strategy, the die of every rank, and the mean hops of a pipeline send.
"""
from __future__ import annotations

from pydantic import Field

from watos.hardware.target import Mesh2D, Target
from watos.ir import Graph
from watos.ir.analyses import PlacementMap
from watos.ir.pass_manager import Pass, PassConfig, register_pass
from watos.network.placement import Placement, pipeline_hops, place


@register_pass("place")
class Place(Pass):
    stage = "cost"
    requires = frozenset({"pipeline"})
    provides = frozenset({"placement"})

    class Config(PassConfig):
        target: Target = Field(description="the hardware the plan runs on")
        placement: Placement = Field("row_major", description="how ranks are put on a mesh's dies")
        tp: int = Field(1, description="tensor-parallel degree")
        cp: int = Field(1, description="context-parallel degree")
        dp: int = Field(1, description="data-parallel replicas")
        pp: int = Field(1, description="pipeline stages")
        pairs: tuple[tuple[int, int, float], ...] = Field(
            (), description="Sender/Helper checkpoint traffic the optimized placement pulls close: "
                            "(sender stage, helper stage, bytes)")
        seed: int = Field(0, description="seed of the optimized placement's local search")

    def run(self, graph: Graph) -> None:
        c = self.config
        mesh = c.target.topology
        group = c.tp * c.cp
        if not isinstance(mesh, Mesh2D):
            dies = list(range(group * c.dp * c.pp))
            graph.analyses["placement"] = PlacementMap("switched", tuple(dies), 0.0)
            return
        pipeline_bytes = float(graph.analyses["pipeline"].p2p_bytes) or 1.0
        dies = place(c.placement, mesh.rows, mesh.cols, group, c.dp, c.pp, pipeline_bytes=pipeline_bytes,
                     pairs=c.pairs, seed=c.seed, wafers=c.target.wafers)
        graph.analyses["placement"] = PlacementMap(c.placement, tuple(dies),
                                                   pipeline_hops(dies, mesh.cols, group, c.dp, c.pp))
