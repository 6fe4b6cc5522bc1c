"""Collective costs: rings routed on the mesh with contention, α-β tiers on switched networks."""
import pytest

from watos import load_target
from watos.hardware.target import SystemLink
from watos.network.collectives import collective_time, link_loads, mesh_collective
from watos.network.routing import route_xy


def test_xy_route_goes_along_the_row_then_the_column():
    assert route_xy((0, 0), (1, 2)) == [(0, 0, 0, 1), (0, 1, 0, 2), (0, 2, 1, 2)]


def test_ring_on_a_mesh_by_hand():
    """Four dies in a row of watos-config3 (1000 GB/s per link and direction, 200 ns).

    Ring 0-1-2-3-0: hops 0→1, 1→2, 2→3 use one link each; 3→0 goes back over 3→2, 2→1, 1→0. Every
    directed link carries one transfer: all-reduce = 2·3 steps of n/4 bytes over one link, plus the
    longest route's latency (3 hops) per step.
    """
    target = load_target("watos-config3")
    n = 4e9
    step = n / 4 / (1000e9 * target.device.efficiency.network) + 3 * 200e-9
    assert collective_time(target, "all_reduce", n, [[0, 1, 2, 3]]) == pytest.approx(6 * step)


def test_groups_sharing_links_contend():
    target = load_target("watos-config3")
    alone = collective_time(target, "all_gather", 1e9, [[0, 2]])
    # [1, 3] routes 1→2→3 and back over the same row links as [0, 2]'s 0→1→2: the shared link 1→2
    # carries two transfers.
    together = collective_time(target, "all_gather", 1e9, [[0, 2], [1, 3]])
    assert together > alone


def test_switched_all_reduce_is_hierarchical():
    target = load_target("dgx-a100-80g")
    n = 1e9
    inside = collective_time(target, "all_reduce", n, [list(range(8))])
    nvlink, infiniband = (t.efficiency or target.device.efficiency.network for t in target.topology.tiers)
    assert inside == pytest.approx(2 * 7 / 8 * n / (300e9 * nvlink) + 2 * 7 * 2e-6)
    across = collective_time(target, "all_reduce", n, [[0, 8, 16, 24]])  # one GPU per node
    assert across == pytest.approx(2 * 3 / 4 * n / (25e9 * infiniband) + 2 * 3 * 5e-6)


def test_a_tier_can_have_its_own_efficiency():
    target = load_target("dgx-a100-80g")
    tiers = [t.model_copy(update={"efficiency": 0.5}) if t.name == "infiniband" else t
             for t in target.topology.tiers]
    slower = target.model_copy(update={"topology": target.topology.model_copy(update={"tiers": tiers})})
    n, group = 1e9, [[0, 8, 16, 24]]
    assert collective_time(slower, "all_reduce", n, group) == pytest.approx(2 * 3 / 4 * n / (25e9 * 0.5) + 2 * 3 * 5e-6)
    assert collective_time(slower, "all_reduce", n, [list(range(8))]) == collective_time(target, "all_reduce", n, [list(range(8))])


def test_switched_all_to_all_sends_each_tier_the_part_bound_across_it():
    """16 GPUs in two nodes of 8: 7/16 of a device's bytes stay in its node (NVLink), 8/16 cross InfiniBand."""
    target = load_target("dgx-a100-80g")
    nvlink, infiniband = (t.efficiency or target.device.efficiency.network for t in target.topology.tiers)
    n = 1e9
    assert collective_time(target, "all_to_all", n, [list(range(16))]) == pytest.approx(
        7 / 16 * n / (300e9 * nvlink) + 7 * 2e-6 + 8 / 16 * n / (25e9 * infiniband) + 1 * 5e-6)


@pytest.mark.parametrize("k", [2, 8])
def test_a_deduplicating_dispatch_sends_a_token_once_per_node_it_reaches(k):
    """k rows per token, routed uniformly over 16 GPUs in 2 nodes: a token crosses InfiniBand once if any of
    its k rows goes to the other node (1 − (1/2)^k), not once per row (k/2 of them on average)."""
    target = load_target("dgx-a100-80g")
    nvlink, infiniband = (t.efficiency or target.device.efficiency.network for t in target.topology.tiers)
    n, group = 1e9, [list(range(16))]
    expected = (n / k * 7 * (1 - (15 / 16) ** k) / (300e9 * nvlink) + 7 * 2e-6
                + n / k * (1 - (1 / 2) ** k) / (25e9 * infiniband) + 5e-6)
    assert collective_time(target, "all_to_all", n, group, copies=k) == pytest.approx(expected)
    assert collective_time(target, "all_to_all", n, group, copies=k) < collective_time(target, "all_to_all", n, group)


