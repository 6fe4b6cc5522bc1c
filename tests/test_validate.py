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
    assert set(result) == {"cases", "mean_abs_error", "max_abs_error"}
    for case in result["cases"]:
        assert {"id", "predicted_tokens_per_s_per_device", "measured_tokens_per_s_per_device", "error",
                "chosen"} <= set(case)
        assert abs(case["error"]) < 0.08
    chosen = {c["id"]: c["chosen"] for c in result["cases"]}
    assert chosen["korthikanti2022-table5-22B-full"]["micro_batch"] == 4  # published, kept
    assert chosen["narayanan2021-table1-7.5B"]["micro_batch"] in (1, 2, 4, 8, 16)  # null, chosen


@pytest.mark.slow
@pytest.mark.xfail(reason="issue 3: calibration not yet within 3 % MAE / 8 % max (now 4.96 % / 14.7 %)",
                   strict=False)
def test_public_set_accuracy(full_size, capsys):
    if not full_size:
        pytest.skip("full public set only under --slow")
    assert main(["validate", str(PUBLIC), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["mean_abs_error"] <= 0.03 and result["max_abs_error"] <= 0.08


@pytest.mark.parametrize("text,needle", [
    ("{", "malformed JSON"),
    ('{"format": "other", "cases": []}', "not a watos-validation-cases/1 file"),
    ('{"format": "watos-validation-cases/1", "cases": []}', "no cases"),
    ('{"format": "watos-validation-cases/1", "cases": [{"id": "x"}]}', "case x: model"),
])
def test_bad_validation_file(tmp_path, capsys, text, needle):
    path = tmp_path / "cases.json"
    path.write_text(text)
    assert main(["validate", str(path)]) == 2
    assert needle in capsys.readouterr().err
