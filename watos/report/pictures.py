"""Pictures of a report (the dicts ``report.json`` and ``explore.json`` hold), as PNGs.

The mesh PNG has three heatmaps over the R×C mesh: DRAM used, compute busy and link load (the busiest link
leaving each die), with each directed link drawn as an arrow. The Pareto PNG has one panel per pair of
objectives, every point and the front. Only the ``write_*`` functions need matplotlib, and import it when
called; the same input gives the same bytes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from watos.exploration.pareto import pareto_front, scored


def mesh_figure_data(report: dict) -> dict[str, Any]:
    """The R×C arrays the mesh PNG draws, indexed [row, col]: ``dram_used_gb``, ``dram_capacity_gb``,
    ``compute_busy`` (%), ``link_load`` (busiest outgoing link, %, 0 without links), ``stage`` (-1 for
    none); and ``links``: ``((row, col), (row2, col2), busy %)`` per directed link."""
    rows, cols = report["mesh"]["rows"], report["mesh"]["cols"]
    cells = {(d["row"], d["col"]) for d in report["dies"]}
    if len(report["dies"]) != rows * cols or len(cells) != rows * cols:
        raise ValueError(f"report: {len(report['dies'])} dies for a {rows}x{cols} mesh; need one per cell")
    data: dict[str, Any] = {name: np.zeros((rows, cols)) for name in
                            ("dram_used_gb", "dram_capacity_gb", "compute_busy", "link_load")}
    data["stage"] = np.full((rows, cols), -1, dtype=int)
    for d in report["dies"]:
        at = d["row"], d["col"]
        data["dram_used_gb"][at] = d["dram_used_gb"]
        data["dram_capacity_gb"][at] = d["dram_capacity_gb"]
        data["compute_busy"][at] = 100 * d["compute_busy"]
        data["stage"][at] = -1 if d["stage"] is None else d["stage"]
    data["links"] = [(tuple(link["src"]), tuple(link["dst"]), 100 * link["busy"]) for link in report["links"]]
    for src, _, busy in data["links"]:
        data["link_load"][src] = max(data["link_load"][src], busy)
    return data


def _heatmap(fig, ax, values: np.ndarray, stage: np.ndarray, title: str, cmap: str, vmax: float,
             fmt: str, alpha: float = 1.0):
    """One annotated panel: the value in each cell, its stage below in small type, and a colorbar."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    mappable = ScalarMappable(Normalize(0.0, vmax), cmap)
    ax.imshow(values, cmap=cmap, norm=mappable.norm, alpha=alpha)
    size = max(4.0, min(9.0, 48.0 / max(values.shape)))
    for (r, c), value in np.ndenumerate(values):
        dark = alpha * mappable.norm(value) > 0.6
        colour = "white" if dark else "black"
        ax.text(c, r - 0.08, format(value, fmt), ha="center", va="center", fontsize=size, color=colour)
        if stage[r, c] >= 0:
            ax.text(c, r + 0.28, f"s{stage[r, c]}", ha="center", va="center", fontsize=0.7 * size, color=colour)
    ax.set_title(title)
    ax.set_xticks(range(values.shape[1]))
    ax.set_yticks(range(values.shape[0]))
    fig.colorbar(mappable, ax=ax, shrink=0.8)
    return mappable


def write_mesh_png(report: dict, path: str | Path) -> None:
    """Three heatmaps of the mesh side by side (DRAM used, compute busy, link load with one arrow per
    directed link, coloured by its load; several wafers stacked, a line between them) as a PNG; the same
    report gives the same bytes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    data = mesh_figure_data(report)
    rows, cols = data["stage"].shape
    fig = Figure(figsize=(3 * max(4.0, 0.7 * cols + 1.5), max(3.5, 0.7 * rows + 1.0)), layout="constrained")
    FigureCanvasAgg(fig)
    dram, busy, links = fig.subplots(1, 3)
    _heatmap(fig, dram, data["dram_used_gb"], data["stage"], "DRAM used (GB)", "Blues",
             max(data["dram_capacity_gb"].max(), data["dram_used_gb"].max()), ".1f")
    _heatmap(fig, busy, data["compute_busy"], data["stage"], "compute busy (%)", "Greens", 100.0, ".0f")
    load = _heatmap(fig, links, data["link_load"], data["stage"], "link load (%)", "Oranges", 100.0, ".0f",
                    alpha=0.45)
    for (r, c), (r2, c2), percent in data["links"]:
        step = np.array([c2 - c, r2 - r])  # (x, y) with y pointing down, as imshow draws
        base = np.array([c, r]) + 0.12 * np.array([-step[1], step[0]])  # right of travel: directions part
        links.annotate("", xy=tuple(base + 0.7 * step), xytext=tuple(base + 0.3 * step),
                       arrowprops={"arrowstyle": "-|>", "color": load.to_rgba(percent), "lw": 1.5})
    wafers = report["mesh"].get("wafers", 1)
    for ax in (dram, busy, links):  # wafers are drawn stacked: a line between neighbours
        for boundary in range(1, wafers):
            ax.axhline(boundary * rows / wafers - 0.5, color="black", lw=2.5)
    fig.suptitle(f"{report['target']}: step {report['step_time_s']:.4g} s", fontsize="x-large", weight="bold")
    fig.savefig(path, format="png", dpi=100, metadata={"Software": None})


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
        kept = scored(points, maximize, minimize)
        front = pareto_front(kept, maximize, minimize)
        axes[i].scatter([p[minimize] for p in kept], [p[maximize] for p in kept],
                        s=12, color="0.7", label=f"{len(kept)} points")
        axes[i].plot([p[minimize] for p in front], [p[maximize] for p in front], "o-",
                     color=f"C{i}", label=f"Pareto front ({len(front)})")
        axes[i].set_xlabel(minimize)
        axes[i].set_ylabel(maximize)
        axes[i].grid(alpha=0.3)
        axes[i].legend(fontsize="small")
    if title:
        fig.suptitle(title, weight="bold")
    fig.savefig(path, format="png", dpi=100, metadata={"Software": None})
