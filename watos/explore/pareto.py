"""Pareto fronts of a sweep's results, and their picture.

A point dominates another when it is at least as good on both objectives (higher
``maximize``, lower ``minimize``) and strictly better on one. The front keeps every
point no other point dominates, so points equal on both objectives are all kept, in
input order. Only :func:`write_pareto_png` needs matplotlib, and imports it when called.
"""
from __future__ import annotations

import math
from pathlib import Path


def _scored(points: list[dict], maximize: str, minimize: str) -> list[dict]:
    """The points holding a number (not None, not NaN) for both objectives."""
    return [p for p in points if all(p.get(k) is not None and not math.isnan(p[k])
                                     for k in (maximize, minimize))]


def pareto_front(points: list[dict], maximize: str, minimize: str) -> list[dict]:
    """The non-dominated points, by ``minimize`` ascending (ties: ``maximize``
    descending, then input order). Points missing an objective, or holding None or NaN
    for it, are skipped."""
    ranked = sorted(_scored(points, maximize, minimize),
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


def write_pareto_png(points: list[dict], fronts: list[tuple[str, str]],
                     path: str | Path, title: str = "") -> None:
    """A PNG with a panel per ``(maximize, minimize)`` pair of ``fronts``: every point
    as a grey dot, the front as a coloured line with markers (x: ``minimize``, y:
    ``maximize``). The same arguments give the same bytes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5 * len(fronts), 4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(fronts), squeeze=False)[0]
    for i, (maximize, minimize) in enumerate(fronts):
        scored = _scored(points, maximize, minimize)
        front = pareto_front(scored, maximize, minimize)
        axes[i].scatter([p[minimize] for p in scored], [p[maximize] for p in scored],
                        s=12, color="0.7", label=f"{len(scored)} points")
        axes[i].plot([p[minimize] for p in front], [p[maximize] for p in front], "o-",
                     color=f"C{i}", label=f"Pareto front ({len(front)})")
        axes[i].set_xlabel(minimize)
        axes[i].set_ylabel(maximize)
        axes[i].grid(alpha=0.3)
        axes[i].legend(fontsize="small")
    if title:
        fig.suptitle(title, weight="bold")
    fig.savefig(path, format="png", dpi=100, metadata={"Software": None})
