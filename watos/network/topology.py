"""A target's network as one explicit graph: devices, switches and directed links.

Nodes are integers: devices (dies, chips) ``0 .. devices−1`` in row-major order of their coordinates (the
last coordinate fastest, so die ``r·cols + c`` of a mesh sits at ``(r, c)``), then the switches. Every
directed edge carries ``rate``, the bytes per second a collective reaches on it (link bandwidth per direction
x links per edge x the target's network efficiency), and ``latency`` in seconds. Generators:

* :func:`grid`: a 2D mesh (``mesh2d``) or a 2D/3D torus (``torus``: every dimension wraps round);
* :func:`add_block_switches`: a switch die per k x k block of a mesh (``mesh_switch``, FRED-style), each
  die with a port to its block's switch and neighbouring switches linked;
* :func:`network_of`: the graph of one wafer or slice of a target, its fault map applied (dead dies and
  links removed). Several wafers or slices are tiers above it (:mod:`watos.network.collectives`); a switched
  target's tiers are costed per tier, α-β.

A graph that is *regular and whole* (a mesh or torus without faults) is routed dimension-order; any
other by the up*/down* turn model (:mod:`watos.network.routing`).
"""
from __future__ import annotations

import itertools
import math
from collections import OrderedDict
from dataclasses import dataclass, field

import networkx as nx

from watos.hardware.faults import FaultMap
from watos.hardware.target import Mesh2D, MeshSwitch, Target, Torus

Coord = tuple[int, ...]
Edge = tuple[int, int]


@dataclass(eq=False)
class Network:
    """One system's network (see module docstring). ``coords[device]``: its grid coordinates; ``wrap``:
    every dimension wraps round (a torus); ``regular``: the whole grid, dimension-order routable;
    ``switch_of[device]``: the switch its port reaches (mesh-switch); ``in_network_reduction``: those
    switches reduce. ``routes`` caches :func:`watos.network.routing.route`."""

    graph: nx.DiGraph
    shape: Coord
    coords: dict[int, Coord]
    wrap: bool = False
    regular: bool = True
    switch_of: dict[int, int] = field(default_factory=dict)
    in_network_reduction: bool = False
    routes: dict[Edge, tuple[Edge, ...]] = field(default_factory=dict, repr=False)

    def device(self, coord: Coord) -> int:
        """The device at grid coordinates ``coord``."""
        return index_of(coord, self.shape)

    @property
    def devices(self) -> list[int]:
        """The working devices."""
        return sorted(self.coords)

    def rate(self, edge: Edge) -> float:
        """Bytes per second a collective reaches on a directed link."""
        return self.graph.edges[edge]["rate"]

    def latency(self, edge: Edge) -> float:
        """Seconds a message takes to cross a directed link."""
        return self.graph.edges[edge]["latency"]

    def connected(self) -> bool:
        """Whether every working device reaches every other."""
        return nx.is_strongly_connected(self.graph) if self.graph else True


def index_of(coord: Coord, shape: Coord) -> int:
    """Row-major index of ``coord`` in a grid of ``shape`` (the last coordinate fastest)."""
    index = 0
    for x, size in zip(coord, shape):
        index = index * size + x
    return index


def grid(shape: Coord, rate: float, latency: float, wrap: bool = False) -> Network:
    """A mesh (``wrap`` False: a die links to its neighbours along every dimension) or a torus (``wrap``:
    the last die of every line also links to the first). A dimension of 2 has one link per direction."""
    graph = nx.DiGraph()
    coords = {index_of(c, shape): c for c in itertools.product(*(range(n) for n in shape))}
    graph.add_nodes_from(sorted(coords))
    for c in coords.values():
        for dim, size in enumerate(shape):
            if size < 2 or (c[dim] == size - 1 and not (wrap and size > 2)):
                continue
            neighbour = c[:dim] + ((c[dim] + 1) % size,) + c[dim + 1:]
            a, b = index_of(c, shape), index_of(neighbour, shape)
            graph.add_edge(a, b, rate=rate, latency=latency)
            graph.add_edge(b, a, rate=rate, latency=latency)
    return Network(graph, tuple(shape), coords, wrap=wrap)


