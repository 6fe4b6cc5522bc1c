"""Architecture co-exploration: the wafer template, spaces, `watos explore`, and a sweep that survives
SIGKILL."""
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from watos import WatosError, load_target, load_template
from watos.cli import main
from watos.exploration.store import ResultStore
from watos.exploration.sweep import evaluate_point, grid, load_space
from watos.hardware.template import derive, instantiate

ROOT = Path(__file__).parent.parent
SMALL_LLAMA = dict(model_type="llama", hidden_size=256, intermediate_size=512, num_hidden_layers=4,
                   num_attention_heads=8, num_key_value_heads=4, vocab_size=1024, max_position_embeddings=256)


def test_template_defaults_are_config3():
    template = load_template("watos-wafer")
    derived = derive(template, {})
    config3 = load_target("watos-config3")
    assert (derived["rows"], derived["cols"]) == (config3.topology.rows, config3.topology.cols)
    assert derived["peak_tflops"] == pytest.approx(config3.device.peak_tflops["bf16"], rel=0.01)
    assert derived["dram_gb"] == config3.device.dram_capacity_gb
    assert derived["dram_gb_per_s"] == config3.device.dram_bandwidth_gb_per_s
    assert derived["d2d_gb_per_s_per_edge"] == pytest.approx(config3.topology.link_bandwidth_gb_per_s_per_direction, rel=0.01)
    target = instantiate(template, {"dram_stacks_per_die": 2})
    assert target.device.dram_capacity_gb == 35 and target.device.efficiency == config3.device.efficiency


def test_more_dram_costs_compute_and_die_to_die_bandwidth():
    template = load_template("watos-wafer")
    points = [derive(template, {"dram_stacks_per_die": s}) for s in range(1, 7)]
    for fewer, more in zip(points, points[1:]):
        assert more["dram_gb"] > fewer["dram_gb"]
        assert more["peak_tflops"] < fewer["peak_tflops"]
        assert more["d2d_gb_per_s_per_edge"] < fewer["d2d_gb_per_s_per_edge"]


def test_spare_cores_trade_peak_for_yield():
    template = load_template("watos-wafer")
    plain = derive(template, {"core_area_mm2": 1.0})
    spared = derive(template, {"core_area_mm2": 1.0, "spare_cores_per_die": 8})
    assert plain["die_yield"] == pytest.approx(derive(template, {})["die_yield"])  # no spares: all defects kill
    assert spared["die_yield"] > plain["die_yield"] and spared["peak_tflops"] < plain["peak_tflops"]
    with pytest.raises(WatosError, match="spare_cores_per_die"):
        derive(template, {"core_area_mm2": 100.0, "spare_cores_per_die": 5})


@pytest.mark.parametrize("point,message", [
    ({"die_width_mm": 40}, "exceeds the reticle"),
    ({"dram_stacks_per_die": 10}, "shoreline"),
    ({"dram_stacks_per_die": -1}, "dram_stacks_per_die"),
    ({"hbm": 3}, "unknown variable 'hbm'"),
])
def test_impossible_points_name_the_problem(point, message):
    with pytest.raises(WatosError, match=message):
        derive(load_template("watos-wafer"), point)
    record = evaluate_point({"template": "watos-wafer", "point": point, "models": ["llama3-8b"], "seq": 128,
                             "dtype": "bf16", "batch_per_die": 1})
    assert message.split("'")[0] in record["infeasible"]  # an infeasible design is a result


def test_spaces(tmp_path):
    template = load_template("watos-wafer")
    space = tmp_path / "space.yaml"
    space.write_text("dram_stacks_per_die: [1, 2]\ncompute_fraction: {min: 0.6, max: 0.8, step: 0.1}\n")
    values = load_space(str(space), template)
    assert values == {"dram_stacks_per_die": [1, 2], "compute_fraction": [0.6, 0.7, 0.8]}
    assert len(grid(values)) == 6
    for text, message in [("{}", "empty"), ("hbm: [1]", "unknown variable 'hbm'"),
                          ("compute_fraction: {min: 1, max: 0, step: 0.1}", "range"),
                          ("compute_fraction: []", "non-empty list"), ("[1, 2", "space.yaml")]:
        space.write_text(text)
        with pytest.raises(WatosError, match=message):
            load_space(str(space), template)


