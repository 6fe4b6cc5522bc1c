"""The costing pipeline: Korthikanti et al. 2022 (Tables 2 and 4), plan errors, invariants."""
import functools
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import watos
from watos import Plan, WatosError, cost_plan, load_target
from watos.cli import main
from watos.plan import check_plan, software_of
from watos.validation.cases import CaseModel, hf_config
from watos.validation.predict import lowered_case

A100 = load_target("dgx-a100-80g")
GPT_22B = CaseModel(family="gpt", hidden=6144, layers=48, heads=64, ffn=24576, vocab=51200, seq=2048)


@functools.lru_cache(maxsize=None)
def gpt_22b(micro_batch: int):
    return lowered_case(json.dumps(hf_config(GPT_22B), sort_keys=True), 2048, micro_batch, "basic", "fp16")


def per_layer(plan: Plan) -> dict:
    graph = cost_plan(gpt_22b(plan.micro_batch), A100, plan, dtype="fp16")
    rep = str(graph.block_groups[0].representative)
    return {"cost": graph.analyses["device_cost"].parts[rep], "bytes": graph.analyses["recompute"].block_bytes[plan.recompute][rep]}


# Korthikanti et al. 2022, Table 4: one layer of the 22B model, tp 8, micro-batch 4: (forward, backward) ms.
TABLE4 = {("none", False): (7.7, 11.9), ("none", True): (7.2, 11.8), ("full", False): (7.7, 19.5),
          ("selective", False): (7.7, 13.2), ("selective", True): (7.2, 13.1)}


@pytest.mark.parametrize("mode", list(TABLE4))
def test_layer_times_match_korthikanti_table4(mode):
    recompute, sp = mode
    cost = per_layer(Plan(tp=8, micro_batch=4, global_batch=4, recompute=recompute, sequence_parallel=sp))["cost"]
    forward = (cost["fwd"] + cost["tp_comm_fwd"]) * 1e3
    backward = (cost["bwd"] + cost["tp_comm_bwd"] + cost.get("recompute:" + recompute, 0.0)) * 1e3
    assert forward == pytest.approx(TABLE4[mode][0], rel=0.10)
    assert backward == pytest.approx(TABLE4[mode][1], rel=0.10)


def table2(mode: str, s: int, b: int, h: int, a: int, t: int) -> float:
    """Korthikanti et al. 2022, Table 2: activation bytes per layer (16-bit)."""
    sbh = s * b * h
    return {"tp": sbh * (10 + 24 / t + 5 * a * s / (h * t)), "tp+sp": sbh / t * (34 + 5 * a * s / h),
            "tp+selective": sbh * (10 + 24 / t), "tp+sp+selective": 34 * sbh / t, "full": 2 * sbh}[mode]


@pytest.mark.parametrize("mode,recompute,sp", [("tp", "none", False), ("tp+sp", "none", True),
                                               ("tp+selective", "selective", False),
                                               ("tp+sp+selective", "selective", True), ("full", "full", False)])
def test_activation_memory_matches_korthikanti_table2(mode, recompute, sp):
    kept = per_layer(Plan(tp=8, micro_batch=1, global_batch=1, recompute=recompute, sequence_parallel=sp))["bytes"]
    assert kept == pytest.approx(table2(mode, 2048, 1, 6144, 64, 8), rel=0.03)


@pytest.mark.parametrize("plan,heads,message", [
    (Plan(tp=3), 64, "tp=3 does not divide the 64 attention heads"),
    (Plan(tp=4, pp=8, dp=1), 64, "but the target has 56 devices"),
    (Plan(dp=4, micro_batch=2, global_batch=12), 64, "not a multiple of dp·micro_batch"),
    (Plan(pp=100), 64, "exceeds the 80 blocks"),
])
def test_plans_that_do_not_divide(plan, heads, message):
    with pytest.raises(WatosError, match=message):
        check_plan(plan, heads=heads, kv_heads=8, layers=80, seq_len=4096, devices=56 if plan.tp == 4 else None)


