"""The network as a graph: generators, routing (dimension-order, up*/down* around faults), collectives
embedded on tori and switches, checked against hand-computed values and invariants."""
import copy

import pytest

from watos.errors import WatosError
from watos.hardware.target import target_data, target_from_data
from watos.network.collectives import collective_time, graph_collective, mesh_collective
from watos.network.routing import Disconnected, dimension_order, route
from watos.network.topology import grid, network_of

N = 1e9


def _target(kind="mesh2d", rows=4, cols=4, faults=None, **topology):
    """A 4x4 watos-config3-style chip, no latency (so times are bandwidth alone), of the given kind."""
    data = copy.deepcopy(target_data("watos-config3"))
    data["name"] = "test-graph"
    if kind == "torus":
        data["topology"] = {"kind": "torus", "shape": [rows, cols], "link_bandwidth_gb_per_s_per_direction": 1000,
                            "latency_ns": 0}
    else:
        data["topology"].update(kind=kind, rows=rows, cols=cols, latency_ns=0, **topology)
    if faults:
        data["faults"] = faults
    return target_from_data(data, "test")


def _rate(target):
    return 1000e9 * target.device.efficiency.network


def test_a_mesh_and_a_torus_have_the_links_of_their_shape():
    mesh, torus = grid((4, 4), 1.0, 0.0), grid((4, 4), 1.0, 0.0, wrap=True)
    assert mesh.graph.number_of_edges() == 2 * (2 * 4 * 3)  # 24 neighbour pairs, both ways
    assert torus.graph.number_of_edges() == 2 * (2 * 4 * 4)  # every line closes: 32 pairs
    assert torus.graph.has_edge(3, 0) and not mesh.graph.has_edge(3, 0)
    assert grid((4, 4, 4), 1.0, 0.0, wrap=True).graph.out_degree(0) == 6


def test_dimension_order_goes_the_short_way_round_a_torus():
    torus = grid((4, 8), 1.0, 0.0, wrap=True)
    assert dimension_order(torus, 0, 7) == [0, 7]  # (0,0) → (0,7): one hop over the wrap link
    assert dimension_order(torus, 0, 8 * 3 + 2) == [0, 1, 2, 26]  # columns first, then rows the short way


def test_a_ring_all_reduce_on_a_torus_row_uses_the_wrap_link_and_takes_half_the_mesh_time():
    """Row of 4 on a 4x4 mesh: the ring closes back over 3 links, so each direction of every link carries
    one chunk whichever way the ring turns: 2·3 steps · n/4 / rate. On a torus the ring closes over the wrap
    link, so the bidirectional ring sends half each way: half the time."""
    mesh, torus = _target(), _target("torus")
    row = [[0, 1, 2, 3]]
    mesh_time = collective_time(mesh, "all_reduce", N, row)
    torus_time, name, loads = mesh_collective(torus, "all_reduce", N, row)
    assert mesh_time == pytest.approx(6 * N / 4 / _rate(mesh))
    assert torus_time == pytest.approx(mesh_time / 2)
    assert name == "bidirectional"
    assert loads[(0, 3, 0, 0)] == pytest.approx(6 * N / 4 / 2)  # the wrap link carries its share


def test_a_full_torus_reduces_along_both_dimensions_at_once():
    """4x4 torus, all 16: two halves of n, each reduce-scattered along one dimension then the other, every
    line a bidirectional ring: per link 3 steps · (1/2)/4 / 2 = 3/16 n, then 3 · (1/8)/4 / 2 = 3/64 n;
    all-reduce twice that (15/32 n), half the 15/16 n of a bidirectional ring round all 16."""
    torus = _target("torus")
    seconds, name, _ = mesh_collective(torus, "all_reduce", N, [list(range(16))])
    assert name == "torus"
    assert seconds == pytest.approx(15 / 32 * N / _rate(torus))


