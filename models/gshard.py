"""GShard: a decoder-only mixture-of-experts language model in plain PyTorch (``model_type: gshard``).

After Lepikhin et al. 2020, "GShard: Scaling Giant Models with Conditional Computation and Automatic
Sharding" (arXiv 2006.16668). Transformers has no GShard class, so the model is defined here and built
from a config such as ``configs/gshard-137b.json``.

Shape. Pre-norm blocks (layer norm, no biases in projections), named as in transformers
(``model.embed_tokens``, ``model.layers.N.{self_attn,mlp}``, ``model.norm``, ``lm_head``):
multi-head causal attention, then a feed-forward layer that is a dense ReLU FFN (d -> f -> d) in even
blocks and a mixture of E ReLU experts in odd blocks (GShard §2 replaces every other feed-forward
layer of the Transformer with a position-wise MoE layer). Fixed sinusoidal positions (Vaswani et al.
2017 §3.5, no parameters); input and output embeddings tied unless ``tie_word_embeddings`` is false.
Parameters, with L blocks, d model width, f FFN width, E experts, V vocabulary:

    L·(4d² + 4d) + ceil(L/2)·2df + floor(L/2)·(E·2df + dE) + V·d·(1 or 2) + 2d

(attention, two layer norms per block; dense FFNs; expert FFNs and router; embeddings; final norm).
``gshard-137b`` (d 4096, f 16384, 60 blocks, 32 heads, 32 experts, V 32000, tied, capacity factor
1.25) has 137,038,077,952.

Routing (GShard Algorithm 1, the gating; Algorithm 2, its einsums): top-2 gating over groups of S
tokens (a group is one sequence) with a static expert capacity C = ceil(capacity_factor · k · S / E);
GShard's 2N/E is factor 1.0. The first choices of a group take buffer slots before its second
choices, and a token past an expert's capacity is dropped from it. Both the dispatch and the combine
are einsums over one-hot ``[G, S, E, C]`` tensors, so every shape is static: the capacity factor is
the routing model's capacity, and the traced expert matmuls carry E·C rows per group, empty slots
included. Not modelled, as neither changes a shape or a matmul: the random dispatch of the second
expert (Algorithm 1) and the auxiliary load-balancing loss.
"""
from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, PositiveFloat, PositiveInt, model_validator
from torch import nn


class Config(BaseModel):
    """A GShard config: transformers field names where transformers has one; every shape field required."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model_type: Literal["gshard"] = "gshard"
    vocab_size: PositiveInt
    hidden_size: PositiveInt
    intermediate_size: PositiveInt
    num_hidden_layers: PositiveInt
    num_attention_heads: PositiveInt
    num_experts: PositiveInt
    num_experts_per_tok: PositiveInt = 2
    capacity_factor: PositiveFloat
    layer_norm_eps: PositiveFloat = 1e-5
    tie_word_embeddings: bool = True

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        if self.hidden_size % self.num_attention_heads:
            raise ValueError("hidden_size must be a multiple of num_attention_heads")
        if self.num_experts_per_tok > self.num_experts:
            raise ValueError("num_experts_per_tok must be at most num_experts")
        return self


def build(config: Config, attention: str = "sdpa") -> nn.Module:
    """The causal LM of ``config``; ``attention`` is ``sdpa`` (one fused kernel) or ``eager``."""
    return GShardForCausalLM(config, attention)


def top_k_gating(logits: torch.Tensor, k: int, capacity: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Combine weights and dispatch mask, both ``[G, S, E, C]``, from router logits ``[G, S, E]``
    (GShard Algorithm 1 for k = 2): softmax gates, the top k normalised over themselves, each choice's
    slot in its expert's buffer counted with a cumsum (all first choices of the group before any second,
    as Algorithm 1's two loops), and a choice whose slot is at or past ``capacity`` dropped."""
    groups, tokens, experts = logits.shape
    gates, expert = logits.float().softmax(dim=-1).topk(k, dim=-1)       # [G, S, k]
    gates = gates / gates.sum(dim=-1, keepdim=True)
    chosen = F.one_hot(expert, experts)                                  # [G, S, k, E]
    order = chosen.transpose(1, 2).reshape(groups, k * tokens, experts)  # choice-major
    position = (order.cumsum(dim=1) - 1).view(groups, k, tokens, experts).transpose(1, 2)
    slot = (position * chosen).sum(dim=-1)                               # [G, S, k]
    in_buffer = slot.unsqueeze(-1) == torch.arange(capacity, device=logits.device)  # [G, S, k, C]
    dispatch = chosen.bool().unsqueeze(-1) & in_buffer.unsqueeze(-2)     # [G, S, k, E, C]
    return (gates[..., None, None] * dispatch).sum(dim=2), dispatch.any(dim=2)


