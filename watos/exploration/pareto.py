"""Pareto fronts of a sweep's results.

A point dominates another when it is at least as good on both objectives (higher
``maximize``, lower ``minimize``) and strictly better on one. The front keeps every
point no other point dominates, so points equal on both objectives are all kept, in
input order (drawn by :func:`watos.report.pareto_picture.write_pareto_png`).
"""
from __future__ import annotations

import math


def scored(points: list[dict], maximize: str, minimize: str) -> list[dict]:
    """The points holding a number (not None, not NaN) for both objectives."""
    return [p for p in points if all(p.get(k) is not None and not math.isnan(p[k])
                                     for k in (maximize, minimize))]


def pareto_front(points: list[dict], maximize: str, minimize: str) -> list[dict]:
    """The non-dominated points, by ``minimize`` ascending (ties: ``maximize``
    descending, then input order). Points missing an objective, or holding None or NaN
    for it, are skipped."""
    ranked = sorted(scored(points, maximize, minimize),
                    key=lambda p: (p[minimize], -p[maximize]))
    front: list[dict] = []
    best = -math.inf  # the highest ``maximize`` of the points ranked before
    for p in ranked:
        last = front[-1] if front else {}
        tie = (last.get(minimize), last.get(maximize)) == (p[minimize], p[maximize])
        if p[maximize] > best or tie:
            front.append(p)
        best = max(best, p[maximize])
    return front