def test_all_to_all_on_a_mesh_by_hand():
    """Four dies in a 2 x 2 block of watos-config3, all-to-all of n bytes per die (n/4 to each die).

    Direct routing, XY (along the row first): 12 flows of n/4, 8 to a neighbour (one link) and 4 to the
    diagonal die (two links: (0,0)→(0,1)→(1,1), ...), 4n of link-bytes over the block's 8 directed links.
    Link (0,0)→(0,1) carries (0,0)'s block for (0,1) and the first hop of its block for (1,1); link
    (0,1)→(1,1) carries (0,1)'s block for (1,1) and the second hop of (0,0)'s: every link n/2. Time: n/2
    over a link plus two hops of latency. A ring all-to-all forwards n(g−1)/2 = 1.5n per die in 3 steps."""
    target = load_target("watos-config3")
    n = 4e9
    seconds, name, links = mesh_collective(target, "all_to_all", n, [[0, 1, 8, 9]])
    assert name == "direct"
    bandwidth = 1000e9 * target.device.efficiency.network
    assert seconds == pytest.approx(n / 2 / bandwidth + 2 * 200e-9)
    assert len(links) == 8 and all(b == pytest.approx(n / 2) for b in links.values())
    ring = mesh_collective(target, "all_to_all", n, [[0, 1, 2, 3]])  # a row: no shortcut, ring or direct
    assert ring[0] > seconds


def two_wafers(bandwidth: float = 400):
    """Two 2 x 2-die wafers of watos-config3 dies in a ring (dies 0-3 on wafer 0, 4-7 on wafer 1)."""
    base = load_target("watos-config3")
    return base.model_copy(update={
        "topology": base.topology.model_copy(update={"rows": 2, "cols": 2}),
        "systems": SystemLink(count=2, bandwidth_gb_per_s_per_direction=bandwidth, latency_us=1)})


def test_a_send_across_wafers_by_hand():
    target = two_wafers()
    efficiency = target.device.efficiency.network
    n = 1e9
    assert collective_time(target, "p2p", n, [[3, 4]]) == pytest.approx(n / (400e9 * efficiency) + 1e-6)
    # Two pairs crossing the same boundary share it; a pair inside a wafer runs on its mesh at once.
    assert collective_time(target, "p2p", n, [[2, 5], [3, 4]]) == pytest.approx(2 * n / (400e9 * efficiency) + 1e-6)
    assert collective_time(target, "p2p", n, [[0, 1]]) == pytest.approx(mesh_collective(target, "p2p", n, [[0, 1]])[0])


def test_an_all_reduce_across_wafers_is_hierarchical():
    """Members 0, 1 on wafer 0 and 4, 5 (its dies 0, 1) on wafer 1: reduce-scatter on each wafer, the
    wafer ring (2 wafers: 2(w-1)/w·n = n over the boundary, 2 steps), all-gather on each wafer."""
    target = two_wafers()
    n = 1e9
    on_wafer = (mesh_collective(target, "reduce_scatter", n, [[0, 1]])[0]
                + mesh_collective(target, "all_gather", n, [[0, 1]])[0])
    across = n / (400e9 * target.device.efficiency.network) + 2 * 1e-6
    assert collective_time(target, "all_reduce", n, [[0, 1, 4, 5]]) == pytest.approx(on_wafer + across)
    # Groups on separate wafers do not contend: the same links of different wafers are different links.
    alone = collective_time(target, "all_reduce", n, [[0, 1]])
    assert collective_time(target, "all_reduce", n, [[0, 1], [4, 5]]) == pytest.approx(alone)


def test_link_loads_of_every_wafer_are_drawn_on_its_own_rows():
    """Wafers are drawn stacked: wafer 1's die (r, c) is row r + 2. An all-reduce of [0, 1, 4, 5] loads
    the 0-1 link of both wafers with its on-wafer phases (reduce-scatter, all-gather: n/2 each way on a
    pair); an all-to-all on wafer 1 alone loads only wafer 1's rows, as on a single wafer."""
    target = two_wafers()
    n = 1e9
    loads = link_loads(target, "all_reduce", n, [[0, 1, 2, 3]], [0, 1, 4, 5])
    pair = mesh_collective(target, "reduce_scatter", n, [[0, 1]])[2]
    pair = {k: v + mesh_collective(target, "all_gather", n, [[0, 1]])[2].get(k, 0) for k, v in pair.items()}
    assert pair and loads == {**pair, **{(r + 2, c, r2 + 2, c2): b for (r, c, r2, c2), b in pair.items()}}
    alone = mesh_collective(target, "all_to_all", n, [[0, 1, 2, 3]])[2]
    assert link_loads(target, "all_to_all", n, [[0, 1, 2, 3]], [4, 5, 6, 7]) == {
        (r + 2, c, r2 + 2, c2): b for (r, c, r2, c2), b in alone.items()}