def test_a_route_around_a_dead_link_takes_the_detour_and_shares_its_links():
    """Link 1–2 of a 4x4 mesh is dead. 0 → 3 goes down a row and back (5 hops, up*/down* from die 0);
    1 → 2 takes the same detour's middle (3 hops), so links 1→5, 5→6 and 6→2 carry both sends: 2n."""
    target = _target(faults={"dead_links": [[1, 2]]})
    net = network_of(target)
    assert not net.regular
    assert route(net, 0, 3) == ((0, 1), (1, 5), (5, 6), (6, 2), (2, 3))
    assert route(net, 1, 2) == ((1, 5), (5, 6), (6, 2))
    seconds, _, loads = graph_collective(net, "p2p", N, ((0, 3), (1, 2)))
    assert {link for link, b in loads.items() if b == 2 * N} == {(1, 5), (5, 6), (6, 2)}
    assert seconds == pytest.approx(2 * N / _rate(target))


def test_up_down_routes_never_turn_up_after_going_down():
    target = _target(faults={"dead_links": [[1, 2], [5, 6], [9, 10]], "dead_dies": [7]})
    net = network_of(target)
    depth = {d: len(route(net, 0, d)) for d in net.devices}  # from the root every route only goes down
    for src in net.devices:
        for dst in net.devices:
            path = route(net, src, dst)
            keys = [(depth[a], a) for a, _ in path] + [(depth[dst], dst)] if path else []
            downs = [b > a for a, b in zip(keys, keys[1:])]
            assert downs == sorted(downs), (src, dst, path)  # ups (False) first, then downs (True)


def test_a_cut_off_die_is_reported():
    target = _target(faults={"dead_links": [[0, 1], [0, 4]]})
    with pytest.raises(Disconnected, match="cut off|disconnected"):
        collective_time(target, "all_reduce", N, [[0, 1, 2, 3]])
    assert not network_of(target).connected()


def test_an_in_network_reduction_halves_the_bytes_through_its_switch():
    """A 4x4 mesh with a switch per 4x4 block (one switch, g = 16 dies on it). Straight through the switch,
    an all-reduce is a reduce-scatter and an all-gather, (g−1)/g·n up and down each port in each: 2(g−1)/g·n.
    Reducing in the switch, every die sends n up and gets n back: g/(2(g−1)) = 8/15 of the bytes, half to
    within 1/(g−1)."""
    plain = _target("mesh_switch", switch_block=4, switch_bandwidth_gb_per_s_per_direction=4000,
                    switch_latency_ns=0)
    reducing = _target("mesh_switch", switch_block=4, switch_bandwidth_gb_per_s_per_direction=4000,
                       switch_latency_ns=0, in_network_reduction=True)
    group = tuple(range(16))
    switch = 16
    _, name, through = graph_collective(network_of(plain), "all_reduce", N, (group,))
    _, reduced_name, inside = graph_collective(network_of(reducing), "all_reduce", N, (group,))
    assert (name, reduced_name) == ("switch", "in_network")
    into = sum(b for (a, s), b in through.items() if s == switch)
    assert into == pytest.approx(16 * 2 * 15 / 16 * N)
    assert sum(b for (a, s), b in inside.items() if s == switch) == pytest.approx(into * 16 / 30)


def test_a_mesh_switch_routes_far_dies_through_the_switch():
    net = network_of(_target("mesh_switch", switch_block=4, switch_bandwidth_gb_per_s_per_direction=1000,
                             switch_latency_ns=0))
    assert route(net, 0, 1) == ((0, 1),)  # neighbours: the mesh link
    assert route(net, 0, 15) == ((0, 16), (16, 15))  # across the block: two ports instead of six links


def test_the_graph_keeps_todays_mesh_results():
    """On a whole mesh the graph routes XY and embeds today's rings: a 2x2 block's all-reduce round its
    4-cycle both ways is 2·3 · (n/4)/2 / rate."""
    target = _target()
    assert collective_time(target, "all_reduce", N, [[0, 1, 4, 5]]) == pytest.approx(3 * N / 4 / _rate(target))


def test_torus_shapes_must_hold_their_chips():
    data = copy.deepcopy(target_data("watos-config3"))
    data["topology"] = {"kind": "torus", "shape": [4, 4], "slice_shapes": {32: [4, 4, 4]},
                        "link_bandwidth_gb_per_s_per_direction": 100, "latency_ns": 0}
    with pytest.raises(WatosError, match="slice_shapes"):
        target_from_data(data, "test")
