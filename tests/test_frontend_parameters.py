"""Parameter counts equal sum(p.numel()) of the same transformers model, exactly."""
import json

import pytest
import torch
from conftest import FAMILIES, traced
from transformers import CONFIG_MAPPING, AutoModelForCausalLM

import watos
from watos.ir import OpKind
from watos.models import DEFINITIONS, config_names, config_text


def reference_count(config: dict) -> int:
    fields = {k: v for k, v in config.items() if k != "model_type" and not k.startswith("_")}
    hf_config = CONFIG_MAPPING[config["model_type"]](**fields)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(hf_config)
    return sum(p.numel() for p in model.parameters())


def ir_parameter_count(graph) -> int:
    """Parameters as the IR holds them: traced parameter tensors times their block multiplicity."""
    return sum(op.outputs[0].numel * graph.weight(op) for op in graph.ops if op.kind is OpKind.PARAM)


def test_every_model_is_shipped():
    expected = {"gpt2", "gpt3-1.3b", "gpt3-6.7b", "gpt3-13b", "gpt3-175b", "llama-30b", "llama2-7b",
                "llama2-13b", "llama2-70b", "llama3-8b", "llama3-70b", "llama3.1-405b", "mistral-7b",
                "mixtral-8x7b", "deepseek-v3-671b", "qwen1.5-moe-a2.7b", "gshard-137b"}
    assert expected <= set(config_names())


@pytest.mark.parametrize("name", [n for n in config_names()  # GShard's count: tests/test_frontend_gshard.py
                                  if json.loads(config_text(n))["model_type"] not in DEFINITIONS])
def test_shipped_config_parameter_count_is_exact(name):
    graph = traced(name, seq_len=16)
    expected = reference_count(json.loads(config_text(name)))
    assert graph.model.parameters == expected
    assert ir_parameter_count(graph) == expected


def test_well_known_parameter_counts():
    # Published sizes of the real checkpoints, as a check on the shipped shapes themselves.
    assert traced("llama2-7b", seq_len=16).model.parameters == 6_738_415_616
    assert traced("llama3-8b", seq_len=16).model.parameters == 8_030_261_248
    assert traced("llama3-70b", seq_len=16).model.parameters == 70_553_706_496
    assert traced("mistral-7b", seq_len=16).model.parameters == 7_241_732_096
    assert traced("mixtral-8x7b", seq_len=16).model.parameters == 46_702_792_704
    assert traced("qwen1.5-moe-a2.7b", seq_len=16).model.parameters == 14_315_784_192  # "14.3B"
    # DeepSeek-V3's 671B main model (its released checkpoint adds a 14B multi-token-prediction module)
    assert traced("deepseek-v3-671b", seq_len=16).model.parameters == 671_026_404_352


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_unshipped_family_parameter_count_is_exact(family, write_config):
    path = write_config(FAMILIES[family], family)
    graph = traced(path, seq_len=32, micro_batch=2)
    expected = reference_count(FAMILIES[family])
    assert graph.model.parameters == expected
    assert ir_parameter_count(graph) == expected
    assert graph.model.num_blocks == 3


def test_fp32_training_traces_with_each_parameter_its_own_master_copy():
    """In fp32 (and for fp32 parameters of a 16-bit model, such as an MoE router's bias) the optimizer
    updates the parameter itself: no separate master copy, and no in-place update of a leaf tensor."""
    graph = watos.trace(FAMILIES["llama"], seq_len=16, dtype="fp32")
    assert graph.model.parameters == reference_count(FAMILIES["llama"])
    states = [op.attrs["name"] for op in graph.ops if op.kind is OpKind.INPUT and ":" in op.attrs.get("name", "")]
    assert len(states) == 2 * len([op for op in graph.ops if op.kind is OpKind.PARAM])  # two moments each
    assert not [name for name in states if name.endswith(":master")]


# -- every decoder family transformers 5 builds on the meta device --------------------------------------------
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            vocab_size=512, max_position_embeddings=256)
DECODERS = {  # model_type -> what its tiny config needs beyond TINY
    **{family: {} for family in (
        "llama", "mistral", "mixtral", "qwen2", "qwen2_moe", "qwen3", "qwen3_moe", "qwen3_next", "gemma", "gemma2",
        "gemma3_text", "phi", "phimoe", "opt", "gpt2", "gpt_neox", "gpt_bigcode", "bloom", "falcon", "mpt", "olmo",
        "olmo2", "olmoe", "granite", "granitemoe", "cohere", "cohere2", "starcoder2", "stablelm", "persimmon",
        "mamba", "falcon_mamba", "jamba", "nemotron", "deepseek_v3", "exaone4", "glm4_moe", "internlm3", "seed_oss",
        "ernie4_5", "arcee", "lfm2", "minimax", "gpt_oss", "llama4_text", "xglm", "biogpt", "openai-gpt", "bitnet",
        "vaultgemma")},
    "phi3": {"pad_token_id": 0},
    "glm4": {"pad_token_id": 0},
    "gptj": {"rotary_dim": 8},
    "codegen": {"rotary_dim": 8},
}
REFUSED = {  # model_type -> what the one line says
    "jetmoe": "data-dependent control flow or output shape",  # routes with expert_size.tolist()
}


@pytest.mark.parametrize("model_type", sorted(DECODERS))
def test_decoder_family_traces_with_its_exact_parameter_count(model_type):
    """Each family's tiny config (2 blocks, hidden 64): the IR's parameters, block multiplicities applied, are
    sum(p.numel()) of the same transformers model built on the meta device."""
    config = {"model_type": model_type, **TINY, **DECODERS[model_type]}
    graph = watos.trace(config, seq_len=16)
    expected = reference_count(config)
    assert graph.model.parameters == expected and ir_parameter_count(graph) == expected
    assert graph.model.num_blocks == 2 and graph.total("flops") > 0


def test_the_decoder_sweep_is_wide():
    assert len(DECODERS) >= 30


@pytest.mark.parametrize("model_type", sorted(REFUSED))
def test_a_decoder_family_that_cannot_trace_is_refused_in_one_line(model_type):
    with pytest.raises(watos.WatosError, match=REFUSED[model_type]) as refused:
        watos.trace({"model_type": model_type, **TINY}, seq_len=16)
    assert "\n" not in str(refused.value)
