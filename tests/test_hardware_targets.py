"""Hardware targets: every shipped target loads; bad files give one line naming the file and field."""
from pathlib import Path

import pytest

from watos import WatosError, load_target
from watos.cli import main
from watos.hardware.target import parse_target, shipped_targets

VALID = """
name: t
description: test
device:
  name: d
  peak_tflops: {bf16: 100}
  sram_capacity_mb: 10
  sram_bandwidth_gb_per_s: 0
  dram_capacity_gb: 16
  dram_bandwidth_gb_per_s: 1000
  efficiency: {matmul_max: 0.7, matmul_half_gflop: 1, matmul_half_dim: 64, memory: 0.8, network: 0.9}
topology: {kind: mesh2d, rows: 2, cols: 2, link_bandwidth_gb_per_s_per_direction: 100, latency_ns: 100, io_bandwidth_gb_per_s: 10}
"""


def test_every_issue_target_is_shipped_and_loads():
    names = set(shipped_targets())
    assert {"dgx-a100-80g", "dgx-h100-80g", "dgx-b200", "cerebras-cs2", "cerebras-cs3", "dojo-tile",
            "watos-config1", "watos-config2", "watos-config3", "watos-config4"} <= names
    for name in names:
        assert load_target(name).name == name


def test_watos_config3_matches_the_paper():
    t = load_target("watos-config3")
    assert t.devices_per_system == 56
    assert t.device.peak_tflops["bf16"] == pytest.approx(708)
    assert t.device.dram_capacity_gb == pytest.approx(70) and t.device.dram_bandwidth_gb_per_s == 2000
    assert 4 * t.topology.link_bandwidth_gb_per_s_per_direction == 4000


@pytest.mark.parametrize("text,needle", [
    ("name: [unclosed", "malformed YAML at line 1"),
    (VALID.replace("  dram_capacity_gb: 16\n", ""), "device.dram_capacity_gb: missing field"),
    (VALID.replace("name: t\n", "name: t\ncolour: red\n"), "colour: unknown field"),
    (VALID.replace("link_bandwidth_gb_per_s_per_direction: 100", "link_bandwidth_gb_per_s_per_direction: -1"),
     "topology.mesh2d.link_bandwidth_gb_per_s_per_direction"),
    ("- a list", "must be a YAML mapping"),
])
def test_bad_target_names_file_and_field(text, needle):
    with pytest.raises(WatosError) as info:
        parse_target(text, "my.yaml")
    assert str(info.value).startswith("my.yaml: ") and needle in str(info.value)


def test_bad_target_on_the_command_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text(VALID.replace("dram_bandwidth_gb_per_s: 1000", "dram_bandwidth_gb_per_s: -5"))
    code = main(["compile", "gpt2", "--target", str(bad)])
    err = capsys.readouterr().err
    assert code == 2 and "bad.yaml" in err and "dram_bandwidth_gb_per_s" in err and err.count("\n") == 1
    assert main(["compile", "gpt2", "--target", "no-such-target"]) == 2


def test_a_target_can_borrow_calibrated_efficiencies(tmp_path):
    borrowed = load_target("watos-config3").device.efficiency
    assert borrowed == load_target("dgx-a100-80g").device.efficiency
    text = (Path(__file__).parent.parent / "hw_targets" / "watos-config3.yaml").read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("{from: dgx-a100-80g}", "{from: dgx-a100-80g, memory: 0.5}"))
    with pytest.raises(WatosError, match="device.efficiency: 'from' cannot be combined"):
        load_target(str(bad))
    bad.write_text(text.replace("{from: dgx-a100-80g}", "{from: no-such-target}"))
    with pytest.raises(WatosError, match="unknown target 'no-such-target'"):
        load_target(str(bad))


def test_a_mesh_switch_point_of_the_template_is_the_shipped_variant():
    from watos.hardware.template import instantiate, load_template

    switched = instantiate(load_template("watos-wafer"), {"switch_block": 4}).topology
    shipped = load_target("watos-config3-switch").topology
    assert switched.kind == shipped.kind == "mesh_switch"
    assert (switched.rows, switched.cols, switched.switch_block) == (shipped.rows, shipped.cols, 4)
    assert switched.switch_bandwidth_gb_per_s_per_direction == pytest.approx(1000, rel=1e-3)
    assert switched.link_bandwidth_gb_per_s_per_direction == pytest.approx(750, rel=1e-3)