@pytest.fixture
def small_sweep(tmp_path):
    """A tiny model on a 2 x 2-die wafer: each point takes a fraction of a second."""
    config = tmp_path / "config.json"
    config.write_text(json.dumps(SMALL_LLAMA))
    template = yaml.safe_load((ROOT / "hw_targets" / "templates" / "watos-wafer.yaml").read_text())
    template.update(name="small-wafer", wafer_width_mm=51, wafer_height_mm=52, sram_mb_per_mm2=0.001,
                    dram_stack={"capacity_gb": 0.004, "bandwidth_gb_per_s": 500, "area_mm2": 30, "shoreline_mm": 11})
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(template))
    space = tmp_path / "space.yaml"
    space.write_text("dram_stacks_per_die: [1, 2, 3, 4, 5, 6]\ncompute_fraction: [0.5, 0.6, 0.7, 0.8, 0.9]\n")
    return ["explore", str(config), "--template", str(path), "--space", str(space), "--seq", "256",
            "--batch-per-die", "4"]


def test_explore_finds_the_best_point_and_its_fronts(capsys, tmp_path, small_sweep):
    out = tmp_path / "out"
    assert main([*small_sweep, "--json", "--out", str(out)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["evaluated"] == 30
    feasible = [p for p in result["points"] if "infeasible" not in p]
    assert result["best"]["throughput"] == max(p["throughput"] for p in feasible)
    assert any("infeasible" in p for p in result["points"])  # one small stack cannot hold the model
    assert set(result["pareto"]) == {"throughput_vs_dram_capacity_gb", "throughput_vs_power_w",
                                     "throughput_vs_compute_area_mm2"}
    for p in result["pareto"]["throughput_vs_dram_capacity_gb"]:  # nothing beats a front point on both axes
        assert not any(q["throughput"] > p["throughput"] and q["dram_capacity_gb"] < p["dram_capacity_gb"]
                       for q in feasible)
    assert json.loads((out / "explore.json").read_text()) == result
    assert (out / "pareto.png").read_bytes()[:4] == b"\x89PNG"


def test_explore_errors_are_one_line(capsys, tmp_path, small_sweep):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nwafer_width_mm: -1\n")
    assert main(["explore", "llama3-8b", "--template", str(bad)]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    empty = tmp_path / "empty.yaml"
    empty.write_text("{}")
    assert main([*small_sweep[:4], "--space", str(empty)]) == 2
    assert "the space is empty" in capsys.readouterr().err


def _records(store: Path) -> dict:
    meta = json.loads(store.read_text().splitlines()[0])["meta"]
    return ResultStore(store, meta=meta).done()


def test_a_sweep_killed_three_times_resumes_to_the_same_results(tmp_path, small_sweep):
    """SIGKILL at random moments, three times, then run to the end: the store holds exactly the points
    and results of an uninterrupted sweep."""
    command = [sys.executable, "-m", "watos", *small_sweep, "--json"]
    whole = tmp_path / "whole.jsonl"
    subprocess.run([*command, "--store", str(whole)], check=True, capture_output=True, cwd=ROOT)
    resumed = tmp_path / "resumed.jsonl"
    rng = random.Random(7)
    for _ in range(3):
        child = subprocess.Popen([*command, "--store", str(resumed)], stdout=subprocess.DEVNULL,
                                 stderr=subprocess.DEVNULL, cwd=ROOT)
        time.sleep(rng.uniform(2.0, 6.0))  # imports and tracing take ~2-4 s, points ~0.1 s each
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    subprocess.run([*command, "--store", str(resumed)], check=True, capture_output=True, cwd=ROOT)
    assert _records(resumed) == _records(whole)
    assert len(_records(whole)) == 30


def test_an_moe_model_is_explored_with_expert_parallelism_and_its_routing_stated(tmp_path, small_sweep):
    from test_cost_moe import MIXTRAL8

    config = tmp_path / "mixtral.json"
    config.write_text(json.dumps(MIXTRAL8))
    template = small_sweep[3]
    record = evaluate_point({"template": template, "point": {"dram_stacks_per_die": 4}, "models": [str(config)],
                             "seq": 64, "dtype": "bf16", "batch_per_die": 4})
    (result,) = record["results"].values()
    assert result["plan"]["ep"] > 1 and result["plan"]["dp"] % result["plan"]["ep"] == 0
    assert result["moe_routing"].startswith("balanced top-2 of 8 experts")
