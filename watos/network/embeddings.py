"""Collectives embedded on a network graph: the phases each way of running a collective takes, and the
bytes every directed link carries in each, as fractions of n (the bytes per device). Geometry only, so
cached per network, collective and groups; :mod:`watos.network.collectives` turns phases into seconds.

Ring costs, group of g devices, n bytes per device (Thakur et al. 2005): all-reduce 2(g−1) steps of n/g,
reduce-scatter and all-gather g−1 steps of n/g; in a ring all-to-all the block for the k-th next device
travels k hops, so a step forwards n/2 on average. The embeddings (all groups run at once, so groups that
share a link contend on it):

* ``ring``: one direction round a cycle through the group (a Hamiltonian cycle of a rectangle of dies where
  one exists; on a torus the fewer-hop of that and the plain order, which closes over the wrap link);
* ``bidirectional``: half the bytes each way round the ring (TEMP/WATOS's bidirectional ring);
* ``2d`` (all-reduce of a full rectangle): reduce-scatter along rows, all-reduce of the row's share along
  columns, all-gather along rows;
* ``torus`` (reductions and gathers over a full box of a torus, two or three dimensions): the data split in
  one part per dimension, part j reducing along the dimensions in the order rotated by j, so every phase
  keeps every dimension's links busy, each line a bidirectional ring (the multi-dimensional all-reduce of
  TPU pods, Ying et al. 2018);
* ``direct`` (all-to-all): every device sends n/g straight to every other over its route, all at once;
* ``switch`` (reductions and gathers of a group on one switch): reduce-scatter and all-gather straight
  through it, (g−1)/g·n up and down each port per phase; ``in_network`` when the switch reduces: every
  member sends n up and receives the reduced n back, one phase (FRED, ISCA'25; SHARP).
* ``p2p``: every pair's route.
"""
from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Sequence
from typing import NamedTuple

from watos.network.routing import route
from watos.network.topology import Edge, Network

RING_STEPS = {"all_reduce": 2, "reduce_scatter": 1, "all_gather": 1, "all_to_all": 1}
_GATHERS = ("all_reduce", "reduce_scatter", "all_gather")


class Phase(NamedTuple):
    """One phase: ``steps`` ring steps; ``loads``: (link, share of n it carries over the phase);
    ``per_byte``: seconds per byte of n on the busiest link (max share / rate); ``fixed``: steps x the
    longest route's latency."""

    steps: int
    loads: tuple[tuple[Edge, float], ...]
    per_byte: float
    fixed: float


Groups = tuple[tuple[int, ...], ...]


@functools.lru_cache(maxsize=4096)
def embeddings(net: Network, op: str, groups: Groups) -> dict[str, tuple[Phase, ...]]:
    """Every way to run ``op`` at once over ``groups`` (devices of ``net``), each a sequence of phases."""
    if op == "p2p":
        return {"p2p": (phase(net, [(g, 1.0) for g in groups], 1, closed=False),)}
    g = len(groups[0])
    steps = RING_STEPS[op] * (g - 1)
    rings = [ring_order(net, list(members)) for members in groups]
    chunk = 1 / 2 if op == "all_to_all" else 1 / g
    options = {"ring": (phase(net, [(r, chunk) for r in rings], steps),),
               "bidirectional": (phase(net, [(r, chunk / 2) for r in rings] + [(r[::-1], chunk / 2) for r in rings],
                                       steps),)}
    if op == "all_to_all":
        options["direct"] = (phase(net, [((a, b), 1 / g) for m in groups for a in m for b in m if a != b], 1,
                                   closed=False),)
    boxes = [box(net, members) for members in groups]
    if op == "all_reduce" and all(b is not None and len(b) == 2 and min(map(len, b.values())) > 1 for b in boxes):
        options["2d"] = _two_d(net, groups, boxes)
    if net.wrap and op in _GATHERS and all(b is not None and len(b) >= 2 for b in boxes):
        options["torus"] = _torus(net, op, groups, boxes)
    if op in _GATHERS and net.switch_of and all(len({net.switch_of[d] for d in m}) == 1 for m in groups):
        options.update(_switch(net, op, groups))
    return options


def phase(net: Network, flows: Sequence[tuple[Sequence[int], float]], steps: int, closed: bool = True) -> Phase:
    """``steps`` times, every device of every ring sends its share of n to the next, all rings at once
    (``closed``: the last device sends to the first)."""
    load: dict[Edge, float] = defaultdict(float)
    longest = 0.0
    for ring, share in flows:
        ring = list(ring)
        pairs = zip(ring, ring[1:] + ring[:1]) if closed else zip(ring, ring[1:])
        for src, dst in pairs:
            hops = route(net, src, dst)
            longest = max(longest, sum(net.latency(link) for link in hops))
            for link in hops:
                load[link] += share
    loads = tuple(sorted((link, steps * share) for link, share in load.items()))
    per_byte = max((share / net.rate(link) for link, share in loads), default=0.0)
    return Phase(steps, loads, per_byte, steps * longest)


def merge(net: Network, parts: Sequence[Phase]) -> Phase:
    """Phases that run at the same time: their link loads add, the longest sets the steps and latency."""
    load: dict[Edge, float] = defaultdict(float)
    for part in parts:
        for link, share in part.loads:
            load[link] += share
    loads = tuple(sorted(load.items()))
    per_byte = max((share / net.rate(link) for link, share in loads), default=0.0)
    return Phase(max(p.steps for p in parts), loads, per_byte, max(p.fixed for p in parts))


