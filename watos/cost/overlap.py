"""Communication that overlaps compute: what stays exposed, and what the overlap costs the compute.

Overlap is modelled, not assumed free. A collective that overlaps a window of compute is hidden up to the
length of the window and exposed beyond it; one a stack does not overlap is exposed whole. Hidden
communication still shares the device with the compute under it (its kernels take SMs and memory
bandwidth: Megatron-Core's userbuffers reserve SMs for communication, NCCL's kernels contend for HBM), so
the overlapped compute slows by ``contention`` seconds per second of communication hidden under it — the
stack's factor. FSDP and ZeRO-3 prefetch a layer's parameter all-gather under the layer before it: with a
prefetch depth of 0 every gather is exposed, with any depth the first layer's gather still is (nothing
runs before it to hide it).
"""
from __future__ import annotations

from typing import NamedTuple


class Exposure(NamedTuple):
    """Seconds of a collective left on the critical path, and hidden under compute."""

    exposed: float
    hidden: float


def under(comm: float, window: float, overlapped: bool = True) -> Exposure:
    """A collective of ``comm`` seconds under ``window`` seconds of compute (exposed whole if not overlapped)."""
    if not overlapped:
        return Exposure(comm, 0.0)
    exposed = max(0.0, comm - window)
    return Exposure(exposed, comm - exposed)


def hidden_fraction(comm: float, fraction: float) -> Exposure:
    """A collective whose ``fraction`` the GEMMs it feeds hide (TP communication overlap: userbuffers, async TP)."""
    return Exposure(comm * (1 - fraction), comm * fraction)


def prefetched(comm: float, window: float, first_gather: float, depth: int) -> Exposure:
    """Per-layer parameter all-gathers and gradient reduce-scatters (ZeRO 2/3, FSDP) of ``comm`` seconds under
    ``window`` seconds of compute, prefetched ``depth`` layers ahead; ``first_gather``: the first layer's
    gather, which no compute hides."""
    if depth == 0:
        return Exposure(comm, 0.0)
    rest = under(comm - first_gather, window)
    return Exposure(first_gather + rest.exposed, rest.hidden)


def contention(hidden: float, factor: float) -> float:
    """Seconds the compute under ``hidden`` seconds of communication loses (the stack's contention factor)."""
    return factor * hidden
