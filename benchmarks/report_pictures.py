"""The README's pictures, one of each kind, regenerated from real runs into docs/pictures/:

    mesh.png          the Quickstart search (llama3-70b on watos-config3)
    mesh-borrow.png   its fastest runner-up that borrows memory (Sender → Helper arrows)
    mesh-4wafer.png   llama3-70b on four wafers (watos-4wafer-400), tp 4 pp 14 dp 4
    devices.png       llama3-8b on 16 GPUs of dgx-h100-80g (search)
    pareto.png        a small sweep of the watos-wafer template for llama3-8b

    python benchmarks/report_pictures.py [--out docs/pictures]
"""
from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import watos
from watos.cli import main as watos_main
from watos.pipelines import cost_plan
from watos.report.build import build_report
from watos.report.pictures import write_plan_png


def plan_picture(model: str, target: str, fields: dict, seq: int, out: Path, name: str) -> None:
    """The picture of one plan, costed as the search costs its best."""
    problem = watos.make_problem(model, watos.load_target(target), seq=seq)
    plan = watos.Plan(**{"global_batch": problem.global_batch, **fields})
    costed = cost_plan(problem.lowered(plan.micro_batch), problem.target, plan)
    report = build_report(costed, problem.target, plan)
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(Path(tmp) / write_plan_png(report, tmp), out / name)


def command_pictures(argv: list[str], out: Path, names: dict[str, str]) -> Path:
    """Run a watos command with ``--out`` and copy its pictures; returns the run folder's JSON."""
    tmp = Path(tempfile.mkdtemp())
    if watos_main([*argv, "--json", "--out", str(tmp / "run")]) != 0:
        raise SystemExit(f"watos {' '.join(argv)} failed")
    for produced, name in names.items():
        shutil.copy(tmp / "run" / produced, out / name)
    return tmp / "run"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).parents[1] / "docs" / "pictures"))
    out = Path(parser.parse_args().out)
    out.mkdir(parents=True, exist_ok=True)
    run = command_pictures(["search", "llama3-70b", "--target", "watos-config3"], out, {"mesh.png": "mesh.png"})
    report = json.loads((run / "report.json").read_text())
    borrowing = next(r for r in report["runners_up"] if r["plan"]["borrow"])
    plan_picture("llama3-70b", "watos-config3", borrowing["plan"], 4096, out, "mesh-borrow.png")
    plan_picture("llama3-70b", "watos-4wafer-400", {"tp": 4, "pp": 14, "dp": 4, "zero": 1, "sequence_parallel": True,
                                                    "recompute": "selective"}, 4096, out, "mesh-4wafer.png")
    command_pictures(["search", "llama3-8b", "--target", "dgx-h100-80g", "--devices", "16"], out,
                     {"devices.png": "devices.png"})
    space = Path(tempfile.mkdtemp()) / "space.yaml"
    space.write_text("dram_stacks_per_die: [1, 2, 3, 4]\ncompute_fraction: [0.7, 0.8, 0.9]\n")
    command_pictures(["explore", "llama3-8b", "--template", "watos-wafer", "--space", str(space)], out,
                     {"pareto.png": "pareto.png"})


if __name__ == "__main__":
    main()
