"""Collective communication time on a target's network.

Switched networks (GPU nodes joined by a fabric) use the α-β model per tier: a collective over a group
that spans several fast domains runs hierarchically, one phase per tier, each phase moving its share of the
bytes over that tier's per-device bandwidth (Thakur et al. 2005 ring algorithms; NCCL's hierarchical
all-reduce). A mesh, mesh-switch or torus is a graph (:mod:`watos.network.topology`): a collective is
embedded on it (:mod:`watos.network.embeddings`: rings, bidirectional rings, 2D and torus rings, direct
all-to-all, through a switch or reduced in it), every hop routed (:mod:`watos.network.routing`), the bytes
each directed link carries for *all* groups communicating at once added up, and the busiest link taken:
contention counted, not assumed away. The fastest embedding is kept (see :func:`mesh_collective`). Several
wafers or slices are a tier above their graphs: the phases on each, then the ring between them.

Ring costs, group of g devices, n bytes per device:
  all-reduce 2(g-1)/g·n;  reduce-scatter and all-gather (g-1)/g·n;  all-to-all (g-1)/g·n;  p2p n.
An all-to-all on a switched network moves over each tier the part bound for members that tier reaches
(:func:`_switched_all_to_all`).
"""
from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterator, Sequence
from typing import Literal

from watos.hardware.target import Switched, Target
from watos.network.embeddings import RING_STEPS as _RING_STEPS
from watos.network.embeddings import embeddings
from watos.network.topology import Edge, Network, network_of

Collective = Literal["all_reduce", "reduce_scatter", "all_gather", "all_to_all", "p2p"]

# Fraction of n each device sends in a ring collective, per unit (g-1)/g.
_RING_VOLUME = {"all_reduce": 2.0, "reduce_scatter": 1.0, "all_gather": 1.0, "all_to_all": 1.0}


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
    return max((mesh_collective(target, op, nbytes, local, system=wafer)[0] for wafer, local in _wafer_calls(parts)),
               default=0.0)


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
            for (r, c, r2, c2), b in mesh_collective(target, inner_op, nbytes, local, system=wafer)[2].items():
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


Link = tuple[int, ...]  # a directed link between neighbouring devices, by their coordinates (r1, c1, r2, c2)


def mesh_collective(target: Target, op: Collective, nbytes: float, groups: list[list[int]],
                    placement: Sequence[int] | None = None, system: int = 0) -> tuple[float, str, dict[Link, float]]:
    """Seconds, the embedding chosen, and the bytes each directed device-to-device link carries (by the
    coordinates of its ends), for ``op`` run at once by every group on the graph of a mesh, mesh-switch or
    torus target (wafer or slice ``system``). ``placement[rank]`` is the die a rank runs on (default: die =
    rank). The fastest embedding of :mod:`watos.network.embeddings` is used, as NCCL picks an algorithm; a
    phase takes its busiest link's bytes over that link's rate plus steps x the longest route's latency."""
    net = network_of(target, system)
    per = target.devices_per_system
    dies = tuple(tuple((placement[r] if placement is not None else r) % per for r in g) for g in groups)
    seconds, name, loads = graph_collective(net, op, nbytes, dies)
    return seconds, name, {net.coords[a] + net.coords[b]: v for (a, b), v in loads.items()
                           if a in net.coords and b in net.coords}


def graph_collective(net: Network, op: Collective, nbytes: float,
                     groups: tuple[tuple[int, ...], ...]) -> tuple[float, str, dict[Edge, float]]:
    """Seconds, the embedding chosen, and the bytes per directed link (switch ports included) of ``op`` run
    at once by ``groups`` of devices of ``net``."""
    options = {name: sum(p.per_byte * nbytes + p.fixed for p in phases)
               for name, phases in embeddings(net, op, groups).items()}
    name = min(options, key=lambda k: (options[k], k))
    load: dict[Edge, float] = defaultdict(float)
    for p in embeddings(net, op, groups)[name]:
        for link, share in p.loads:
            load[link] += share * nbytes
    return options[name], name, dict(load)
