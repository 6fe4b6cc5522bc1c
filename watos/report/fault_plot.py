"""The picture of a fault study (:func:`watos.strategy.faults.fault_study`): normalised throughput against
the fault rate, one line per policy with its 95 % bootstrap band, and the share of maps that disconnect the
wafer. Imports matplotlib only when called; the same study gives the same bytes."""
from __future__ import annotations

from pathlib import Path

from watos.strategy.faults import POLICIES


def write_faults_png(study: dict, path: str | Path, title: str = "") -> None:
    """A PNG of ``study`` (module docstring); the x axis is the die fault rate (links fail at the rate each
    row states)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    rows = study["rates"]
    x = [r["dies"] for r in rows]
    for i, policy in enumerate(POLICIES):
        kept = [(xi, r[policy]) for xi, r in zip(x, rows) if r[policy]["mean"] is not None]
        ax.plot([k for k, _ in kept], [v["mean"] for _, v in kept], "o-", color=f"C{i}", label=policy.replace("_", "-"))
        ax.fill_between([k for k, _ in kept], [v["low"] for _, v in kept], [v["high"] for _, v in kept],
                        color=f"C{i}", alpha=0.2)
    ax.bar(x, [r["disconnected"] for r in rows], width=0.01, color="0.6", label="maps that disconnect")
    ax.set_xlabel("die (and link) fault rate")
    ax.set_ylabel("throughput / fault-free best")
    ax.set_ylim(0, 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    if title:
        ax.set_title(title, weight="bold")
    fig.savefig(path, format="png", dpi=100, metadata={"Software": None})
