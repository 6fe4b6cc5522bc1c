"""Collective communication time on a target's network.

Switched networks (GPU nodes joined by a fabric) use the α-β model per tier: a collective over a group
that spans several fast domains runs hierarchically, one phase per tier, each phase moving its share of the
bytes over that tier's per-device bandwidth (Thakur et al. 2005 ring algorithms; NCCL's hierarchical
all-reduce). A 2D mesh embeds a ring over the group's dies, routes every ring hop with dimension-order (XY)
routing, adds the bytes each directed link carries for *all* groups communicating at once, and takes the
busiest link: contention counted, not assumed away. Rings, bidirectional rings and 2D rings are tried
and the fastest kept (see :func:`mesh_collective`).

Ring costs, group of g devices, n bytes per device:
  all-reduce 2(g-1)/g·n;  reduce-scatter and all-gather (g-1)/g·n;  all-to-all (g-1)/g·n;  p2p n.
An all-to-all on a switched network moves over each tier the part bound for members that tier reaches
(:func:`_switched_all_to_all`).
"""
from __future__ import annotations

import functools
import math
from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import Literal

from watos.hardware.target import Mesh2D, Switched, Target

Collective = Literal["all_reduce", "reduce_scatter", "all_gather", "all_to_all", "p2p"]

# Fraction of n each device sends in a ring collective, per unit (g-1)/g.
_RING_VOLUME = {"all_reduce": 2.0, "reduce_scatter": 1.0, "all_gather": 1.0, "all_to_all": 1.0}
_RING_STEPS = {"all_reduce": 2, "reduce_scatter": 1, "all_gather": 1, "all_to_all": 1}


def collective_time(target: Target, op: Collective, nbytes: float, groups: list[list[int]],
                    placement: Sequence[int] | None = None, copies: int = 1) -> float:
    """Seconds for ``op`` of ``nbytes`` per device, run at once by every group in ``groups``
    (lists of global device ranks; on a mesh, ``placement[rank]`` is the rank's die). All groups are
    assumed to be the same size. ``copies`` > 1: an all-to-all whose rows are ``copies`` copies of each
    token bound for uniformly chosen members, of which a deduplicating dispatcher sends one per device and
    per fast domain (node) reached (:func:`_switched_all_to_all`; switched networks only)."""
    if nbytes <= 0 or not groups or len(groups[0]) < 2:
        return 0.0
    if isinstance(target.topology, Switched):
        if op == "all_to_all":
            return _switched_all_to_all(target, target.topology, nbytes, groups[0], copies)
        return _switched_time(target, target.topology, op, nbytes, groups[0])
    if target.wafers == 1:
        return mesh_collective(target, op, nbytes, groups, placement)[0]
    return _wafers_time(target, op, nbytes, [[placement[r] if placement is not None else r for r in g] for g in groups])


# A collective spanning wafers runs hierarchically: the phases on each wafer's members, then the
# wafer-to-wafer ring, then the rest on each wafer (all-reduce: reduce-scatter, ring, all-gather).
_INNER = {"all_reduce": ("reduce_scatter", "all_gather"), "reduce_scatter": ("reduce_scatter",),
          "all_gather": ("all_gather",), "all_to_all": ("all_to_all",), "p2p": ()}


def _wafers_time(target: Target, op: Collective, nbytes: float, dies: list[list[int]]) -> float:
    """Groups of dies (global ids, wafer = die // dies per wafer) on several wafers in a ring: each
    wafer's part of every group on its mesh (all wafers at once), and for groups that span wafers the
    wafer-to-wafer phase, whose busiest boundary carries, per spanning group, 2(w−1)/w·n (all-reduce:
    every member's 1/k share of n, k members per wafer, round a ring of w wafers), (w−1)/w·n
    (reduce-scatter, all-gather), a member's off-wafer blocks k(g−k)/g·n split over both directions
    (all-to-all), or n per pair crossing it (p2p)."""
    parts, inner_ops = _on_each_wafer(target, op, dies)
    spanning = [p for p in parts if len(p) > 1]
    inner = sum(_on_wafers(target, inner_op, nbytes, parts) for inner_op in inner_ops)
    if not spanning:
        return inner
    link = target.systems
    g, w = len(dies[0]), max(len(p) for p in spanning)
    k = max(len(m) for p in spanning for m in p.values())
    if op == "p2p":
        crossings: dict[tuple[int, int], int] = defaultdict(int)
        for p in spanning:
            crossings[tuple(sorted(p))] += 1
        crossing, steps = max(crossings.values()) * nbytes, 1
        inner = _on_wafers(target, op, nbytes, [p for p in parts if len(p) == 1])
    elif op == "all_to_all":
        crossing, steps = len(spanning) * k * (g - k) / g * nbytes / 2, 1
    else:
        crossing, steps = len(spanning) * _RING_VOLUME[op] * (w - 1) / w * nbytes, _RING_STEPS[op] * (w - 1)
    bandwidth = link.bandwidth_gb_per_s_per_direction * 1e9 * target.device.efficiency.network
    across = crossing / bandwidth + steps * link.latency_us * 1e-6
    return max(inner, across) if op == "p2p" else inner + across


