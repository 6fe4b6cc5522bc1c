"""Random fault maps drawn on a target's network, and whether a map leaves the network in one piece.

A seeded map kills every die with probability ``dies`` and every die-to-die link (an unordered pair of
neighbouring dies of one wafer) with probability ``links``, independently (the WATOS paper's §VI-D fault
model: die and link fault rates). ``--faults dies=0.2,links=0.2`` is parsed by :func:`parse_rates`. A
working die whose links are all dead, or that sits in a fragment cut off from the rest of its wafer, is lost
as well (:func:`surviving`).
"""
from __future__ import annotations

import random

import networkx as nx

from watos.errors import WatosError
from watos.hardware.faults import FaultMap
from watos.hardware.target import Target
from watos.network.topology import network_of


def parse_rates(text: str) -> tuple[float, float]:
    """``dies=0.2,links=0.1`` → (0.2, 0.1); a missing key is 0; errors name the bad part."""
    rates = {"dies": 0.0, "links": 0.0}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, _, value = part.partition("=")
        if key not in rates or not value:
            raise WatosError(f"--faults: {part!r} is not dies=RATE or links=RATE")
        try:
            rates[key] = float(value)
        except ValueError:
            raise WatosError(f"--faults: {key}={value!r} is not a number") from None
        if not 0 <= rates[key] < 1:
            raise WatosError(f"--faults: {key}={value} is not a rate in [0, 1)")
    return rates["dies"], rates["links"]


def random_faults(target: Target, dies: float, links: float, seed: int) -> FaultMap:
    """A fault map of the target's dies and die-to-die links, drawn with ``seed`` (module docstring)."""
    rng = random.Random(seed)
    per, wafers = target.devices_per_system, target.wafers
    pairs = sorted((a, b) for a, b in network_of(target.model_copy(update={"faults": None})).graph.edges
                   if a < b < per)
    dead = [d for d in range(per * wafers) if rng.random() < dies]
    cut = [(w * per + a, w * per + b) for w in range(wafers) for a, b in pairs if rng.random() < links]
    return FaultMap(dead_dies=dead, dead_links=cut)


def surviving(target: Target) -> tuple[FaultMap, bool]:
    """The fault map with every working die cut off from its wafer's largest connected part added to the
    dead ones (it cannot take part), and whether the map *disconnects* the wafer: its largest part holds
    fewer than half of the dies that work."""
    faults = target.faults or FaultMap()
    lost, split = set(faults.dead_dies), False
    per = target.devices_per_system
    for w in range(target.wafers):
        net = network_of(target, w)
        parts = sorted(nx.connected_components(net.graph.to_undirected(as_view=True)), key=lambda c: (-len(c), min(c)))
        largest = {d for d in parts[0] if d in net.coords} if parts else set()
        lost |= {w * per + d for d in net.coords if d not in largest}
        split |= 2 * len(largest) < len(net.coords)
    kept_links = [(a, b) for a, b in faults.dead_links if a not in lost and b not in lost]
    degraded = {d: f for d, f in faults.degraded.items() if d not in lost}
    return FaultMap(dead_dies=sorted(lost), dead_links=kept_links, degraded=degraded), split
