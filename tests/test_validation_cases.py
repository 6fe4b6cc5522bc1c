"""`watos validate` on published runs (shared/validation). CI runs a two-case subset; --slow runs all."""
import json
from pathlib import Path

import pytest

from watos.cli import main

# The checkout (and CI's clone) has shared/ beside it.
PUBLIC = Path(__file__).parents[2] / "shared" / "validation" / "public.json"

pytestmark = pytest.mark.skipif(not PUBLIC.exists(), reason="shared/validation/public.json not beside the checkout")


def subset(tmp_path, ids):
    data = json.loads(PUBLIC.read_text())
    data["cases"] = [c for c in data["cases"] if c["id"] in ids]
    path = tmp_path / "cases.json"
    path.write_text(json.dumps(data))
    return str(path)


def test_validate_json_format_and_chosen_knobs(tmp_path, capsys):
    path = subset(tmp_path, {"korthikanti2022-table5-22B-full", "narayanan2021-table1-7.5B"})
    assert main(["validate", path, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
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
@pytest.mark.xfail(reason="issue 3: calibration not yet within 3 % MAE / 8 % max (now 3.48 % / 7.21 %)",
                   strict=False)
def test_public_set_accuracy(full_size, capsys):
    if not full_size:
        pytest.skip("full public set only under --slow")
    assert main(["validate", str(PUBLIC), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["mean_abs_error"] <= 0.03 and result["max_abs_error"] <= 0.08


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
    assert main(["validate", str(path), "--json"]) == 0
    result = {c["id"]: c for c in json.loads(capsys.readouterr().out)["cases"]}
    assert result["gqa-zero3"]["predicted_tokens_per_s_per_device"] > 0
    assert result["gqa-zero3"]["chosen"]["recompute"] in ("none", "selective", "full")
    assert result["weight-streaming"]["predicted_tokens_per_s_per_device"] > 0
