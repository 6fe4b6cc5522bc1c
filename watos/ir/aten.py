"""ATen vocabulary: which traced ATen op is which canonical WATOS op.

The table maps an ATen overload packet name (``mm``, ``_unsafe_view``, ``native_layer_norm``...) to a
canonical target and :class:`~watos.ir.OpKind`. Aliases collapse here (``_unsafe_view``/``reshape``
-> ``view``, ``t``/``permute`` -> ``transpose``, ``mul.Scalar`` -> ``mul``...). Anything absent is
classified by its ATen tags: pointwise ops are elementwise, the rest ``other``.
"""
from __future__ import annotations

from watos.ir import OpKind

# Ops whose output aliases (shares storage with) their first input: counted once in memory.
VIEW_OPS = frozenset({
    "view", "_unsafe_view", "reshape", "t", "transpose", "permute", "expand", "unsqueeze", "squeeze",
    "slice", "select", "as_strided", "detach", "alias", "split", "split_with_sizes", "unbind",
    "chunk", "narrow", "diagonal", "unfold", "view_as_real", "view_as_complex", "_reshape_alias",
    "lift_fresh", "movedim", "expand_as", "view_as", "lift_fresh_copy",
})

_CANONICAL_VIEW = {"_unsafe_view": "view", "reshape": "view", "_reshape_alias": "view",
                   "view_as": "view", "t": "transpose", "permute": "transpose", "movedim": "transpose",
                   "alias": "alias", "detach": "alias", "lift_fresh": "alias",
                   "lift_fresh_copy": "alias", "expand_as": "expand", "split_with_sizes": "split"}

_MATMUL = {"mm": "matmul", "bmm": "matmul", "addmm": "matmul", "baddbmm": "matmul",
           "matmul": "matmul", "linear": "matmul", "addbmm": "matmul", "_scaled_mm": "matmul",
           "_grouped_mm": "matmul"}

CONVOLUTIONS = {"convolution": "convolution", "convolution_backward": "convolution_backward",
                "_convolution": "convolution", "cudnn_convolution": "convolution"}
"""Convolutions: matmul-class ops (implicit GEMMs) with a name of their own (:mod:`watos.cost.convolution`)."""

GROUPED_MM = "aten._grouped_mm"  # MoE experts: routed rows [m, k] x per-expert weights [E, k, n], group offsets


def is_grouped_mm(aten: str) -> bool:
    """Whether an ATen overload name is a grouped (per-expert) matmul."""
    return aten.startswith(GROUPED_MM)


_ATTENTION_PREFIXES = ("_scaled_dot_product_", "scaled_dot_product_", "_flash_attention",
                       "_efficient_attention")

_NORM = {"native_layer_norm": "layer_norm", "native_layer_norm_backward": "layer_norm_backward",
         "_fused_rms_norm": "rms_norm", "_fused_rms_norm_backward": "rms_norm_backward",
         "native_group_norm": "group_norm", "native_group_norm_backward": "group_norm_backward",
         "native_batch_norm": "batch_norm"}

_REDUCTION = {"sum", "mean", "amax", "amin", "max", "min", "_softmax", "_log_softmax",
              "_softmax_backward_data", "_log_softmax_backward_data", "cumsum", "var", "var_mean",
              "std", "norm", "linalg_vector_norm", "logsumexp", "argmax", "argmin", "prod", "all",
              "any", "topk", "sort"}

_EMBEDDING = {"embedding", "embedding_dense_backward", "index_select", "gather", "scatter",
              "scatter_add", "index", "index_put", "index_add", "_index_put_impl"}

_LOSS = {"nll_loss_forward", "nll_loss_backward", "nll_loss2d_forward", "nll_loss2d_backward",
         "cross_entropy_loss", "mse_loss", "mse_loss_backward", "binary_cross_entropy",
         "binary_cross_entropy_with_logits"}

_ALIASES = {"mul.Scalar": "mul", "add.Scalar": "add", "sub.Scalar": "sub", "div.Scalar": "div",
            "_to_copy": "cast", "clone": "copy", "copy": "copy", "contiguous": "copy",
            "native_dropout": "dropout", "native_dropout_backward": "dropout_backward",
            "rsub": "sub", "_softmax": "softmax", "_log_softmax": "log_softmax",
            "_softmax_backward_data": "softmax_backward", "_log_softmax_backward_data":
            "log_softmax_backward", "gelu": "gelu", "silu": "silu"}

_CREATION = {"arange", "zeros", "ones", "full", "empty", "empty_like", "zeros_like", "ones_like",
             "full_like", "scalar_tensor", "new_zeros", "new_ones", "new_empty", "new_full",
             "empty_strided", "randint", "rand", "randn", "rand_like", "randn_like", "tensor",
             "new_empty_strided"}


_ELEMENTWISE_EXTRA = frozenset({
    "_to_copy", "clone", "copy", "native_dropout", "native_dropout_backward", "where", "masked_fill",
    "tril", "triu", "constant_pad_nd", "cat", "stack", "fill", "gelu_backward", "silu_backward",
    "threshold_backward", "tanh_backward", "sigmoid_backward", "slice_backward", "select_backward"})


# Ops that read only the shape of their tensor inputs, never the data.
SHAPE_ONLY = frozenset({"empty_like", "zeros_like", "ones_like", "full_like", "rand_like", "randn_like",
                        "new_zeros", "new_ones", "new_empty", "new_full", "new_empty_strided"})


def kind_of(packet: str, pointwise: bool) -> OpKind:
    """Canonical kind of the ATen op packet ``packet`` (``pointwise``: it carries the ATen tag)."""
    if packet in VIEW_OPS:
        return OpKind.VIEW
    if packet in _MATMUL or packet in CONVOLUTIONS:
        return OpKind.MATMUL
    if packet.startswith(_ATTENTION_PREFIXES):
        return OpKind.ATTENTION
    if packet in _NORM:
        return OpKind.NORM
    if packet in _LOSS:
        return OpKind.LOSS
    if packet in _EMBEDDING:
        return OpKind.EMBEDDING
    if packet in _REDUCTION:
        return OpKind.REDUCTION
    if packet in _CREATION:
        return OpKind.OTHER
    return OpKind.ELEMENTWISE if pointwise or packet in _ELEMENTWISE_EXTRA else OpKind.OTHER


def canonical_name(packet: str, overload: str) -> str:
    """Canonical target name: ATen aliases and overloads of one operation share one name."""
    if packet in VIEW_OPS:
        return _CANONICAL_VIEW.get(packet, packet)
    if packet in CONVOLUTIONS:
        return CONVOLUTIONS[packet]
    if packet in _MATMUL:
        return "matmul"
    if packet.startswith(_ATTENTION_PREFIXES):
        return "attention_backward" if packet.endswith("backward") else "attention"
    if packet in _NORM:
        return _NORM[packet]
    if packet in _LOSS:
        return packet.removesuffix("_forward")
    return _ALIASES.get(f"{packet}.{overload}", _ALIASES.get(packet, packet))


TORCH_DTYPE_NAMES = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32", "float64": "fp64",
                     "int64": "i64", "int32": "i32", "int16": "i16", "int8": "i8", "uint8": "u8",
                     "bool": "bool", "float8_e4m3fn": "fp8", "float8_e5m2": "fp8",
                     "complex64": "c64"}

DTYPE_ALIASES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}
