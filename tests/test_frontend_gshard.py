"""GShard (models/gshard.py), a family defined in watos.models: parameters, expert FLOPs, config errors."""
import json
import math

import pytest
import torch
from conftest import traced

import watos
from watos.ir import OpKind, Phase
from watos.models import config_names, config_text
from watos.models.gshard import top_k_gating

TINY = {"model_type": "gshard", "vocab_size": 512, "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 4, "num_attention_heads": 4, "num_experts": 4, "capacity_factor": 1.25}


def gshard_parameters(c: dict) -> int:
    """Per block attention 4d² and two layer norms 2·2d; dense FFN 2df in even blocks, E experts of 2df
    and a router dE in odd ones; the embedding (twice if untied) and the final norm 2d."""
    d, f, layers, experts = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"], c["num_experts"]
    moe = layers // 2
    embedding = c["vocab_size"] * d * (1 if c.get("tie_word_embeddings", True) else 2)
    return (layers * (4 * d * d + 4 * d) + (layers - moe) * 2 * d * f + moe * (experts * 2 * d * f + d * experts)
            + embedding + 2 * d)


def ir_parameter_count(graph) -> int:
    return sum(op.outputs[0].numel * graph.weight(op) for op in graph.ops if op.kind is OpKind.PARAM)


@pytest.mark.parametrize("tied", [True, False])
def test_tiny_config_traces_with_the_formula_parameter_count(write_config, tied):
    config = {**TINY, "tie_word_embeddings": tied}
    graph = traced(write_config(config, f"gshard-{tied}"), seq_len=32, micro_batch=2)
    assert graph.model.family == "gshard" and graph.model.num_blocks == 4
    assert [g.blocks for g in graph.block_groups] == [[0, 2], [1, 3]]
    assert graph.model.parameters == ir_parameter_count(graph) == gshard_parameters(config)


@pytest.mark.parametrize("seq,micro_batch", [(32, 2), (50, 1)])
def test_expert_matmul_flops_include_capacity_padding(seq, micro_batch):
    """Forward: wi and wo each 2·E·C·d·f per group (one group per sequence), C = ceil(1.25·2·S/E) slots
    per expert whether filled or not; backward twice that (input and weight gradients)."""
    graph = watos.trace(TINY, seq_len=seq, micro_batch=micro_batch)
    capacity = math.ceil(TINY["capacity_factor"] * 2 * seq / TINY["num_experts"])
    experts = {op.id: op for op in graph.ops if op.kind is OpKind.MATMUL and op.phase is Phase.FORWARD
               and set(op.params) & {"model.layers.1.mlp.wi", "model.layers.1.mlp.wo"}}
    forward = sum(op.flops for op in experts.values())
    backward = sum(op.flops for op in graph.ops if op.kind is OpKind.MATMUL and op.grad_of in experts)
    per_group = 2 * TINY["num_experts"] * capacity * TINY["hidden_size"] * TINY["intermediate_size"] * 2
    assert forward == micro_batch * per_group and backward == 2 * forward


def test_gating_matches_algorithm_1():
    """Static-shape gating against GShard's Algorithm 1 written as its loops (without random dispatch)."""
    torch.manual_seed(0)
    logits, capacity = torch.randn(2, 12, 4), 4
    combine, dispatch = top_k_gating(logits, 2, capacity)
    expected = torch.zeros(2, 12, 4, capacity)
    for g in range(2):
        top, index = logits[g].softmax(-1).topk(2)
        count = [0] * 4
        for choice in range(2):
            for s in range(12):
                e = int(index[s, choice])
                if count[e] < capacity:
                    expected[g, s, e, count[e]] = top[s, choice] / top[s].sum()
                count[e] += 1
    assert torch.allclose(combine, expected) and torch.equal(dispatch, expected > 0)


def test_shipped_gshard_137b():
    assert "gshard-137b" in config_names()
    graph = traced("gshard-137b", seq_len=16)
    assert graph.model.parameters == ir_parameter_count(graph) == 137_038_077_952
    assert gshard_parameters(json.loads(config_text("gshard-137b"))) == 137_038_077_952
    assert graph.model.config["num_attention_heads"] == 32


@pytest.mark.parametrize("change,needle", [
    ({"num_expert": 8}, "num_expert: unknown field"),
    ({"capacity_factor": None}, "capacity_factor:"),
    ({"num_attention_heads": 5}, "hidden_size must be a multiple of num_attention_heads"),
])
def test_bad_gshard_config_is_one_line_naming_the_field(write_config, change, needle):
    path = write_config({**TINY, **change})
    with pytest.raises(watos.WatosError, match=needle) as info:
        watos.load_model(path)
    assert "\n" not in str(info.value) and "invalid gshard config" in str(info.value)
