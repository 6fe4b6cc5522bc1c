"""Routes on a network graph: the directed links a message from one device to another crosses.

* A regular, whole mesh or torus routes **dimension-order**: the last coordinate first (along a mesh's row,
  x, then its column, y), each dimension the short way round on a torus (ties: upwards). Dimension-order
  routing is deadlock-free on a mesh and, with the usual two virtual channels per ring, on a torus
  (Dally & Seitz 1987). A mesh with switch dies takes the switch when that is fewer hops (ties: the mesh).
* Any other graph (dies or links dead) routes by the **up*/down*** turn model (Schroeder et al., Autonet,
  1991): a breadth-first tree from the lowest working device (of the largest connected part) orders the
  nodes (depth, then index); a link is *up* when it leads to an earlier node; a legal route takes up links,
  then only down links, which breaks every cycle of channel dependencies, so the routes are deadlock-free
  on any connected graph.
  The route is the shortest legal one (ties: the lowest nodes first).
"""
from __future__ import annotations

import functools
from collections import deque

import networkx as nx

from watos.errors import WatosError
from watos.network.topology import Edge, Network


class Disconnected(WatosError):
    """Two working devices that must communicate have no route between them."""


def route(net: Network, src: int, dst: int) -> tuple[Edge, ...]:
    """The directed links from device ``src`` to device ``dst`` (see module docstring; cached on ``net``)."""
    key = (src, dst)
    if key not in net.routes:
        if src == dst:
            net.routes[key] = ()
        elif net.regular:
            path = dimension_order(net, src, dst)
            if net.switch_of:
                via = nx.shortest_path(net.graph.subgraph(set(net.switch_of.values())), net.switch_of[src],
                                       net.switch_of[dst])
                if len(via) + 1 < len(path) - 1:
                    path = [src, *via, dst]
            net.routes[key] = tuple(zip(path, path[1:]))
        else:
            net.routes[key] = up_down(net, src, dst)
    return net.routes[key]


def dimension_order(net: Network, src: int, dst: int) -> list[int]:
    """The nodes of the dimension-order route (module docstring)."""
    here, goal = list(net.coords[src]), net.coords[dst]
    path = [src]
    for dim in reversed(range(len(here))):
        size = net.shape[dim]
        forward = (goal[dim] - here[dim]) % size
        backward = (here[dim] - goal[dim]) % size
        if net.wrap:
            step = 1 if forward <= backward else -1
        else:
            step = 1 if goal[dim] > here[dim] else -1
        while here[dim] != goal[dim]:
            here[dim] = (here[dim] + step) % size
            path.append(net.device(tuple(here)))
    return path


def route_xy(src: tuple[int, int], dst: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """Directed links (r1, c1, r2, c2) of the dimension-order route on a whole 2D mesh, by coordinates:
    along the row (x) first, then the column (y)."""
    (r, c), (r2, c2) = src, dst
    links = []
    while c != c2:
        step = 1 if c2 > c else -1
        links.append((r, c, r, c + step))
        c += step
    while r != r2:
        step = 1 if r2 > r else -1
        links.append((r, c, r + step, c))
        r += step
    return links


def up_down(net: Network, src: int, dst: int) -> tuple[Edge, ...]:
    """The shortest up*/down* route (module docstring); :class:`Disconnected` when there is none."""
    order = _order(net)
    if src not in order or dst not in order:
        raise Disconnected(f"faults: device {src if src not in order else dst} is cut off from the network")
    start = (src, False)  # (node, a down link already taken)
    parent: dict[tuple[int, bool], tuple[int, bool] | None] = {start: None}
    queue = deque([start])
    while queue:
        node, down = queue.popleft()
        if node == dst:
            hops: list[Edge] = []
            state = (node, down)
            while parent[state] is not None:
                previous = parent[state]
                hops.append((previous[0], state[0]))
                state = previous
            return tuple(reversed(hops))
        for nxt in sorted(net.graph.successors(node), key=order.get):
            going_down = order[nxt] > order[node]
            if down and not going_down:
                continue
            state = (nxt, down or going_down)
            if state not in parent:
                parent[state] = (node, down)
                queue.append(state)
    raise Disconnected(f"faults: devices {src} and {dst} are disconnected")


@functools.lru_cache(maxsize=256)
def _order(net: Network) -> dict[int, tuple[int, int]]:
    """(depth in the breadth-first tree from the lowest working device of the largest connected part,
    index) of every node it reaches."""
    undirected = net.graph.to_undirected(as_view=True)
    part = max(nx.connected_components(undirected), key=lambda c: (len(c), -min(c)))
    depth = nx.single_source_shortest_path_length(undirected, min(d for d in part if d in net.coords))
    return {node: (d, node) for node, d in depth.items()}
