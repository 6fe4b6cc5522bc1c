"""`watos validate` on published runs (shared/validation). CI runs a two-case subset; --slow runs all."""
import csv
import json
from pathlib import Path

import pytest

from watos.cli import main

# The checkout (and CI's clone) has shared/ beside it.
PUBLIC = Path(__file__).parents[2] / "shared" / "validation" / "public.json"

pytestmark = pytest.mark.skipif(not PUBLIC.exists(), reason="shared/validation/public.json not beside the checkout")


def validated(capsys, path, *flags) -> dict:
    """``watos validate PATH --json [FLAGS]``: it succeeds, and its JSON."""
    assert main(["validate", str(path), "--json", *flags]) == 0
    return json.loads(capsys.readouterr().out)


def subset(tmp_path, ids):
    data = json.loads(PUBLIC.read_text())
    data["cases"] = [c for c in data["cases"] if c["id"] in ids]
    path = tmp_path / "cases.json"
    path.write_text(json.dumps(data))
    return str(path)


def test_validate_json_format_and_chosen_knobs(tmp_path, capsys):
    path = subset(tmp_path, {"korthikanti2022-table5-22B-full", "narayanan2021-table1-7.5B"})
    table = tmp_path / "cases.csv"
    result = validated(capsys, path, "--csv", str(table))
    rows = list(csv.DictReader(table.open()))
    assert [r["id"] for r in rows] == [c["id"] for c in result["cases"]]
    assert [float(r["error"]) for r in rows] == pytest.approx([c["error"] for c in result["cases"]])
    assert {"cases", "mean_abs_error", "max_abs_error", "by_framework", "by_hardware", "memory", "rankings",
            "predicted", "not_available", "misses"} == set(result)
    for case in result["cases"]:
        assert {"id", "predicted_tokens_per_s_per_device", "measured_tokens_per_s_per_device", "error",
                "chosen"} <= set(case)
        assert abs(case["error"]) < 0.08
        assert case["predicted_peak_memory_gib_per_device"] < 80 and case["measured_peak_memory_gib_per_device"] is None
    chosen = {c["id"]: c["chosen"] for c in result["cases"]}
    assert chosen["korthikanti2022-table5-22B-full"]["micro_batch"] == 4  # published, kept
    assert chosen["narayanan2021-table1-7.5B"]["micro_batch"] in (1, 2, 4, 8, 16)  # null, chosen


@pytest.mark.slow
@pytest.mark.xfail(reason="issue 12: after the public_v2 refit public.json is at 3.34 % mean / 6.8 % max (needs 3 %)",
                   strict=False)
def test_public_set_accuracy(full_size, capsys):
    if not full_size:
        pytest.skip("full public set only under --slow")
    result = validated(capsys, PUBLIC)
    assert result["mean_abs_error"] <= 0.03 and result["max_abs_error"] <= 0.08


@pytest.mark.slow
@pytest.mark.xfail(reason="issue 12: public_v2 is at 12.2 % mean over 48 predicted cases, 3 predicted not to fit",
                   strict=False)
def test_public_v2_accuracy(full_size, capsys):
    if not full_size:
        pytest.skip("full public_v2 set only under --slow")
    result = validated(capsys, PUBLIC.with_name("public_v2.json"))
    assert result["misses"] == 0
    assert result["mean_abs_error"] <= 0.05 and result["max_abs_error"] <= 0.15
    assert all(group["mean_abs_error"] <= 0.08 for group in result["by_framework"].values())


@pytest.mark.parametrize("text,needle", [
    ("{", "malformed JSON"),
    ('{"format": "other", "cases": []}', "not a watos-validation-cases/1 or watos-validation-cases/2 file"),
    ('{"format": "watos-validation-cases/1", "cases": []}', "no cases"),
    ('{"format": "watos-validation-cases/1", "cases": [{"id": "x"}]}', "case x: model"),
])
def test_bad_validation_file(tmp_path, capsys, text, needle):
    path = tmp_path / "cases.json"
    path.write_text(text)
    assert main(["validate", str(path)]) == 2
    assert needle in capsys.readouterr().err


def test_every_strategy_in_the_format_is_predicted(tmp_path, capsys):
    """Grouped-query attention with ZeRO-3 on H100 nodes, and Cerebras weight streaming."""
    llama = {"family": "llama", "hidden": 1024, "layers": 4, "heads": 16, "kv_heads": 4, "ffn": 2816,
             "vocab": 8192, "seq": 1024}
    gpt = {"family": "gpt", "hidden": 1024, "layers": 4, "heads": 16, "ffn": 4096, "vocab": 8192, "seq": 1024}
    cases = [
        {"id": "gqa-zero3", "model": llama, "system": {"target": "dgx-h100-80g", "devices": 16, "precision": "bf16"},
         "plan": {"strategy": "3d", "tp": 2, "pp": 1, "dp": 8, "cp": 1, "global_batch": 64, "micro_batch": None,
                  "recompute": None, "sequence_parallel": None, "zero": 3, "interleave": None},
         "measured": {"tokens_per_s_per_device": 10000.0}},
        {"id": "weight-streaming", "model": gpt, "system": {"target": "cerebras-cs2", "devices": 2, "precision": "fp16"},
         "plan": {"strategy": "weight-streaming", "tp": 1, "pp": 1, "dp": 2, "cp": 1, "global_batch": 32,
                  "micro_batch": None, "recompute": "none", "sequence_parallel": False, "zero": 0, "interleave": None},
         "measured": {"tokens_per_s_per_device": 10000.0}},
    ]
    path = tmp_path / "cases.json"
    path.write_text(json.dumps({"format": "watos-validation-cases/1", "cases": cases}))
    result = {c["id"]: c for c in validated(capsys, path)["cases"]}
    assert result["gqa-zero3"]["predicted_tokens_per_s_per_device"] > 0
    assert result["gqa-zero3"]["chosen"]["recompute"] in ("none", "selective", "full")
    assert result["weight-streaming"]["predicted_tokens_per_s_per_device"] > 0


