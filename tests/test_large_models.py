"""Large-model checks. CI runs them in a small form; `pytest --slow` runs them at full size."""
import pytest
from conftest import traced_summary

pytestmark = pytest.mark.slow

TOTALS = ["forward_flops", "backward_flops", "optimizer_flops", "bytes_moved", "activation_bytes_total",
          "ops", "parameters"]


def test_replicated_trace_equals_full_trace_of_a_shipped_model(full_size):
    model, seq = ("llama3-70b", 4096) if full_size else ("gpt2", 256)
    replicated = traced_summary(model, seq_len=seq)
    full = traced_summary(model, seq_len=seq, replicate_blocks=False)
    assert full["traced_blocks"] == full["blocks"] > replicated["traced_blocks"]
    assert {k: replicated[k] for k in TOTALS} == {k: full[k] for k in TOTALS}


def test_largest_shipped_model_traces(full_size):
    seq = 8192 if full_size else 1024
    s = traced_summary("llama3.1-405b", seq_len=seq)
    assert s["parameters"] == 405_853_388_800 and s["blocks"] == 126
    # A training step of a dense decoder is about 6 FLOPs per parameter per token, plus attention.
    tokens = seq
    assert 6 * s["parameters"] * tokens < s["forward_flops"] + s["backward_flops"] < 8 * s["parameters"] * tokens


def test_moe_search_on_several_wafers_uses_expert_parallelism_and_costs_a_given_plan(full_size, tmp_path, capsys):
    """DeepSeek-V3 on four wafers with the paper's D(1)T(4)P(14) plan considered (small form: a tiny
    DeepSeek-V3, MLA and 16 experts, on two 2 x 4-die wafers of 4 MB DRAM and no SRAM per die)."""
    import json

    import yaml
    from conftest import FAMILIES

    from watos.cli import main

    if full_size:
        model, target, seq = "deepseek-v3-671b", "watos-4wafer-1800", "4096"
        given = "tp=4,pp=14,dp=4,ep=4,zero=1,sequence_parallel=true"
    else:
        model = str(tmp_path / "tiny-deepseek.json")
        tiny = dict(FAMILIES["deepseek_v3"], n_routed_experts=16, moe_intermediate_size=64)
        (tmp_path / "tiny-deepseek.json").write_text(json.dumps(tiny))
        wafers = yaml.safe_load(open("hw_targets/watos-4wafer-1800.yaml"))
        wafers["topology"].update(rows=2, cols=4)
        wafers["systems"]["count"] = 2
        wafers["device"].update(dram_capacity_gb=0.004, sram_capacity_mb=0)
        target = str(tmp_path / "two-wafers.yaml")
        (tmp_path / "two-wafers.yaml").write_text(yaml.safe_dump(wafers))
        given, seq = "tp=2,pp=2,dp=4,ep=4,zero=1", "128"
    assert main(["search", model, "--target", target, "--seq", seq, "--consider", given, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    best, (considered,) = result["best"], result["considered"]
    capacity_gb = 70 + 0.885 if full_size else 0.004  # DRAM and SRAM per die
    assert best["plan"]["ep"] > 1 and best["peak_dram_gb_per_die"] <= capacity_gb
    assert considered["plan"]["ep"] == 4 and 0 < considered["tokens_per_s"] <= best["tokens_per_s"]
    assert {"megatron", "cerebras-ws"} <= set(result["baselines"])
    assert "balanced top-" in result["moe_routing"]
