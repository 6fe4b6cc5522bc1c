"""``--csv FILE``: one row per item of a command's result — every plan ``search`` costed, every point ``explore``
swept, every case ``validate`` predicted — with the columns docs/report.md documents. Rows are in the order
the items were met (search) or reported (explore, validate); the same run gives the same bytes."""
from __future__ import annotations

import csv
import os
import tempfile
from pathlib import Path
from typing import Any

from watos.errors import WatosError
from watos.plan import Plan
from watos.report.labels import describe_plan
from watos.strategy.result import limited_by

SEARCH_COLUMNS = ("phase", "tp", "pp", "dp", "cp", "ep", "zero", "micro_batch", "sequence_parallel", "interleave",
                  "schedule", "recompute", "placement", "seed", "borrow_gb", "step_time_s", "tokens_per_s", "mfu",
                  "peak_memory_gb_per_device", "fits", "limited_by")
VALIDATE_COLUMNS = ("id", "source", "framework", "hardware", "status", "predicted_tokens_per_s_per_device",
                    "measured_tokens_per_s_per_device", "error", "predicted_peak_memory_gib_per_device",
                    "measured_peak_memory_gib_per_device", "chosen", "reason")
EXPLORE_FIGURES = ("dies", "rows", "cols", "peak_tflops", "sram_mb", "dram_gb", "dram_gb_per_s", "d2d_gb_per_s_per_edge",
                   "die_yield", "throughput", "tokens_per_joule", "power_w", "dram_capacity_gb", "compute_area_mm2",
                   "strategy", "infeasible")


def search_row(phase: str, plan: Plan, outcome: dict | str) -> dict[str, Any]:
    """One costed plan: its knobs, and its figures (``outcome`` a cost) or why it cannot run (a reason)."""
    recompute = plan.recompute if isinstance(plan.recompute, str) else "/".join(plan.recompute)
    row = {"phase": phase, "tp": plan.tp, "pp": plan.pp, "dp": plan.dp, "cp": plan.cp, "ep": plan.ep,
           "zero": plan.zero, "micro_batch": plan.micro_batch, "sequence_parallel": plan.sequence_parallel,
           "interleave": plan.interleave, "schedule": plan.pipeline_kind, "recompute": recompute,
           "placement": plan.placement, "seed": plan.seed, "borrow_gb": sum(b.gb for b in plan.borrow)}
    if isinstance(outcome, str):
        return {**row, "fits": False, "limited_by": outcome}
    return {**row, "step_time_s": outcome["step_time_s"], "tokens_per_s": outcome["tokens_per_s"],
            "mfu": outcome["mfu"], "peak_memory_gb_per_device": outcome["peak_memory_bytes_per_device"] / 1e9,
            "fits": outcome["fits"], "limited_by": limited_by(outcome)}


def pruned_rows(result: dict) -> list[dict[str, Any]]:
    """The shapes the search pruned on model-state memory before costing any plan of them."""
    return [{"phase": "pruned", **r["shape"], "fits": False, "limited_by": r["limited_by"]}
            for r in result["rejected"] if "plan" not in r]


def explore_rows(result: dict) -> tuple[list[str], list[dict[str, Any]]]:
    """The columns (the swept variables, then :data:`EXPLORE_FIGURES`) and one row per point."""
    variables = sorted({k for p in result["points"] for k in p["point"]})
    rows = []
    for p in result["points"]:
        row = {**p["point"], **{k: v for k, v in p.get("derived", {}).items() if k in EXPLORE_FIGURES}}
        if "infeasible" in p:
            row["infeasible"] = p["infeasible"]
        else:
            row.update({k: p[k] for k in ("throughput", "tokens_per_joule", "power_w", "dram_capacity_gb",
                                          "compute_area_mm2")})
            row["strategy"] = "; ".join(f"{m}: {describe_plan(r['plan'])}" for m, r in sorted(p["results"].items()))
        rows.append(row)
    return [*variables, *EXPLORE_FIGURES], rows


def validate_rows(result: dict) -> list[dict[str, Any]]:
    """One row per case (``chosen``: the knobs chosen for those the source left null, as ``k=v`` pairs)."""
    return [{**{k: case.get(k) for k in VALIDATE_COLUMNS if k != "chosen"},
             "chosen": " ".join(f"{k}={v}" for k, v in case.get("chosen", {}).items())} for case in result["cases"]]


def write_csv(path: str, columns: tuple[str, ...] | list[str], rows: list[dict[str, Any]]) -> None:
    """Write ``rows`` under ``columns`` (missing values empty) to ``path`` whole or not at all."""
    target = Path(path)
    if target.is_dir():
        raise WatosError(f"--csv {path}: is a directory")
    target.resolve().parent.mkdir(parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(prefix=".watos-", suffix=".csv", dir=target.resolve().parent)
    try:
        with os.fdopen(handle, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
        os.replace(staging, target)
    finally:
        if os.path.exists(staging):
            os.unlink(staging)
