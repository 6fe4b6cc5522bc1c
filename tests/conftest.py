"""Shared helpers: traced graphs are cached per session, since tracing is the slow part."""
from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest

import watos
from watos.ir.printers import summary

FIXTURES = Path(__file__).parent / "fixtures"

SMALL = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
             num_key_value_heads=2, vocab_size=512, max_position_embeddings=256)

# Families not shipped as configs, written here as a user would.
FAMILIES = {
    "gpt2": dict(model_type="gpt2", n_embd=64, n_layer=3, n_head=4, vocab_size=512, n_positions=256),
    "llama": dict(model_type="llama", **SMALL),
    "mistral": dict(model_type="mistral", sliding_window=64, **SMALL),
    "mixtral": dict(model_type="mixtral", num_local_experts=4, num_experts_per_tok=2, **SMALL),
    "qwen2": dict(model_type="qwen2", **SMALL),
    "gemma": dict(model_type="gemma", head_dim=16, **SMALL),
    "gemma2": dict(model_type="gemma2", head_dim=16, sliding_window=16, **SMALL),
    "phi3": dict(model_type="phi3", pad_token_id=0, **SMALL),
    "opt": dict(model_type="opt", hidden_size=64, ffn_dim=128, num_hidden_layers=3, num_attention_heads=4,
                vocab_size=512, max_position_embeddings=256, word_embed_proj_dim=64),
    "deepseek_v3": dict(model_type="deepseek_v3", hidden_size=64, intermediate_size=128, moe_intermediate_size=32,
                        num_hidden_layers=3, first_k_dense_replace=1, num_attention_heads=4, num_key_value_heads=4,
                        n_routed_experts=4, n_shared_experts=1, num_experts_per_tok=2, n_group=2, topk_group=1,
                        q_lora_rank=32, kv_lora_rank=16, qk_rope_head_dim=8, qk_nope_head_dim=16, v_head_dim=8,
                        vocab_size=512, max_position_embeddings=256),
    "gpt_neox": dict(model_type="gpt_neox", hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                     num_attention_heads=4, vocab_size=512, max_position_embeddings=256),
}


@functools.lru_cache(maxsize=None)
def traced(spec: str, seq_len: int = 64, micro_batch: int = 1, attention: str = "sdpa",
           replicate_blocks: bool = True):
    """The IR of ``spec`` after the default pipeline (cached; do not mutate)."""
    return watos.trace(spec, seq_len=seq_len, micro_batch=micro_batch, attention=attention,
                       replicate_blocks=replicate_blocks)


def traced_summary(*args, **kwargs) -> dict:
    return summary(traced(*args, **kwargs))


@pytest.fixture
def write_config(tmp_path):
    """Write a config dict to a config.json-style file and return its path."""

    def write(config: dict, name: str = "config") -> str:
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(config))
        return str(path)

    return write


def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true",
                     help="run the large-model checks (marked slow) at full size instead of their small form")


@pytest.fixture
def full_size(request) -> bool:
    """True under --slow: slow-marked checks then use their full-size models."""
    return request.config.getoption("--slow")
