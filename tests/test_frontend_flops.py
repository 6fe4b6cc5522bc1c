"""Forward+backward FLOPs against closed forms (which live here, in tests, never in the tool)."""
import json

import pytest
from conftest import traced_summary

from watos.models import config_text


def korthikanti_eq7(batch: int, layers: int, seq: int, hidden: int, vocab: int) -> float:
    """Korthikanti et al. 2022, Eq. 7 (no recomputation): 72·B·L·s·h²·(1 + s/6h + V/12hL)."""
    return 72 * batch * layers * seq * hidden**2 * (1 + seq / (6 * hidden) + vocab / (12 * hidden * layers))


def llama_matmul_flops(batch: int, seq: int, c: dict) -> float:
    """Forward+backward matmul FLOPs of a Llama-shaped decoder (see docs/ir.md, "FLOPs").

    Per layer, forward: Q and O projections 2·b·s·h·h each, K and V 2·b·s·h·(kv·d) each, the SwiGLU MLP
    3 · 2·b·s·h·f, attention QKᵀ and PV 2 · 2·b·s²·h (full square); LM head 2·b·s·h·V. Backward is
    twice forward (input and weight gradients), so the step is 3x forward.
    """
    h, f, n_layers, vocab = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"], c["vocab_size"]
    head_dim = h // c["num_attention_heads"]
    kv = c["num_key_value_heads"] * head_dim
    per_layer = 2 * batch * seq * (2 * h * h + 2 * h * kv + 3 * h * f) + 4 * batch * seq * seq * h
    return 3 * (n_layers * per_layer + 2 * batch * seq * h * vocab)


@pytest.mark.parametrize("name", ["gpt2", "gpt3-1.3b", "gpt3-6.7b", "gpt3-13b", "gpt3-175b"])
def test_gpt_flops_match_korthikanti_eq7(name):
    c = json.loads(config_text(name))
    seq, batch = (1024 if name == "gpt2" else 2048), 2
    s = traced_summary(name, seq_len=seq, micro_batch=batch)
    expected = korthikanti_eq7(batch, c["n_layer"], seq, c["n_embd"], c["vocab_size"])
    assert (s["forward_flops"] + s["backward_flops"]) == pytest.approx(expected, rel=0.01)
    assert s["backward_flops"] == pytest.approx(2 * s["forward_flops"], rel=0.01)


@pytest.mark.parametrize("name", ["llama-30b", "llama2-7b", "llama2-70b", "llama3-8b", "llama3-70b",
                                  "llama3.1-405b", "mistral-7b"])
def test_llama_flops_match_analytic_count(name):
    c = json.loads(config_text(name))
    s = traced_summary(name, seq_len=2048, micro_batch=1)
    assert (s["forward_flops"] + s["backward_flops"]) == pytest.approx(llama_matmul_flops(1, 2048, c), rel=0.01)


def test_flops_scale_with_micro_batch():
    one = traced_summary("llama2-7b", seq_len=256, micro_batch=1)
    four = traced_summary("llama2-7b", seq_len=256, micro_batch=4)
    # Batch-independent ops (rotary tables) keep it from being exactly 4x.
    assert four["forward_flops"] == pytest.approx(4 * one["forward_flops"], rel=1e-4)
    assert four["forward_flops"] != one["forward_flops"]


def test_eager_and_sdpa_attention_count_the_same_matmul_flops():
    sdpa = traced_summary("gpt3-1.3b", seq_len=512)
    eager = traced_summary("gpt3-1.3b", seq_len=512, attention="eager")
    assert eager["forward_flops"] == pytest.approx(sdpa["forward_flops"], rel=0.01)


def test_moe_expert_matmuls_count_each_routed_token_once():
    """Mixtral's grouped expert matmuls (transformers 5 ``_grouped_mm``): s·k routed rows through the fused
    gate/up [E, h, 2f] and the down [E, f, h] weights: 6·(s·k)·h·f forward, twice that backward,
    whatever the number of experts E."""
    from conftest import FAMILIES

    import watos

    config = FAMILIES["mixtral"]
    s, k, h, f = 64, config["num_experts_per_tok"], config["hidden_size"], config["intermediate_size"]
    graph = watos.trace(config, seq_len=s)
    rep = graph.block_groups[0].representative
    grouped = [op for op in graph.ops if op.block == rep and op.aten.startswith("aten._grouped_mm")]
    forward = sum(op.flops for op in grouped if op.phase.value == "forward")
    backward = sum(op.flops for op in grouped if op.phase.value == "backward")
    assert forward == 6 * s * k * h * f and backward == 2 * forward