def test_compile_json(capsys):
    assert main(["compile", "gpt2", "--target", "dgx-a100-80g", "--tp", "4", "--dp", "2", "--micro-batch", "2",
                 "--global-batch", "16", "--recompute", "selective", "--seq", "512", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    for key in ("step_time_s", "tokens_per_s", "mfu", "hfu", "peak_memory_bytes_per_device", "breakdown_s"):
        assert key in result
    assert 0 < result["mfu"] <= result["hfu"] <= 1


def test_compile_dumps_every_pass(tmp_path, capsys):
    dump = tmp_path / "d"
    assert main(["compile", "gpt2", "--target", "watos-config3", "--tp", "4", "--pp", "2", "--dp", "7",
                 "--global-batch", "14", "--seq", "256", "--dump-ir", str(dump)]) == 0
    names = sorted(p.stem for p in dump.glob("*.txt"))
    assert names[-8:] == ["005_fuse", "006_tensor_roles", "007_shard", "008_pipeline", "009_recompute", "010_place",
                          "011_device_cost", "012_schedule"]
    assert "all_reduce[collective]" in (dump / "007_shard.txt").read_text()


SMALL = CaseModel(family="llama", hidden=512, layers=8, heads=8, kv_heads=4, ffn=1408, vocab=4096, seq=512)


@functools.lru_cache(maxsize=None)
def small(micro_batch: int, target: str):
    """The small Llama lowered for a shipped target's stack."""
    software = software_of(Plan(), load_target(target))
    return lowered_case(json.dumps(hf_config(SMALL), sort_keys=True), 512, micro_batch, software.fusion, "bf16",
                        software.fused_loss)


plans = st.builds(lambda tp, pp, dp, b, m, r, sp, z: Plan(tp=tp, pp=pp, dp=dp, micro_batch=b,
                                                         global_batch=dp * b * m, recompute=r,
                                                         sequence_parallel=sp and tp > 1, zero=z),
                  st.sampled_from([1, 2, 4]), st.sampled_from([1, 2, 4]), st.sampled_from([1, 2, 3]),
                  st.sampled_from([1, 2]), st.integers(1, 8), st.sampled_from(["none", "selective", "full"]),
                  st.booleans(), st.sampled_from([0, 1, 3]))


@settings(max_examples=30, deadline=None)
@given(plan=plans, target=st.sampled_from(["dgx-a100-80g", "watos-config3"]))
def test_cost_invariants(plan, target):
    hardware = load_target(target)
    graph = small(plan.micro_batch, target)
    cost = cost_plan(graph, hardware, plan).analyses["cost"]
    peak = hardware.device.peak_tflops["bf16"] * 1e12
    assert 0 < cost["mfu"] <= cost["hfu"] <= 1
    # Never faster than the devices' peak FLOP rate allows, counted from the graph itself.
    step_flops = graph.total("flops", (op for op in graph.ops if op.phase.value != "optimizer")) \
        * plan.sequences_per_step / plan.micro_batch
    assert cost["step_time_s"] >= step_flops / (plan.devices * peak)
    # Work summed over devices: the graph's FLOPs for every sequence, plus recomputation, plus the
    # replicated (not TP-split) ops every TP rank repeats.
    recomputed = cost["hfu"] / cost["mfu"] - 1
    assert cost["executed_flops_per_step"] >= step_flops * (1 + recomputed) * (1 - 1e-9)
    if plan.tp == 1:
        assert cost["executed_flops_per_step"] == pytest.approx(step_flops * (1 + recomputed), rel=1e-9)
    # More recomputation never needs more memory.
    memory = [cost_plan(graph, hardware, plan.model_copy(update={"recompute": r})).analyses["cost"]
              ["peak_memory_bytes_per_device"] for r in ("none", "selective", "full")]
    assert memory[0] >= memory[1] >= memory[2]


@pytest.mark.parametrize("text,needle", [("- tp: 2", "a plan must be a YAML mapping"),
                                         ("tp: [", "malformed YAML at line 1"),
                                         ("tp: 2\ncolour: red", "colour: unknown field")])
def test_bad_plan_file(tmp_path, capsys, text, needle):
    plan = tmp_path / "plan.yaml"
    plan.write_text(text)
    assert main(["compile", "gpt2", "--target", "dgx-a100-80g", "--plan", str(plan)]) == 2
    err = capsys.readouterr().err
    assert needle in err and str(plan) in err and err.count("\n") == 1


def test_zero3_gathers_parameters_every_micro_batch_and_prefetches_them_under_compute():
    """ZeRO 3 (Rajbhandari et al. 2020): per parameter a gradient reduce-scatter and two parameter all-gathers in
    every micro-batch; ZeRO 1 (the distributed optimizer) a reduce-scatter and an all-gather once per step.
    Prefetched one layer ahead, only the first layer's gather is exposed; on links 10^4 times slower the
    per-micro-batch traffic outgrows the compute and the step grows with the micro-batches."""
    hardware = load_target("watos-config3")
    graph = small(1, "watos-config3")

    def costed(zero: int, micro_batches: int, target=hardware):
        plan = Plan(dp=4, zero=zero, global_batch=4 * micro_batches)
        return cost_plan(graph, target, plan)

    for zero, expected in ((1, [("reduce_scatter", True), ("all_gather", True)]),
                           (3, [("reduce_scatter", False), ("all_gather", False), ("all_gather", False)])):
        kinds: dict[str, list] = {}
        for op in costed(zero, 2).ops:
            if "per_step" in op.attrs:
                kinds.setdefault(op.attrs["param"], []).append((op.target, op.attrs["per_step"]))
        assert kinds and all(k == expected for k in kinds.values())
    fast = [costed(3, m).analyses["cost"] for m in (2, 4)]
    exposed = [cost["breakdown_s"]["zero_comm"] for cost in fast]
    assert 0 < exposed[0] < 0.05 * fast[0]["step_time_s"] and exposed[1] == pytest.approx(2 * exposed[0])
    mesh = hardware.topology
    links = mesh.model_copy(update={"link_bandwidth_gb_per_s_per_direction": mesh.link_bandwidth_gb_per_s_per_direction / 1e4})
    slow = hardware.model_copy(update={"topology": links})
    exposed = [costed(3, m, slow).analyses["cost"]["breakdown_s"]["zero_comm"] for m in (2, 4)]
    assert exposed[0] > 0.5 * costed(3, 2, slow).analyses["cost"]["step_time_s"]
    assert exposed[1] == pytest.approx(2 * exposed[0])
    assert costed(1, 4, slow).analyses["cost"]["breakdown_s"]["zero_comm"] == 0.0


def test_every_strategy_reports_one_schema():
    """3D and weight-streaming plans end in the same step-metrics function: the same keys, breakdown parts and
    stage fields; weight streaming counts its model FLOPs and its recomputation (HFU above MFU), and its
    devices are the plan's, so a tensor-parallel split cannot lift MFU past the peak."""
    from typing import get_type_hints

    wafer, cs2 = load_target("watos-config3"), load_target("cerebras-cs2")
    three_d = cost_plan(small(1, "watos-config3"), wafer, Plan(tp=2, dp=2, global_batch=4, recompute="full"))
    streamed = cost_plan(small(1, "cerebras-cs2"), cs2, Plan(strategy="weight-streaming", tp=2, dp=2, global_batch=8,
                                                           recompute="full")).analyses["cost"]
    three_d = three_d.analyses["cost"]
    assert set(three_d) == set(streamed) == set(get_type_hints(watos.StepMetrics))
    assert set(three_d["breakdown_s"]) == set(streamed["breakdown_s"])
    assert set(three_d["stages"][0]) == set(streamed["stages"][0])
    assert set(three_d["stages"][0]["memory"]) == set(streamed["stages"][0]["memory"])
    assert streamed["model_flops_per_step"] == pytest.approx(three_d["model_flops_per_step"] * 2)  # twice the batch
    assert 0 < streamed["mfu"] < streamed["hfu"] <= 1
    assert streamed["executed_flops_per_step"] > streamed["model_flops_per_step"]
    options = streamed["stages"][0]["options"]
    assert options["full"]["total_bytes"] < options["none"]["total_bytes"]
