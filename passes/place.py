"""place: put every device rank on a die of the mesh (see :mod:`watos.network.placement` for the strategies).

On a switched target (GPU nodes) ranks sit where the launcher puts them, rank r on device r, and the
pass records that. Writes ``analyses["placement"]``: the strategy, the die of every rank, and the mean
hops of a pipeline send.
"""
from __future__ import annotations

from watos.hardware.target import Mesh2D, Target
from watos.ir import Graph
from watos.ir.pass_manager import Pass, PassConfig, register_pass
from watos.network.placement import Strategy, pipeline_hops, place


@register_pass("place")
class Place(Pass):
    requires = frozenset({"pipelined"})
    provides = frozenset({"placed"})
    in_default_pipeline = False

    class Config(PassConfig):
        target: Target
        strategy: Strategy = "row_major"
        tp: int = 1
        cp: int = 1
        dp: int = 1
        pp: int = 1
        pairs: tuple[tuple[int, int, float], ...] = ()  # (sender stage, helper stage, checkpoint bytes)
        seed: int = 0

    def run(self, graph: Graph) -> None:
        c = self.config
        mesh = c.target.topology
        group = c.tp * c.cp
        if not isinstance(mesh, Mesh2D):
            dies = list(range(group * c.dp * c.pp))
            graph.analyses["placement"] = {"strategy": "switched", "dies": dies, "pipeline_hops_mean": 0.0}
            return
        pipeline_bytes = float(graph.analyses["pipeline"]["p2p_bytes"]) or 1.0
        dies = place(c.strategy, mesh.rows, mesh.cols, group, c.dp, c.pp, pipeline_bytes=pipeline_bytes,
                     pairs=c.pairs, seed=c.seed, wafers=c.target.wafers)
        graph.analyses["placement"] = {"strategy": c.strategy, "dies": dies,
                                       "pipeline_hops_mean": pipeline_hops(dies, mesh.cols, group, c.dp, c.pp)}