LLAMA = {"family": "llama", "hidden": 512, "layers": 2, "heads": 8, "kv_heads": 4, "ffn": 1024, "vocab": 4096,
         "seq": 512}


def _v2_case(case_id: str, source: str, target: str, tokens: float, model=None, stack=None, **plan) -> dict:
    return {"id": case_id, "source": source, "model": model or LLAMA,
            "system": {"target": target, "devices": plan.get("dp", 8), "precision": "bf16"},
            "stack": stack or {"framework": "megatron-core", "attention": "flash"},
            "plan": {"strategy": "3d", "tp": 1, "pp": 1, "dp": 8, "cp": 1, "ep": 1, "global_batch": 64,
                     "micro_batch": 1, "recompute": "none", "sequence_parallel": False, "zero": 1,
                     "interleave": None, **plan},
            "measured": {"tokens_per_s_per_device": tokens}}


def test_v2_never_aborts_and_says_what_it_assumed(tmp_path, capsys):
    """A target that does not ship, a run no plan fits (reported with its memory, a miss), and a framework no
    stack stands for (the target's own stack with the stated features, and a note) are all results."""
    huge = {"family": "llama", "hidden": 16384, "layers": 126, "heads": 128, "kv_heads": 8, "ffn": 53248,
            "vocab": 128256, "seq": 512}
    cases = [_v2_case("no-target", "a", "tpu-v9", 1000.0),
             _v2_case("too-big", "b", "dgx-a100-80g", 10.0, model=huge, zero=0),
             _v2_case("unknown-framework", "c", "dgx-h100-80g", 50000.0,
                      stack={"framework": "my-trainer", "attention": "flash", "overlap_grad_reduce": True})]
    path = tmp_path / "v2.json"
    path.write_text(json.dumps({"format": "watos-validation-cases/2", "cases": cases}))
    result = validated(capsys, path)
    by_id = {c["id"]: c for c in result["cases"]}
    assert by_id["no-target"]["status"] == "target not available" and "error" not in by_id["no-target"]
    assert by_id["too-big"]["status"] == "does not fit" and by_id["too-big"]["error"] == -1.0
    assert by_id["too-big"]["predicted_peak_memory_gib_per_device"] > 80
    unknown = by_id["unknown-framework"]
    assert unknown["status"] == "predicted" and unknown["stack"] == "megatron-core" and "my-trainer" in unknown["note"]
    assert result["not_available"] == 1 and result["misses"] == 1 and result["predicted"] == 2
    assert set(result["by_framework"]) == {"megatron-core", "my-trainer"}


def test_calibration_starts_from_priors_and_reads_the_shipped_values():
    from watos.hardware.target import load_target
    from watos.validation.calibrate import KNOBS, Calibration

    blind, shipped = Calibration(), Calibration.shipped()
    assert all(blind.value(k) == k.prior for k in KNOBS)
    a100 = load_target("dgx-a100-80g").device.efficiency
    assert shipped.value(next(k for k in KNOBS if k.name == "dgx-a100-80g:device.efficiency.matmul_max")) \
        == a100.matmul_max
    # a calibration's target borrows the calibrated chip's efficiency, whatever the shipped file holds
    trial = Calibration({"dgx-h100-80g:device.efficiency.matmul_max": 0.5})
    assert trial.target("grandteton-h100-96g").device.efficiency.matmul_max == 0.5
    assert trial.target("grandteton-h100-96g").device.efficiency.memory == blind.value(
        next(k for k in KNOBS if k.name == "dgx-h100-80g:device.efficiency.memory"))


def test_leave_one_source_out_never_sees_the_source_it_predicts():
    """Two sources on the B200 chip: each is predicted by knobs fitted on the other only, so their prediction
    of a source does not move when that source's own measurement does."""
    from watos.validation.calibrate import leave_one_source_out
    from watos.validation.cases import Case

    def cases(tokens_a: float) -> list[Case]:
        return [Case(**_v2_case("a", "source-a", "dgx-b200", tokens_a)),
                Case(**_v2_case("b", "source-b", "dgx-b200", 150000.0, micro_batch=2))]

    first, second = leave_one_source_out(cases(100000.0)), leave_one_source_out(cases(300000.0))
    a_first, a_second = first["sources"]["source-a"]["errors"]["a"], second["sources"]["source-a"]["errors"]["a"]
    assert (1 + a_first) * 100000.0 == pytest.approx((1 + a_second) * 300000.0)  # same prediction of a
    assert first["sources"]["source-b"]["errors"]["b"] != second["sources"]["source-b"]["errors"]["b"]
