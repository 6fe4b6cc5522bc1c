"""The picture of one costed plan on a switched (GPU) target (``devices.png``): per GPU, its memory against the
GPU's capacity and its compute busy, as bars grouped by the network's first tier (a node: NVLink, NVSwitch),
each group shaded and named, the tiers and their bandwidths in the title, and the pipeline stage of every
GPU under its bar. Titled with the model, the target and the plan; the same report gives the same bytes.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from watos.report.labels import report_title
from watos.report.pictures import new_figure, save_png

LABELLED = 64
"""Up to this many devices every bar is named; beyond, only the node groups are."""


def write_devices_png(report: dict, path: str | Path) -> None:
    """:func:`devices_figure` as a PNG."""
    save_png(devices_figure(report), path)


def devices_figure(report: dict):
    """Memory and compute busy per GPU, grouped by node (module docstring)."""
    dies = report["dies"]
    noun = report.get("device_noun", "GPU")
    tiers = report["network"]["tiers"]
    node = tiers[0]["size"] or len(dies)
    x = np.arange(len(dies))
    used = np.array([d["dram_used_gb"] for d in dies])
    busy = np.array([100 * d["compute_busy"] for d in dies])
    capacity = report.get("dram_capacity_gb", dies[0]["dram_capacity_gb"])
    fig = new_figure(16, 7.5)
    memory, compute = fig.subplots(2, 1, sharex=True)
    over = used > capacity
    memory.bar(x, used, color=np.where(over, "tab:red", "tab:blue"), width=0.8)
    memory.axhline(capacity, color="black", ls="--", lw=1.2)
    memory.text(len(dies) - 0.5, capacity, f" capacity {capacity:g} GB", va="bottom", ha="right", fontsize=10)
    memory.set_ylabel(f"memory per {noun} (GB)")
    memory.set_ylim(0, max(capacity, float(used.max())) * 1.15)
    memory.set_title(f"memory used per {noun} (red: over the {capacity:g} GB capacity)", fontsize=11)
    compute.bar(x, busy, color="tab:green", width=0.8)
    compute.set_ylim(0, 105)
    compute.set_ylabel("compute busy (% of the step)")
    compute.set_title(f"compute busy per {noun}", fontsize=11)
    for ax in (memory, compute):
        for start in range(0, len(dies), node):
            if (start // node) % 2 == 0:
                ax.axvspan(start - 0.5, min(start + node, len(dies)) - 0.5, color="0.92", zorder=0)
        ax.grid(axis="y", alpha=0.3)
    if len(dies) <= LABELLED:
        compute.set_xticks(x, [f"{d['die']}\ns{d['stage']}" if d["stage"] is not None else f"{d['die']}\nidle"
                               for d in dies], fontsize=8)
    else:
        compute.set_xticks([s + node / 2 - 0.5 for s in range(0, len(dies), node)],
                           [f"node {s // node}" for s in range(0, len(dies), node)], fontsize=8, rotation=90)
    compute.set_xlabel(f"{noun} (index, pipeline stage below), shaded in groups of {node}: one {tiers[0]['name']} "
                       f"domain each")
    network = "; ".join(f"{t['name']}: {t['gb_per_s_per_direction']:g} GB/s per direction"
                        + (f" within {t['size']} {noun}s" if t["size"] else " across all") for t in tiers)
    fig.suptitle(f"{report_title(report)}\n{len(dies)} {noun}s — {network}", fontsize=12, weight="bold")
    return fig
