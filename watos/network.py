"""Collective communication time on a target's network.

Switched networks (GPU nodes joined by a fabric) use the α-β model per tier: a collective over a group
that spans several fast domains runs hierarchically, one phase per tier, each phase moving its share of the
bytes over that tier's per-device bandwidth (Thakur et al. 2005 ring algorithms; NCCL's hierarchical
all-reduce). A 2D mesh embeds a ring over the group's dies, routes every ring hop with dimension-order (XY)
routing, adds the bytes each directed link carries for *all* groups communicating at once, and takes the
busiest link: contention counted, not assumed away.

Ring costs, group of g devices, n bytes per device:
  all-reduce 2(g-1)/g·n;  reduce-scatter and all-gather (g-1)/g·n;  all-to-all (g-1)/g·n;  p2p n.
"""
from __future__ import annotations

import math
from collections import defaultdict
from typing import Literal

from .hardware import Mesh2D, Switched, Target

Collective = Literal["all_reduce", "reduce_scatter", "all_gather", "all_to_all", "p2p"]

# Fraction of n each device sends in a ring collective, per unit (g-1)/g.
_RING_VOLUME = {"all_reduce": 2.0, "reduce_scatter": 1.0, "all_gather": 1.0, "all_to_all": 1.0}
_RING_STEPS = {"all_reduce": 2, "reduce_scatter": 1, "all_gather": 1, "all_to_all": 1}


def collective_time(target: Target, op: Collective, nbytes: float, groups: list[list[int]]) -> float:
    """Seconds for ``op`` of ``nbytes`` per device, run at once by every group in ``groups``
    (lists of global device ranks). All groups are assumed to be the same size."""
    if nbytes <= 0 or not groups or len(groups[0]) < 2:
        return 0.0
    if isinstance(target.topology, Switched):
        return _switched_time(target, target.topology, op, nbytes, groups[0])
    return _mesh_time(target, target.topology, op, nbytes, groups)


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


def _mesh_time(target: Target, mesh: Mesh2D, op: Collective, nbytes: float, groups: list[list[int]]) -> float:
    """Rings embedded on the mesh (ranks placed row-major unless a placement says otherwise)."""
    dies = mesh.rows * mesh.cols
    load: dict[tuple[int, int, int, int], int] = defaultdict(int)
    longest = 0
    for group in groups:
        coords = [divmod(rank % dies, mesh.cols) for rank in group]
        pairs = [(coords[0], coords[1])] if op == "p2p" else list(zip(coords, coords[1:] + coords[:1]))
        for src, dst in pairs:
            hops = route_xy(src, dst)
            longest = max(longest, len(hops))
            for link in hops:
                load[link] += 1
    busiest = max(load.values(), default=1)
    bandwidth = mesh.link_bandwidth_gb_per_s_per_direction * mesh.links_per_edge * 1e9
    bandwidth *= target.device.efficiency.network
    g = len(groups[0])
    if op == "p2p":
        return busiest * nbytes / bandwidth + longest * mesh.latency_ns * 1e-9
    steps = _RING_STEPS[op] * (g - 1)
    chunk = nbytes / g
    return steps * (busiest * chunk / bandwidth + longest * mesh.latency_ns * 1e-9)


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