def _on_each_wafer(target: Target, op: Collective, dies: list[list[int]]) -> tuple[list[dict[int, list[int]]], tuple]:
    """Every group's members on each wafer, and the collectives those parts run on their wafers: ``op``
    itself, or its on-wafer phases (:data:`_INNER`) when some group spans wafers."""
    parts = [_by_wafer(g, target.devices_per_system) for g in dies]
    return parts, _INNER[op] if any(len(p) > 1 for p in parts) else (op,)


def _by_wafer(dies: list[int], per: int) -> dict[int, list[int]]:
    """A group's members on each wafer, as dies of that wafer."""
    members: dict[int, list[int]] = defaultdict(list)
    for die in dies:
        members[die // per].append(die % per)
    return dict(members)


def _on_wafers(target: Target, op: Collective, nbytes: float, parts: list[dict[int, list[int]]]) -> float:
    """Every group's part on each wafer, run at once (same-sized parts per call), the slowest wafer."""
    return max((mesh_collective(target, op, nbytes, local)[0] for _, local in _wafer_calls(parts)), default=0.0)


def _wafer_calls(parts: list[dict[int, list[int]]]) -> Iterator[tuple[int, list[list[int]]]]:
    """(wafer, the same-sized parts of groups on it) for every mesh collective the wafers run at once."""
    calls: dict[tuple[int, int], list[list[int]]] = defaultdict(list)
    for p in parts:
        for wafer, members in p.items():
            if len(members) > 1:
                calls[(wafer, len(members))].append(members)
    return ((wafer, local) for (wafer, _), local in calls.items())


def link_loads(target: Target, op: Collective, nbytes: float, groups: list[list[int]],
               placement: Sequence[int]) -> dict[Link, float]:
    """Bytes each directed die-to-die link carries for ``op`` run at once by every group (ranks placed on
    dies by ``placement``), on one wafer or on each wafer of several (rows of wafer w offset by w·rows, as
    the wafers are drawn stacked); the wafer-to-wafer phase of a spanning group is not on a D2D link."""
    if target.wafers == 1:
        return mesh_collective(target, op, nbytes, groups, placement)[2]
    rows = target.topology.rows
    parts, inner_ops = _on_each_wafer(target, op, [[placement[r] for r in g] for g in groups])
    load: dict[Link, float] = defaultdict(float)
    for inner_op in inner_ops:
        for wafer, local in _wafer_calls(parts):
            for (r, c, r2, c2), b in mesh_collective(target, inner_op, nbytes, local)[2].items():
                load[(r + wafer * rows, c, r2 + wafer * rows, c2)] += b
    return dict(load)


def _switched_time(target: Target, net: Switched, op: Collective, nbytes: float, group: list[int]) -> float:
    """Hierarchical α-β: one phase per tier the group spans, innermost first."""
    default = target.device.efficiency.network
    if op == "p2p":
        tier = _tier_between(net, group[0], group[1])
        return tier.latency_us * 1e-6 + nbytes / (tier.bandwidth_gb_per_s_per_direction * 1e9
                                                  * (tier.efficiency or default))
    total, remaining, share = 0.0, len(group), nbytes
    for index, tier in enumerate(net.tiers):
        domain = tier.size or len(group)
        inside = _members_per_domain(group, domain) if index < len(net.tiers) - 1 else remaining
        inside = min(inside, remaining)
        if inside > 1:
            volume = _RING_VOLUME[op] * (inside - 1) / inside * share
            total += volume / (tier.bandwidth_gb_per_s_per_direction * 1e9 * (tier.efficiency or default))
            total += _RING_STEPS[op] * (inside - 1) * tier.latency_us * 1e-6
            if op in ("all_reduce", "reduce_scatter", "all_gather"):
                share /= inside  # the next tier moves only this domain's share
            remaining = math.ceil(remaining / inside)
        if remaining <= 1:
            break
    return total


def _switched_all_to_all(target: Target, net: Switched, nbytes: float, group: list[int], copies: int) -> float:
    """An all-to-all over the tiers of a switched network. Of a device's n bytes, 1/g goes to every member;
    the part bound for the m_i − m_(i−1) members inside its tier-i domain but outside its tier-(i−1) one
    crosses tier i: n·(m_i − m_(i−1))/g. With ``copies`` = k rows per token and deduplication, a token crosses
    tier i once per tier-(i−1) domain that one of its k uniformly routed rows reaches:
    (n/k)·(m_i − m_(i−1))/m_(i−1)·(1 − (1 − m_(i−1)/g)^k) (k = 1 gives the first form)."""
    default, g, inner, total = target.device.efficiency.network, len(group), 1, 0.0
    for index, tier in enumerate(net.tiers):
        last = index == len(net.tiers) - 1 or tier.size is None
        members = g if last else min(_members_per_domain(group, tier.size), g)
        if members > inner:
            reached = 1 - (1 - inner / g) ** copies
            volume = nbytes / copies * (members - inner) / inner * reached
            total += volume / (tier.bandwidth_gb_per_s_per_direction * 1e9 * (tier.efficiency or default))
            total += (math.ceil(members / inner) - 1) * tier.latency_us * 1e-6
            inner = members
        if inner >= g:
            break
    return total


def _members_per_domain(group: list[int], domain: int) -> int:
    counts: dict[int, int] = defaultdict(int)
    for rank in group:
        counts[rank // domain] += 1
    return max(counts.values())


def _tier_between(net: Switched, a: int, b: int):
    for tier in net.tiers:
        if tier.size is None or a // tier.size == b // tier.size:
            return tier
    return net.tiers[-1]


Link = tuple[int, int, int, int]  # directed mesh link (r1, c1, r2, c2) between neighbours


def mesh_collective(target: Target, op: Collective, nbytes: float, groups: list[list[int]],
                    placement: Sequence[int] | None = None) -> tuple[float, str, dict[Link, float]]:
    """Seconds, the embedding chosen, and the bytes each directed link carries, for ``op`` run at once
    by every group on a mesh. ``placement[rank]`` is the die (row-major index) a rank runs on (default:
    die = rank). Rings follow a cycle through the group's dies (a Hamiltonian cycle of a rectangle where
    one exists); the fastest of three embeddings is used, as NCCL picks an algorithm:

    * ``ring``: one direction, 2(g-1) steps of n/g for all-reduce (g-1 for the others);
    * ``bidirectional``: half the bytes each way round the ring (TEMP/WATOS's bidirectional ring);
    * ``2d`` (all-reduce of a full rectangle): reduce-scatter along rows, all-reduce of the row's share
      along columns, all-gather along rows;
    * ``direct`` (all-to-all): every die sends n/g to every other over its XY route, all at once.

    A phase takes steps · (busiest link's bytes per step / link bandwidth + longest route · latency)."""
    mesh = target.topology
    assert isinstance(mesh, Mesh2D)
    dies = mesh.rows * mesh.cols
    coords = tuple(tuple(divmod((placement[r] if placement is not None else r) % dies, mesh.cols) for r in g)
                   for g in groups)
    bandwidth = mesh.link_bandwidth_gb_per_s_per_direction * mesh.links_per_edge * 1e9 * target.device.efficiency.network
    latency = mesh.latency_ns * 1e-9
    options = {name: sum(steps * (busiest * nbytes / bandwidth + longest * latency)
                         for steps, _, busiest, longest in phases)
               for name, phases in _embeddings(op, coords).items()}
    name = min(options, key=lambda k: (options[k], k))
    load: dict[Link, float] = defaultdict(float)
    for steps, links, _, _ in _embeddings(op, coords)[name]:
        for link, share in links:
            load[link] += steps * share * nbytes
    return options[name], name, dict(load)


CollectivePhase = tuple[int, tuple[tuple[Link, float], ...], float, int]  # steps, share of n per link, busiest, hops


@functools.lru_cache(maxsize=4096)
def _embeddings(op: Collective, coords: tuple[tuple[tuple[int, int], ...], ...]) -> dict[str, tuple[CollectivePhase, ...]]:
    """The ways to run ``op`` over groups of dies, each a sequence of phases whose link loads are
    fractions of the per-device bytes n: geometry only, so cached across bandwidths and sizes."""
    if op == "p2p":
        return {"p2p": (_phase([((c[0], c[1]), 1.0) for c in coords], 1, closed=False),)}
    g = len(coords[0])
    steps = _RING_STEPS[op] * (g - 1)
    rings = [_cycle(list(c)) for c in coords]
    # Per ring step each die forwards n/g (reductions, gathers); in a ring all-to-all the block for the
    # k-th next die travels k hops, so a step forwards n/2 on average (n(g-1)/2 in all).
    chunk = 1 / 2 if op == "all_to_all" else 1 / g
    options = {"ring": (_phase([(r, chunk) for r in rings], steps),),
               "bidirectional": (_phase([(r, chunk / 2) for r in rings] + [(r[::-1], chunk / 2) for r in rings],
                                        steps),)}
    if op == "all_to_all":  # every die sends n/g straight to every other, all routes at once
        options["direct"] = (_phase([((a, b), 1 / g) for c in coords for a in c for b in c if a != b], 1,
                                    closed=False),)
    grids = [_rectangle(list(c)) for c in coords]
    if op == "all_reduce" and all(grids) and min(len(grids[0]), len(grids[0][0])) > 1:
        rows = [_cycle(row) for grid in grids for row in grid]
        cols = [_cycle(list(col)) for grid in grids for col in zip(*grid)]
        a, b = len(grids[0]), len(grids[0][0])
        along_rows = _phase([(r, 1 / b) for r in rows], b - 1)
        options["2d"] = (along_rows, _phase([(c, 1 / (a * b)) for c in cols], 2 * (a - 1)), along_rows)
    return options


def _phase(flows: list[tuple[Sequence[tuple[int, int]], float]], steps: int, closed: bool = True) -> CollectivePhase:
    """``steps`` times, every die of every ring sends its share of n to the next die, all rings at once
    (``closed``: the last die sends to the first)."""
    load: dict[Link, float] = defaultdict(float)
    longest = 0
    for ring, share in flows:
        ring = list(ring)
        pairs = zip(ring, ring[1:] + ring[:1]) if closed else zip(ring, ring[1:])
        for src, dst in pairs:
            hops = route_xy(src, dst)
            longest = max(longest, len(hops))
            for link in hops:
                load[link] += share
    return steps, tuple(sorted(load.items())), max(load.values(), default=0.0), longest


def _rectangle(coords: list[tuple[int, int]]) -> list[list[tuple[int, int]]] | None:
    """The group's dies as rows of a full rectangle, or None when they do not fill one."""
    rows, cols = sorted({r for r, _ in coords}), sorted({c for _, c in coords})
    full = (len(rows) * len(cols) == len(coords) and rows == list(range(rows[0], rows[-1] + 1))
            and cols == list(range(cols[0], cols[-1] + 1)) and len(set(coords)) == len(coords))
    return [[(r, c) for c in cols] for r in rows] if full else None


def _cycle(coords: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """A ring order through the dies: a Hamiltonian cycle when they fill a rectangle with an even side
    (every ring hop then crosses one link), else their given order."""
    grid = _rectangle(coords)
    if grid is None or len(grid) < 2 or len(grid[0]) < 2:
        return list(coords)
    if len(grid) % 2:  # an odd number of rows: walk the columns instead
        grid = [list(col) for col in zip(*grid)]
    first = [row[0] for row in grid]  # the way back up the first column
    body = [(row[1:] if i % 2 == 0 else row[1:][::-1]) for i, row in enumerate(grid)]
    return [first[0]] + [d for row in body for d in row] + first[:0:-1]


def route_xy(src: tuple[int, int], dst: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """Directed links (r1, c1, r2, c2) of the dimension-order route: along the row (x) first, then
    the column (y)."""
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
