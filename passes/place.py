"""place: put every device rank on a die of the mesh (see :mod:`watos.network.placement` for the strategies).

On a switched target (GPU nodes) ranks sit where the launcher puts them, rank r on device r, and the
pass records that. On a wafer with dead dies the plan's ``fault_policy`` chooses between placing on the
working dies only and moving the dead dies' ranks to neighbours. Writes ``analyses["placement"]``
(:class:`~watos.ir.analyses.PlacementMap`): the strategy, the die of every rank, the mean hops of a
pipeline send, and how crowded and slowed the busiest die is.
"""
from __future__ import annotations

from pydantic import Field

from watos.hardware.faults import FaultMap
from watos.hardware.target import Mesh2D, Target
from watos.ir import Graph
from watos.ir.analyses import PlacementMap
from watos.ir.pass_manager import Pass, PassConfig, register_pass
from watos.network.placement import Placement, crowding, move_off_dead, pipeline_hops, place


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
        fault_policy: str = Field("robust", description="on dead dies: robust (working dies only) or non_robust "
                                                        "(the fault-free placement, dead dies' ranks moved)")

    def run(self, graph: Graph) -> None:
        c = self.config
        mesh = c.target.topology
        group = c.tp * c.cp
        if not isinstance(mesh, Mesh2D):
            dies = list(range(group * c.dp * c.pp))
            graph.analyses["placement"] = PlacementMap("switched", tuple(dies), 0.0)
            return
        pipeline_bytes = float(graph.analyses["pipeline"].p2p_bytes) or 1.0
        faults = c.target.faults or FaultMap()
        dead = frozenset(faults.dead_dies)
        robust = c.fault_policy == "robust"
        dies = place(c.placement, mesh.rows, mesh.cols, group, c.dp, c.pp, pipeline_bytes=pipeline_bytes,
                     pairs=c.pairs, seed=c.seed, wafers=c.target.wafers, dead=dead if robust else frozenset())
        if not robust:
            dies = move_off_dead(dies, dead, mesh.rows, mesh.cols)
        ranks, slowdown = crowding(dies, faults.compute_fraction)
        graph.analyses["placement"] = PlacementMap(c.placement, tuple(dies),
                                                   pipeline_hops(dies, mesh.cols, group, c.dp, c.pp), ranks, slowdown)
