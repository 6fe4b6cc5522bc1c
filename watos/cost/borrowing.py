"""Sender/Helper checkpoint storage (the WATOS paper, §Strategy 3): a memory-starved Sender stage keeps
part of its checkpoints in a memory-rich Helper stage's DRAM, over the die-to-die links.

Per micro-batch the borrowed share of a micro-batch's checkpoints goes out in the forward and comes back in
the backward, so a Sender with ``nbytes`` borrowed and ``f`` micro-batches in flight moves 2·nbytes/f per
micro-batch, from each of its dies to its counterpart Helper die, all pairs at once, no faster than the
Helper's DRAM.
"""
from __future__ import annotations

from watos.hardware.target import Target
from watos.network.collectives import collective_time


def checkpoint_traffic(nbytes: float, micro_batches_in_flight: float) -> float:
    """Bytes per micro-batch a Sender's dies move to and from their Helpers for ``nbytes`` borrowed."""
    return 2 * nbytes / micro_batches_in_flight


def checkpoint_transfer_s(target: Target, pipelines: list[list[int]], dies: list[int] | tuple[int, ...],
                          sender: int, helper: int, nbytes: float, micro_batches_in_flight: float) -> float:
    """Seconds per micro-batch for ``nbytes`` of a Sender stage's checkpoints kept by a Helper stage (the
    module docstring); ``pipelines``: the ranks of every pipeline, ``dies``: the die of every rank."""
    traffic = checkpoint_traffic(nbytes, micro_batches_in_flight)
    pairs = [[g[sender], g[helper]] for g in pipelines]
    return max(collective_time(target, "p2p", traffic, pairs, dies), traffic / target.device.dram_bytes_per_s)
