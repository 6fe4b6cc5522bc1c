"""What the tracer substitutes so the graph holds the kernels GPUs run, not CPU fallbacks (docs/ir.md)."""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
from torch.overrides import TorchFunctionMode


class GpuKernels(TorchFunctionMode):
    """Trace dropout and attention as the fused kernels GPUs run, not as the CPU fallbacks.

    * dropout -> ``native_dropout`` (output and a 1-byte mask), not CPU's in-place ``bernoulli_``
      into a full-width mask;
    * scaled_dot_product_attention -> one flash-attention op, dropout included, not CPU's
      fp32 math fallback that SDPA takes whenever dropout is on; a value head narrower than the
      query's (DeepSeek's multi-head latent attention) is zero-padded and the output sliced, as
      flash kernels with one head dimension are run.
    """

    _DROPOUT_ARGS = {torch.nn.functional.dropout: ("input", "p", "training", "inplace"),
                     torch.dropout: ("input", "p", "train")}
    _SDPA_ARGS = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func in self._DROPOUT_ARGS:
            bound = {**dict(zip(self._DROPOUT_ARGS[func], args)), **kwargs}
            p = float(bound.get("p", 0.5))
            if not bound.get("training", bound.get("train", True)) or p == 0.0:
                return bound["input"]
            return torch.ops.aten.native_dropout(bound["input"], p, True)[0]
        if func is torch.nn.functional.scaled_dot_product_attention:
            bound = {**dict(zip(self._SDPA_ARGS, args)), **kwargs}
            query, value = bound["query"], bound["value"]
            width = value.shape[-1]
            if width < query.shape[-1]:  # flash kernels need one head dim: pad V, slice the output
                value = torch.nn.functional.pad(value, (0, query.shape[-1] - width))
            out = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
                query, bound["key"], value, float(bound.get("dropout_p", 0.0)),
                bool(bound.get("is_causal", False)), attn_mask=bound.get("attn_mask"),
                scale=bound.get("scale"))[0]
            return out[..., :width]
        return func(*args, **kwargs)


@contextlib.contextmanager
def unpacked_sequences() -> Iterator[None]:
    """Training batches are whole, unpadded sequences: tell transformers they are not packed.

    transformers checks position ids for packed sequences by reading tensor values, which fake
    tensors cannot; unable to decide, it would build an explicit s x s mask per layer instead of
    letting SDPA run causally, as it does on real unpacked training batches.
    """
    try:
        from transformers import masking_utils
    except ImportError:
        yield
        return
    original = masking_utils.find_packed_sequence_indices
    masking_utils.find_packed_sequence_indices = lambda position_ids: None
    try:
        yield
    finally:
        masking_utils.find_packed_sequence_indices = original


FUSED_ATTENTION = "watos_fused_sdpa"
"""The attention implementation a family transformers will not run under SDPA is dispatched to instead
(:func:`register_fused_attention`)."""


def register_fused_attention() -> str:
    """Register, once, an attention implementation that runs SDPA for a family whose extras the CPU kernel
    lacks (gemma2's logit soft-capping, which flash-attention kernels fuse): the trace holds the fused
    kernel's shapes and FLOPs, not an s x s eager pattern. Returns its name."""
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    def fused(module: Any, query: Any, key: Any, value: Any, attention_mask: Any, **kwargs: Any) -> Any:
        kwargs.pop("softcap", None)
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)

    AttentionInterface.register(FUSED_ATTENTION, fused)
    ALL_MASK_ATTENTION_FUNCTIONS.register(FUSED_ATTENTION, sdpa_mask)
    return FUSED_ATTENTION
