"""The Pareto picture of a sweep (``pareto.png``): a panel per ``(maximize, minimize)`` pair, axes with
units, every feasible point in grey, the front as a line through its points, each front point labelled with
its values of the swept variables that differ between points (named in the panel's title); a panel says so in words when no point is feasible. The same
arguments give the same bytes.
"""
from __future__ import annotations

from pathlib import Path

from watos.exploration.pareto import pareto_front, scored
from watos.report.labels import quantity
from watos.report.pictures import new_figure, save_png


def varying(points: list[dict]) -> list[str]:
    """The swept variables whose value differs between ``points`` (sorted): what tells them apart."""
    names = sorted({k for p in points for k in p.get("point", {})})
    return [k for k in names if len({p.get("point", {}).get(k) for p in points}) > 1]


def point_label(point: dict, names: list[str]) -> str:
    """``0.8, 4``: a point's values of ``names`` (the panel names the variables once)."""
    return ", ".join(f"{point['point'][k]:g}" for k in names if k in point.get("point", {}))


def write_pareto_png(points: list[dict], fronts: list[tuple[str, str]], path: str | Path, title: str = "") -> None:
    """:func:`pareto_figure` as a PNG."""
    save_png(pareto_figure(points, fronts, title), path)


def pareto_figure(points: list[dict], fronts: list[tuple[str, str]], title: str = ""):
    """The Pareto panels of ``points`` (module docstring)."""
    fig = new_figure(16, 5.5)  # 1600 px wide
    axes = fig.subplots(1, len(fronts), squeeze=False)[0]
    names = varying(points)
    for i, (maximize, minimize) in enumerate(fronts):
        ax = axes[i]
        (ylabel, yscale), (xlabel, xscale) = quantity(maximize), quantity(minimize)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        kept = scored(points, maximize, minimize)
        if not kept:
            ax.text(0.5, 0.5, "no feasible point:\nnothing to plot", transform=ax.transAxes, ha="center",
                    va="center", fontsize=14, color="tab:red")
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        front = pareto_front(kept, maximize, minimize)
        ax.scatter([p[minimize] * xscale for p in kept], [p[maximize] * yscale for p in kept], s=14, color="0.65",
                   label=f"{len(kept)} feasible points")
        ax.plot([p[minimize] * xscale for p in front], [p[maximize] * yscale for p in front], "o-", color=f"C{i}",
                lw=2, label=f"Pareto front ({len(front)} points)")
        for n, p in enumerate(front):
            ax.annotate(point_label(p, names), (p[minimize] * xscale, p[maximize] * yscale), textcoords="offset points",
                        xytext=(6, -12 if n % 2 else 4), fontsize=8, color=f"C{i}")
        if names:
            ax.set_title(f"front points labelled {', '.join(names)}", fontsize=9)
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 5), useMathText=True)
        ax.tick_params(axis="x", labelrotation=30)
        ax.legend(fontsize="small", loc="lower right")
    fig.suptitle(title or "Pareto fronts", fontsize=12, weight="bold")
    return fig