def add_block_switches(net: Network, block: int, port_rate: float, latency: float, reduce: bool) -> Network:
    """``net`` (a 2D mesh) with a switch per ``block`` x ``block`` block of dies: each die has a port of
    ``port_rate`` each way to its block's switch; switches of neighbouring blocks are linked by ``block``
    ports' worth (``block · port_rate``)."""
    rows, cols = net.shape
    blocks = (math.ceil(rows / block), math.ceil(cols / block))
    first = rows * cols
    graph = net.graph.copy()
    switch_of = {d: first + index_of((r // block, c // block), blocks) for d, (r, c) in net.coords.items()}
    for die, switch in switch_of.items():
        graph.add_edge(die, switch, rate=port_rate, latency=latency)
        graph.add_edge(switch, die, rate=port_rate, latency=latency)
    for a, b in grid(blocks, block * port_rate, latency).graph.edges:
        graph.add_edge(first + a, first + b, rate=block * port_rate, latency=latency)
    return Network(graph, net.shape, net.coords, switch_of=switch_of, in_network_reduction=reduce)


def with_faults(net: Network, faults: FaultMap, offset: int = 0) -> Network:
    """``net`` without the dead dies (global index − ``offset``) and dead links of ``faults``: no longer
    regular, so routed by the turn model; switches stay."""
    dead = {d - offset for d in faults.dead_dies if d - offset in net.coords}
    links = [(a - offset, b - offset) for a, b in faults.dead_links]
    links = [(a, b) for a, b in links if a in net.coords and b in net.coords]
    if not dead and not links:
        return net
    graph = net.graph.copy()
    graph.remove_nodes_from(dead)
    graph.remove_edges_from([e for a, b in links for e in ((a, b), (b, a)) if graph.has_edge(*e)])
    coords = {d: c for d, c in net.coords.items() if d not in dead}
    switch_of = {d: s for d, s in net.switch_of.items() if d not in dead}
    return Network(graph, net.shape, coords, wrap=net.wrap, regular=False, switch_of=switch_of,
                   in_network_reduction=net.in_network_reduction)


_BUILT: OrderedDict[tuple[int, int], tuple[Target, Network]] = OrderedDict()


def network_of(target: Target, system: int = 0) -> Network:
    """The graph of wafer (or slice) ``system`` of a mesh, mesh-switch or torus target, with the target's
    fault map applied (cached per target object)."""
    key = (id(target), system)
    if key in _BUILT and _BUILT[key][0] is target:
        _BUILT.move_to_end(key)
        return _BUILT[key][1]
    topology = target.topology
    efficiency = target.device.efficiency.network
    if isinstance(topology, Torus):
        rate = topology.link_bandwidth_gb_per_s_per_direction * topology.links_per_edge * 1e9 * efficiency
        net = grid(tuple(topology.shape), rate, topology.latency_ns * 1e-9, wrap=True)
    elif isinstance(topology, Mesh2D):
        rate = topology.link_bandwidth_gb_per_s_per_direction * topology.links_per_edge * 1e9 * efficiency
        net = grid((topology.rows, topology.cols), rate, topology.latency_ns * 1e-9)
        if isinstance(topology, MeshSwitch):
            net = add_block_switches(net, topology.switch_block,
                                     topology.switch_bandwidth_gb_per_s_per_direction * 1e9 * efficiency,
                                     topology.switch_latency_ns * 1e-9, topology.in_network_reduction)
    else:
        raise TypeError(f"target {target.name}: a switched network is costed per tier, not as a graph")
    if target.faults is not None:
        net = with_faults(net, target.faults, offset=system * target.devices_per_system)
    _BUILT[key] = (target, net)
    if len(_BUILT) > 256:
        _BUILT.popitem(last=False)
    return net
