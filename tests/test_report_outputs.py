"""What a person sees of a costed plan: the Chrome trace (its span is the step), the pictures (titled, labelled,
with units, a message where there is nothing to draw), report.html (self-contained; rendered by headless
Chromium where it is installed), the terminal tables (80 columns), --csv, and progress only on a terminal."""
from __future__ import annotations

import csv
import dataclasses
import functools
import io
import json
import re
import shutil
import subprocess

import pytest
import yaml
from rich.console import Console

import watos
from watos import Plan, cost_plan, load_target, make_problem
from watos.cli import main
from watos.exploration.sweep import FRONTS
from watos.hardware.target import SystemLink
from watos.report.build import build_report
from watos.report.chrome_trace import chrome_trace
from watos.report.gpu_picture import devices_figure
from watos.report.html import search_html
from watos.report.pareto_picture import pareto_figure
from watos.report.pictures import mesh_figure, write_plan_png
from watos.report.plan_tables import print_compile, print_explore, print_search
from watos.report.step import block_parts

CONFIG3 = load_target("watos-config3")
SMALL_LLAMA = dict(model_type="llama", hidden_size=256, intermediate_size=512, num_hidden_layers=4,
                   num_attention_heads=8, num_key_value_heads=4, vocab_size=1024, max_position_embeddings=256)
PLANS = {
    "1f1b-borrow": dict(tp=2, pp=2, dp=1, micro_batch=1, global_batch=32, zero=1, recompute=("full", "none"),
                        borrow=[{"sender": 0, "helper": 1, "gb": 0.002}]),
    "interleaved": dict(tp=1, pp=2, dp=2, micro_batch=1, global_batch=32, interleave=2, schedule="interleaved",
                        sequence_parallel=False),
    "gpipe-zero3": dict(tp=2, pp=2, dp=1, micro_batch=2, global_batch=32, zero=3, schedule="gpipe",
                        sequence_parallel=True),
}


def wafer(rows: int, cols: int, wafers: int = 1):
    """Config 3 dies on a small mesh (several wafers in a ring when ``wafers`` > 1)."""
    systems = SystemLink(count=wafers, bandwidth_gb_per_s_per_direction=400, latency_us=1) if wafers > 1 else None
    return CONFIG3.model_copy(update={"name": f"test-{rows}x{cols}x{wafers}", "systems": systems,
                                      "topology": CONFIG3.topology.model_copy(update={"rows": rows, "cols": cols})})


@functools.lru_cache(maxsize=None)
def report_of(target_name: str, plan_name: str) -> dict:
    """A real report: the small Llama costed under ``PLANS[plan_name]`` on a 2 x 2 wafer, two of them, or GPUs."""
    target = {"wafer": wafer(2, 2), "two-wafers": wafer(2, 1, 2), "gpus": load_target("dgx-h100-80g")}[target_name]
    problem = make_problem(SMALL_LLAMA, target, seq=256, devices=None if target_name != "gpus" else 4)
    plan = Plan(**PLANS[plan_name])
    costed = cost_plan(problem.lowered(plan.micro_batch), target, plan)
    return build_report(costed, target, plan)


