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
