"""The picture of one costed plan on a wafer (``mesh.png``): three heatmaps over the R×C mesh of each wafer —
DRAM used against the DRAM capacity (borrowed checkpoints drawn as arrows Sender → Helper with their GB),
compute busy, and link load (each directed link an arrow coloured by its load; each cell the busiest link
leaving that die) — and each stage's memory by kind against the capacity, titled with the model, the target and the plan, axes labelled, colourbars with units;
several wafers stacked with their wafer-to-wafer links marked. A GPU target gets
:mod:`watos.report.gpu_picture` instead (:func:`write_plan_png` picks). Only the ``write_*`` functions need
matplotlib, and import it when called; the same report gives the same bytes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from watos.report.labels import report_title

DPI = 100
CELL_IN = 0.7  # inches per die at most: 8 columns x 2 panels fit 1600 px with 9-point numbers


def mesh_figure_data(report: dict) -> dict[str, Any]:
    """The R×C arrays the mesh PNG draws, indexed [row, col]: ``dram_used_gb``, ``dram_capacity_gb``,
    ``compute_busy`` (%), ``link_load`` (busiest outgoing link, %, 0 without links), ``stage`` (-1 for
    none); ``links``: ``((row, col), (row2, col2), busy %)`` per directed link; ``borrow``: ``(sender cell,
    helper cell, GB)`` from the centre of a Sender stage's dies to its Helper's."""
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
    centre = {s: np.argwhere(data["stage"] == s).mean(axis=0) for s in np.unique(data["stage"]) if s >= 0}
    data["borrow"] = [(tuple(centre[b["sender"]]), tuple(centre[b["helper"]]), b["gb"])
                      for b in report.get("plan", {}).get("borrow", []) if b["sender"] in centre and b["helper"] in centre]
    return data


def new_figure(width_in: float, height_in: float):
    """A matplotlib figure on the Agg canvas (no display), laid out by constrained layout."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_in, height_in), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_png(fig, path: str | Path) -> None:
    """Save without a software tag, so the same figure gives the same bytes."""
    fig.savefig(path, format="png", dpi=DPI, metadata={"Software": None})