def texts(fig) -> str:
    """Every piece of text of a figure: titles, labels, tick labels, annotations, colourbar labels."""
    return "\n".join(t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text")) if t.get_text())


# -- trace.json -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("plan_name", sorted(PLANS))
def test_trace_spans_the_step_and_loads_as_chrome_json(plan_name):
    report = report_of("wafer", plan_name)
    trace = json.loads(json.dumps(chrome_trace(report), allow_nan=False))
    events = trace["traceEvents"]
    assert {e["ph"] for e in events} == {"X", "C", "M"}
    spans = [e for e in events if e["ph"] == "X"]
    assert all(e["dur"] >= 0 and e["ts"] >= 0 and isinstance(e["pid"], int) for e in spans)
    span_s = (max(e["ts"] + e["dur"] for e in spans) - min(e["ts"] for e in spans)) / 1e6
    assert span_s == pytest.approx(report["step_time_s"], rel=0.01)


def test_trace_has_every_micro_batch_collectives_optimizer_and_counters():
    report = report_of("wafer", "1f1b-borrow")
    events = chrome_trace(report)["traceEvents"]
    names = {e["name"] for e in events}
    blocks = {(e["pid"], e["name"]) for e in events if e["ph"] == "X" and e["cat"] in ("fwd", "bwd")}
    micro_batches = PLANS["1f1b-borrow"]["global_batch"] // PLANS["1f1b-borrow"]["micro_batch"]
    assert blocks == {(1 + s, f"{k}{i}") for s in range(2) for k in "FB" for i in range(micro_batches)}
    assert {"recompute", "TP collectives (exposed)", "optimizer step", "checkpoint → helper"} <= names
    counters = {e["name"] for e in events if e["ph"] == "C"}
    assert "memory per device (GB)" in counters and any(n.startswith("link (") for n in counters)
    # the memory counter ramps with the micro-batches in flight and peaks at the reported peak
    for s, stage in enumerate(report["stages"]):
        memory = [e["args"]["GB"] for e in events if e["ph"] == "C" and e["pid"] == 1 + s
                  and e["name"] == "memory per device (GB)"]
        assert max(memory) == pytest.approx(stage["memory_gb"]["total"]) and min(memory) < max(memory)


def test_trace_parts_add_up_to_their_block():
    report = report_of("wafer", "interleaved")
    for stage in report["timeline"]["stages"]:
        for block in stage["blocks"]:
            assert sum(p["dur_s"] for p in block_parts(block, stage)) == pytest.approx(block["dur_s"], rel=1e-9)
    assert any(b["chunk"] == 1 for b in report["timeline"]["stages"][0]["blocks"])


# -- pictures ---------------------------------------------------------------------------------------------------
def test_mesh_picture_is_titled_labelled_and_draws_borrowing():
    report = report_of("wafer", "1f1b-borrow")
    text = texts(mesh_figure(report))
    assert report["model"] in text and report["target"] in text and "tp 2 pp 2 dp 1" in text
    for label in ("mesh row", "mesh column", "GB per die", "% of the step", "link busy (% of the step)",
                  "capacity 70 GB", "pipeline stage", "DRAM 70 GB", "borrow 0.0 GB"):
        assert label in text, label


def test_several_wafers_are_drawn_side_by_side_with_their_links():
    report = report_of("two-wafers", "interleaved")
    fig = mesh_figure(report)
    text = texts(fig)
    assert "wafer 0" in text and "wafer 1" in text and "400 GB/s per direction" in text
    assert fig.axes[0].images[0].get_array().shape == (2, 2)  # two 2 x 1 wafers side by side


def test_gpu_target_gets_per_gpu_bars_not_a_mesh_strip():
    report = report_of("gpus", "interleaved")
    assert report["device_noun"] == "GPU" and report["network"]["kind"] == "switched"
    fig = devices_figure(report)
    text = texts(fig)
    assert "memory per GPU (GB)" in text and "compute busy (% of the step)" in text and "capacity 80 GB" in text
    assert "nvlink: 450 GB/s per direction within 8 GPUs" in text and "die" not in text
    assert not any(ax.images for ax in fig.axes)  # bars, no heatmap
    assert fig.get_size_inches()[0] * 100 <= 1600


def test_pareto_picture_has_units_labelled_points_and_a_message_when_empty():
    points = [{"point": {"stacks": s, "fraction": 0.8}, "throughput": 1e5 * s, "dram_capacity_gb": 100.0 * s,
               "power_w": 1.5e4 + s, "compute_area_mm2": 1e4 / s} for s in (1, 2, 3)]
    text = texts(pareto_figure(points, list(FRONTS), "demo"))
    for label in ("throughput (tokens/s)", "total DRAM (GB)", "power (kW)", "compute area (mm²)",
                  "front points labelled stacks", "Pareto front (3 points)"):
        assert label in text, label
    assert "fraction" not in text  # the same in every point: not a label
    empty = texts(pareto_figure([], list(FRONTS), "nothing"))
    assert empty.count("no feasible point") == len(FRONTS)


# -- report.html ------------------------------------------------------------------------------------------------
def search_page(tmp_path) -> tuple[str, dict]:
    problem = dataclasses.replace(make_problem(SMALL_LLAMA, wafer(2, 2), seq=256), micro_batch_sizes=(1,),
                                  interleaves=(1,))
    result = watos.search(problem, generations=1)
    plan = Plan(**result["best"]["plan"])
    report = {**result, **build_report(cost_plan(problem.lowered(plan.micro_batch), problem.target, plan),
                                       problem.target, plan)}
    picture = tmp_path / write_plan_png(report, tmp_path)
    page = search_html(report, {"the plan on the target": picture})
    (tmp_path / "report.html").write_text(page)
    return page, report


def test_report_html_is_self_contained_and_has_the_figures(tmp_path):
    page, report = search_page(tmp_path)
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", page) and "<script" not in page
    assert "data:image/png;base64," in page and len(page) < 5e6
    for figure in (f"{report['step_time_s']:.4g} s", f"{report['best']['tokens_per_s']:,.0f}", "why it lost",
                   "megatron", "Per stage: memory per die"):
        assert figure in page, figure


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed (CI lacks it)")
def test_report_html_renders_in_headless_chromium(tmp_path):
    _, report = search_page(tmp_path)
    run = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr",
                          "--v=0", "--dump-dom", (tmp_path / "report.html").as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0
    assert not [line for line in run.stderr.splitlines() if ":CONSOLE" in line]  # no console messages at all
    dom = run.stdout
    assert 'id="summary"' in dom and 'id="plans"' in dom and 'id="stage-memory"' in dom
    assert f"{report['best']['tokens_per_s']:,.0f}" in dom and "data:image/png;base64," in dom


# -- terminal tables --------------------------------------------------------------------------------------------
def rendered(print_table, *args) -> list[str]:
    console = Console(width=80, file=io.StringIO(), record=True)
    print_table(*args, console=console)
    return console.export_text().splitlines()


def fits(lines: list[str]) -> bool:
    return all(len(line) <= 80 for line in lines) and not any("…" in line for line in lines)


def test_search_and_compile_tables_fit_80_columns_with_units_and_the_right_noun(tmp_path):
    _, report = search_page(tmp_path)
    lines = rendered(print_search, report, wafer(2, 2))
    assert fits(lines) and any("GB/die" in line for line in lines)
    assert any("70 GB DRAM + 0.885 GB SRAM = 70.89 GB" in line for line in lines)
    result = watos.compile(SMALL_LLAMA, "dgx-h100-80g", {"tp": 2, "dp": 2, "global_batch": 8}, seq=256)
    lines = rendered(print_compile, result, load_target("dgx-h100-80g"))
    text = "\n".join(lines)
    assert fits(lines) and "per GPU" in text and "die" not in text and "placement" in text


def test_search_table_fits_100_columns_without_cut_words(tmp_path):
    _, report = search_page(tmp_path)
    console = Console(width=100, file=io.StringIO(), record=True)
    print_search(report, wafer(2, 2), console=console)
    lines = console.export_text().splitlines()
    assert all(len(line) <= 100 for line in lines) and not any("…" in line for line in lines)


def test_explore_table_csv_and_page(tmp_path, capsys):
    space = tmp_path / "space.yaml"
    space.write_text("dram_stacks_per_die: [2, 3]\n")
    table, out = tmp_path / "points.csv", tmp_path / "run"
    assert main(["explore", "llama3-8b", "--template", "watos-wafer", "--space", str(space), "--seq", "256",
                 "--batch-per-die", "1", "--json", "--csv", str(table), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    result = json.loads(captured.out)
    assert captured.err == ""
    lines = rendered(print_explore, result)
    assert fits(lines) and any("dram_stacks_per_die=2" in line for line in lines)
    rows = list(csv.DictReader(table.open()))
    assert [int(r["dram_stacks_per_die"]) for r in rows] == [p["point"]["dram_stacks_per_die"] for p in result["points"]]
    assert [float(r["throughput"]) for r in rows] == pytest.approx([p["throughput"] for p in result["points"]])
    page = (out / "report.html").read_text()
    assert "Pareto fronts" in page and "dram_stacks_per_die=3" in page and "data:image/png;base64," in page


# -- --csv and progress -----------------------------------------------------------------------------------------
def test_search_csv_has_every_costed_plan_and_progress_stays_off_a_pipe(tmp_path, capsys):
    config = tmp_path / "config.json"
    config.write_text(json.dumps(SMALL_LLAMA))
    target = tmp_path / "wafer.yaml"
    target.write_text(yaml.safe_dump(json.loads(wafer(2, 2).model_dump_json())))
    table = tmp_path / "plans.csv"
    assert main(["search", str(config), "--target", str(target), "--seq", "256", "--json", "--csv", str(table)]) == 0
    captured = capsys.readouterr()
    assert captured.err == ""  # stderr is not a terminal: no progress
    result = json.loads(captured.out)
    rows = list(csv.DictReader(table.open()))
    screened = [r for r in rows if r["phase"] in ("screen", "considered") and r["tokens_per_s"]]
    assert len(screened) == result["evaluated"]
    assert {r["phase"] for r in rows} >= {"screen", "placement", "refine"}
    best = min((r for r in rows if r["fits"] == "True"), key=lambda r: float(r["step_time_s"]))
    assert float(best["tokens_per_s"]) == pytest.approx(result["best"]["tokens_per_s"])
