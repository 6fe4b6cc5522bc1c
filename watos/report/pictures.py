"""Pictures of a report (the dict ``report.json`` holds): a Chrome trace of one step and mesh heatmaps.

The trace (chrome://tracing, Perfetto) has one process per die (pid = die id) with threads 0 compute,
1 links (transfers leaving the die), 2 DMA, and a DRAM counter. Every pipeline event of a stage shows
on every die of that stage. The PNG has three heatmaps over the R×C mesh: DRAM used, compute busy and
link load (the busiest link leaving each die), with each directed link drawn as an arrow. Only
:func:`write_mesh_png` needs matplotlib, and imports it when called.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

THREADS = {0: "compute", 1: "links", 2: "DMA"}
US = 1e6  # trace timestamps are microseconds


def _span(pid: int, tid: int, name: str, cat: str, start_s: float, dur_s: float, args: dict) -> dict:
    return {"ph": "X", "pid": pid, "tid": tid, "name": name, "cat": cat,
            "ts": start_s * US, "dur": dur_s * US, "args": args}


def _die_id(report: dict, cell: list[int]) -> int:
    return cell[0] * report["mesh"]["cols"] + cell[1]


def _metadata(die: dict) -> list[dict]:
    pid = die["die"]
    process = {"ph": "M", "pid": pid, "tid": 0, "name": "process_name",
               "args": {"name": f"die {pid} ({die['row']},{die['col']})"}}
    threads = [{"ph": "M", "pid": pid, "tid": tid, "name": "thread_name", "args": {"name": name}}
               for tid, name in THREADS.items()]
    memory = {"ph": "C", "pid": pid, "tid": 0, "name": "DRAM", "ts": 0.0,
              "args": {"dram_used_gb": die["dram_used_gb"], "dram_capacity_gb": die["dram_capacity_gb"]}}
    return [process, *threads, memory]


def _compute(timeline: dict) -> list[dict]:
    events = timeline["events"]
    interleaved = any(e["chunk"] for e in events)
    spans = []
    for e in events:
        name = f"{'F' if e['kind'] == 'fwd' else 'B'}{e['micro_batch']}" + (f".c{e['chunk']}" if interleaved else "")
        args = {"micro_batch": e["micro_batch"], "chunk": e["chunk"], "stage": e["stage"]}
        spans += [_span(die, 0, name, "compute", e["start_s"], e["dur_s"], args)
                  for die in timeline["stage_dies"][str(e["stage"])]]
    return spans


def chrome_trace(report: dict) -> dict:
    """The report's step as a Chrome trace-event document (times in microseconds)."""
    timeline = report["timeline"]
    events = [m for die in report["dies"] for m in _metadata(die)]
    events += _compute(timeline)
    events += [_span(_die_id(report, link["src"]), 1, link["name"], "link", link["start_s"], link["dur_s"],
                     {"dst": link["dst"]}) for link in timeline["links"]]
    events += [_span(dma["die"], 2, dma["name"], "dma", dma["start_s"], dma["dur_s"], {})
               for dma in timeline["dma"]]
    return {"traceEvents": events, "displayTimeUnit": "ms"}


def write_chrome_trace(report: dict, path: str | Path) -> None:
    """Write :func:`chrome_trace` as JSON (sorted keys; ValueError on a NaN or infinite number)."""
    with open(path, "w") as f:
        json.dump(chrome_trace(report), f, sort_keys=True, allow_nan=False)
        f.write("\n")


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