def _heatmap(fig, ax, values: np.ndarray, stage: np.ndarray, title: str, cmap: str, vmax: float, fmt: str,
             unit: str, alpha: float = 1.0, size: float = 9.0):
    """One annotated panel: the value in each cell, its stage below it, labelled axes and a colourbar with
    its unit."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    mappable = ScalarMappable(Normalize(0.0, vmax), cmap)
    ax.imshow(values, cmap=cmap, norm=mappable.norm, alpha=alpha, aspect="equal")
    for (r, c), value in np.ndenumerate(values):
        colour = "white" if alpha * mappable.norm(value) > 0.6 else "black"
        ax.text(c, r - 0.12, format(value, fmt), ha="center", va="center", fontsize=size, color=colour)
        if stage[r, c] >= 0:
            ax.text(c, r + 0.27, f"s{stage[r, c]}", ha="center", va="center", fontsize=0.8 * size, color=colour)
    ax.set_title(title, fontsize=10)
    ax.set_xticks(range(values.shape[1]))
    ax.set_yticks(range(values.shape[0]))
    ax.set_xlabel("mesh column")
    ax.set_ylabel("mesh row")
    fig.colorbar(mappable, ax=ax, shrink=0.8).set_label(unit)
    return mappable


def side_by_side(data: dict[str, Any], wafers: int) -> dict[str, Any]:
    """The figure data of ``wafers`` stacked wafers (rows of wafer w offset by w·R) with the wafers side by
    side instead (columns of wafer w offset by w·C), so a row of wafers fits a page's width."""
    if wafers == 1:
        return data
    rows, cols = data["stage"].shape
    per = rows // wafers

    def cell(at: tuple) -> tuple:
        return at[0] % per, at[1] + (at[0] // per) * cols

    moved = {k: np.hstack([v[w * per:(w + 1) * per] for w in range(wafers)])
             for k, v in data.items() if isinstance(v, np.ndarray)}
    return {**moved, "links": [(cell(a), cell(b), busy) for a, b, busy in data["links"]],
            "borrow": [(cell(a), cell(b), gb) for a, b, gb in data["borrow"]]}


def write_mesh_png(report: dict, path: str | Path) -> None:
    """:func:`mesh_figure` as a PNG."""
    save_png(mesh_figure(report), path)


def mesh_figure(report: dict):
    """The heatmaps of a wafer plan and its per-stage memory bars (module docstring): a 2×2 grid for one wafer,
    the panels one above another for several (their wafers side by side)."""
    wafers = report["mesh"].get("wafers", 1)
    data = side_by_side(mesh_figure_data(report), wafers)
    rows, cols = data["stage"].shape
    noun = report.get("device_noun", "die")
    across = 2 if wafers == 1 else 1
    cell = min(CELL_IN, (16.0 / across - 2.4) / cols)  # the panels across fit 16 inches (1600 px)
    fig = new_figure(across * (cell * cols + 2.4), (4 // across) * (cell * rows + 1.4) + 0.6)
    dram, busy, links, stages = fig.subplots(4 // across, across).flat
    capacity = float(data["dram_capacity_gb"].max())
    size = 9.0 if cell >= 0.55 else 7.5
    _heatmap(fig, dram, data["dram_used_gb"], data["stage"], f"DRAM used per {noun} (GB; capacity {capacity:g} GB)",
             "YlOrRd", max(capacity, float(data["dram_used_gb"].max())), ".1f", f"GB per {noun}", size=size)
    for (r, c), (r2, c2), gb in data["borrow"]:
        dram.annotate("", xy=(c2, r2), xytext=(c, r),
                      arrowprops={"arrowstyle": "-|>", "color": "tab:blue", "lw": 2.5, "mutation_scale": 18})
        dram.text((c + c2) / 2, (r + r2) / 2, f"borrow {gb:.1f} GB", ha="center", va="bottom", fontsize=9,
                  color="tab:blue", weight="bold", bbox={"facecolor": "white", "alpha": 0.8, "lw": 0})
    _heatmap(fig, busy, data["compute_busy"], data["stage"], "compute busy (% of the step)", "Greens", 100.0, ".0f",
             "% of the step", size=size)
    load = _heatmap(fig, links, data["link_load"], data["stage"],
                    "link load (cell: busiest link leaving the die; arrow: a directed link)", "Oranges", 100.0,
                    ".0f", "link busy (% of the step)", alpha=0.45, size=size)
    for (r, c), (r2, c2), percent in data["links"]:
        step = np.array([c2 - c, r2 - r])  # (x, y) with y pointing down, as imshow draws
        base = np.array([c, r]) + 0.12 * np.array([-step[1], step[0]])  # right of travel: directions part
        links.annotate("", xy=tuple(base + 0.7 * step), xytext=tuple(base + 0.3 * step),
                       arrowprops={"arrowstyle": "-|>", "color": load.to_rgba(percent), "lw": 1.5})
    _mark_wafers(report, (dram, busy, links), cols)
    memory_bars(stages, report, noun)
    fig.suptitle(report_title(report), fontsize=12, weight="bold")
    return fig


MEMORY_PARTS = ("weights", "gradients", "optimizer", "activations", "workspace", "framework", "borrowed_in")


def memory_bars(ax, report: dict, noun: str) -> None:
    """Each stage's memory per device, stacked by kind (borrowed-out checkpoints taken off the activations),
    against the DRAM capacity and what a plan may use (DRAM + SRAM)."""
    stages = report.get("stages", [])
    if not stages:
        ax.set_axis_off()
        ax.text(0.5, 0.5, "no per-stage memory in this report", ha="center", va="center", transform=ax.transAxes)
        return
    x = np.arange(len(stages))
    bottom = np.zeros(len(stages))
    for i, kind in enumerate(MEMORY_PARTS):
        gb = np.array([st["memory_gb"].get(kind, 0.0) - (st["memory_gb"].get("borrowed_out", 0.0)
                                                         if kind == "activations" else 0.0) for st in stages])
        if gb.any():
            ax.bar(x, gb, bottom=bottom, color=f"C{i}", label=kind.replace("_", " "), width=0.7)
            bottom += gb
    dram, usable = report["dram_capacity_gb"], report["memory_capacity_gb"]
    ax.axhline(dram, color="black", ls="--", lw=1.2, label=f"DRAM {dram:g} GB")
    if usable > dram:
        ax.axhline(usable, color="black", ls=":", lw=1.2, label=f"DRAM + SRAM {usable:.4g} GB")
    ax.set_xticks(x, [str(st["stage"]) for st in stages])
    ax.set_xlabel("pipeline stage")
    ax.set_ylabel(f"GB per {noun}")
    ax.set_ylim(0, max(usable, float(bottom.max())) * 1.25)
    ax.set_title(f"memory per {noun} by stage (GB)", fontsize=10)
    ax.legend(fontsize=8, ncols=4, loc="upper center")
    ax.grid(axis="y", alpha=0.3)


def _mark_wafers(report: dict, axes: tuple, cols: int) -> None:
    """Several wafers are drawn side by side: a thick line between neighbours (their wafer-to-wafer link, with
    its bandwidth) and each wafer named above its columns."""
    wafers = report["mesh"].get("wafers", 1)
    if wafers == 1:
        return
    per = cols // wafers
    w2w = report.get("network", {}).get("wafer_link_gb_per_s_per_direction")
    for ax in axes:
        for boundary in range(1, wafers):
            ax.axvline(boundary * per - 0.5, color="black", lw=3)
        top = ax.secondary_xaxis("top")
        top.set_xticks([w * per + per / 2 - 0.5 for w in range(wafers)], [f"wafer {w}" for w in range(wafers)])
        top.tick_params(length=0)
        ax.set_xlabel("mesh column (per wafer)" + (f"; thick lines: wafer-to-wafer links, a ring of {w2w:g} GB/s per "
                                                   "direction" if w2w else ""))
        ax.set_xticks(range(cols), [str(c % per) for c in range(cols)])


def write_plan_png(report: dict, directory: str | Path) -> str:
    """The plan's picture in ``directory``: ``mesh.png`` on a wafer, ``devices.png`` on a GPU target; its name."""
    from watos.report.gpu_picture import write_devices_png

    if report.get("network", {}).get("kind", "mesh2d") == "mesh2d":
        write_mesh_png(report, Path(directory) / "mesh.png")
        return "mesh.png"
    write_devices_png(report, Path(directory) / "devices.png")
    return "devices.png"