def box(net: Network, members: Sequence[int]) -> dict[int, list[int]] | None:
    """The group as a full box of the grid: {dimension that varies: its values in order}, or None when the
    devices do not fill one (every other coordinate equal, every varying one a contiguous range)."""
    coords = [net.coords[d] for d in members]
    if len(set(coords)) != len(coords):
        return None
    values = [sorted({c[dim] for c in coords}) for dim in range(len(net.shape))]
    spans = {dim: v for dim, v in enumerate(values) if len(v) > 1}
    full = all(v == list(range(v[0], v[-1] + 1)) for v in spans.values())
    size = 1
    for v in spans.values():
        size *= len(v)
    return spans if full and size == len(coords) else None


def lines(net: Network, members: Sequence[int], spans: dict[int, list[int]], dim: int) -> list[list[int]]:
    """The box's lines along ``dim``: devices that differ only in that coordinate, in its order."""
    by_rest: dict[tuple, list[tuple[int, int]]] = defaultdict(list)
    for d in members:
        c = net.coords[d]
        by_rest[c[:dim] + c[dim + 1:]].append((c[dim], d))
    return [[d for _, d in sorted(line)] for _, line in sorted(by_rest.items())]


def ring_order(net: Network, members: list[int]) -> list[int]:
    """A cycle through the devices: a Hamiltonian cycle of a 2D box of dies (even side: every ring hop one
    link), else the given order; on a torus the fewer-hop of those and the box in row-major order."""
    spans = box(net, members)
    order = members
    if spans is not None and len(spans) == 2:
        first, second = sorted(spans)
        grid = lines(net, members, spans, second)  # rows: lines along the second varying dimension
        order = _hamiltonian(grid)
    if net.wrap and spans is not None:
        snake = sorted(members, key=lambda d: net.coords[d])
        order = min((order, snake), key=lambda ring: _hops(net, ring))
    return order


def _hops(net: Network, ring: list[int]) -> int:
    return sum(len(route(net, a, b)) for a, b in zip(ring, ring[1:] + ring[:1]))


def _hamiltonian(grid: list[list[int]]) -> list[int]:
    """A cycle through a rectangle of dies given as rows: up the first column, snaking along the rest
    (walking the columns instead when the rows are odd in number)."""
    if len(grid) % 2:
        grid = [list(col) for col in zip(*grid)]
    first = [row[0] for row in grid]  # the way back up the first column
    body = [(row[1:] if i % 2 == 0 else row[1:][::-1]) for i, row in enumerate(grid)]
    return [first[0]] + [d for row in body for d in row] + first[:0:-1]


def _two_d(net: Network, groups: Groups, boxes: list[dict[int, list[int]]]) -> tuple[Phase, ...]:
    """Reduce-scatter along rows, all-reduce the row's share along columns, all-gather along rows."""
    rows, cols = [], []
    for members, spans in zip(groups, boxes):
        first, second = sorted(spans)
        rows += [ring_order(net, row) for row in lines(net, members, spans, second)]
        cols += [ring_order(net, col) for col in lines(net, members, spans, first)]
    a, b = (len(v) for _, v in sorted(boxes[0].items()))
    along_rows = phase(net, [(r, 1 / b) for r in rows], b - 1)
    return along_rows, phase(net, [(c, 1 / (a * b)) for c in cols], 2 * (a - 1)), along_rows


def _torus(net: Network, op: str, groups: Groups, boxes: list[dict[int, list[int]]]) -> tuple[Phase, ...]:
    """One part of n per dimension, each reducing along the dimensions in its rotated order (module
    docstring); phase k of every part runs at once. Reduce-scatter: the phases in order; all-gather: the
    same loads in reverse; all-reduce: both."""
    dims = sorted(boxes[0])
    parts = len(dims)
    reduce = []
    for k in range(parts):
        concurrent = []
        for j in range(parts):
            order = dims[j:] + dims[:j]
            share = 1 / parts
            for done in order[:k]:
                share /= len(boxes[0][done])
            size = len(boxes[0][order[k]])
            flows = [(line, share / size / 2) for members, spans in zip(groups, boxes)
                     for line in lines(net, members, spans, order[k])]
            concurrent.append(phase(net, flows + [(line[::-1], s) for line, s in flows], size - 1))
        reduce.append(merge(net, concurrent))
    if op == "reduce_scatter":
        return tuple(reduce)
    if op == "all_gather":
        return tuple(reversed(reduce))
    return tuple(reduce) + tuple(reversed(reduce))


def _switch(net: Network, op: str, groups: Groups) -> dict[str, tuple[Phase, ...]]:
    """A group on one switch: straight through it (and, where the switch reduces, in the network)."""
    g = len(groups[0])
    members = [d for m in groups for d in m]
    options = {"switch": (_through_port(net, members, (g - 1) / g),) * RING_STEPS[op]}
    if net.in_network_reduction and op == "all_reduce":
        options["in_network"] = (_through_port(net, members, 1.0),)
    return options


def _through_port(net: Network, members: list[int], share: float) -> Phase:
    """Every member sends ``share`` of n up its port to its switch and receives as much back down."""
    load: dict[Edge, float] = {}
    longest = 0.0
    for d in members:
        up, down = (d, net.switch_of[d]), (net.switch_of[d], d)
        load[up] = load[down] = share
        longest = max(longest, net.latency(up) + net.latency(down))
    loads = tuple(sorted(load.items()))
    return Phase(1, loads, max(s / net.rate(link) for link, s in loads), longest)