class MoE(nn.Module):
    """Position-wise mixture of ReLU experts (Algorithm 2): router ``wg [d, E]``, experts
    ``wi [E, d, f]`` and ``wo [E, f, d]``; each sequence of the batch is one group."""

    def __init__(self, config: Config) -> None:
        super().__init__()
        d, f, e = config.hidden_size, config.intermediate_size, config.num_experts
        self.num_experts, self.top_k, self.capacity_factor = e, config.num_experts_per_tok, config.capacity_factor
        self.wg = nn.Parameter(torch.empty(d, e))
        self.wi = nn.Parameter(torch.empty(e, d, f))
        self.wo = nn.Parameter(torch.empty(e, f, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[G, S, d] -> [G, S, d]``."""
        capacity = math.ceil(self.capacity_factor * self.top_k * x.shape[1] / self.num_experts)
        combine, dispatch = top_k_gating(x @ self.wg, self.top_k, capacity)
        expert_in = torch.einsum("gsec,gsm->egcm", dispatch.to(x.dtype), x)
        h = torch.relu(torch.einsum("egcm,emh->egch", expert_in, self.wi))
        out = torch.einsum("egch,ehm->egcm", h, self.wo)
        return torch.einsum("gsec,egcm->gsm", combine.to(x.dtype), out)


class DenseFFN(nn.Module):
    """ReLU feed-forward layer d -> f -> d (the even blocks)."""

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.wi = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.wo = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, S, d] -> [B, S, d]``."""
        return self.wo(torch.relu(self.wi(x)))


class Attention(nn.Module):
    """Multi-head causal self-attention."""

    def __init__(self, config: Config, attention: str) -> None:
        super().__init__()
        d = config.hidden_size
        self.heads, self.attention = config.num_attention_heads, attention
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (nn.Linear(d, d, bias=False) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, S, d] -> [B, S, d]``."""
        b, s, d = x.shape
        q, k, v = (p(x).view(b, s, self.heads, d // self.heads).transpose(1, 2)
                   for p in (self.q_proj, self.k_proj, self.v_proj))
        if self.attention == "sdpa":
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(d // self.heads)
            causal = torch.ones(s, s, dtype=torch.bool, device=x.device).tril()
            out = scores.masked_fill(~causal, float("-inf")).softmax(dim=-1, dtype=torch.float32).to(q.dtype) @ v
        return self.o_proj(out.transpose(1, 2).reshape(b, s, d))


class Block(nn.Module):
    """Pre-norm transformer block: attention, then a dense or an MoE feed-forward layer."""

    def __init__(self, config: Config, attention: str, moe: bool) -> None:
        super().__init__()
        self.input_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attn = Attention(config, attention)
        self.post_attention_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = MoE(config) if moe else DenseFFN(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, S, d] -> [B, S, d]``."""
        x = x + self.self_attn(self.input_layernorm(x))
        return x + self.mlp(self.post_attention_layernorm(x))


class GShardModel(nn.Module):
    """Embedding, sinusoidal positions, the blocks (MoE in odd ones) and the final norm."""

    def __init__(self, config: Config, attention: str) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(Block(config, attention, moe=i % 2 == 1) for i in range(config.num_hidden_layers))
        self.norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids ``[B, S]`` -> hidden states ``[B, S, d]``."""
        x = self.embed_tokens(ids)
        x = x + sinusoids(ids.shape[1], x.shape[-1], x.device).to(x.dtype)
        for layer in self.layers:
            x = layer(x)
        return self.norm(x)


class GShardForCausalLM(nn.Module):
    """The GShard decoder with a language-model head; ``forward`` returns logits (WATOS adds the loss)."""

    def __init__(self, config: Config, attention: str = "sdpa") -> None:
        super().__init__()
        self.model = GShardModel(config, attention)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids ``[B, S]`` -> logits ``[B, S, V]``."""
        return self.lm_head(self.model(ids))


def sinusoids(length: int, width: int, device: torch.device) -> torch.Tensor:
    """Sinusoidal position encodings ``[length, width]`` (Vaswani et al. 2017 §3.5)."""
    angle = (torch.arange(length, device=device, dtype=torch.float32)[:, None]
             * torch.exp(torch.arange(0, width, 2, device=device) * (-math.log(10000.0) / width)))
    return torch.cat([angle.sin(), angle.cos()], dim=-1)[:, :width]
