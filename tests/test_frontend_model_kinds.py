"""Models beyond transformer decoders trace and compile: CNNs and a diffusion UNet from a factory file,
encoders (BERT, ViT) and a selective-scan model (Mamba) from configs; their FLOPs follow closed forms
(docs/ir.md): convolutions 2·N·Cout·Hout·Wout·Cin·kh·kw/groups with a backward of one such GEMM per gradient,
the selective scan 9·B·L·D·N, sliding-window attention s·w per head."""
import importlib.util
import math

import pytest
import torch
from transformers import CONFIG_MAPPING, AutoModelForImageClassification, AutoModelForMaskedLM

import watos
from watos.ir import OpKind, Phase

VISION = "tests/fixtures/vision_models.py"

ENCODER = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4)
BERT = dict(model_type="bert", vocab_size=512, max_position_embeddings=256, **ENCODER)
VIT = dict(model_type="vit", image_size=32, patch_size=8, num_labels=10, **ENCODER)
MAMBA = dict(model_type="mamba", hidden_size=64, num_hidden_layers=2, vocab_size=512, state_size=16, expand=2)


def _vision_source(factory):
    """A vision factory of tests/fixtures/vision_models.py with its inputs (the UNet's: noisy images, noise)."""
    spec = importlib.util.spec_from_file_location("vision_models", VISION)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return watos.load_model(f"{VISION}:{factory}", example_inputs=module.unet_inputs if factory == "unet" else None)


def _flops(graph, phase, ops=None):
    return sum(op.flops * graph.weight(op) for op in (ops if ops is not None else graph.ops) if op.phase is phase)


def _closed_form(x, w, y, transposed):
    """2·N·Cout·Hout·Wout·Cin·kh·kw/groups; for a transposed convolution, the same over its input."""
    side = x if transposed else y
    depth = w.shape[1] * math.prod(w.shape[2:])  # Cin/groups (Cout/groups transposed) · kernel
    return 2 * side.numel * depth


@pytest.mark.parametrize("factory", ["cnn", "unet"])
def test_convolution_flops_follow_the_closed_form(factory):
    graph = watos.trace(_vision_source(factory), seq_len=32, micro_batch=2)
    forward = [op for op in graph.ops if op.target == "convolution"]
    assert forward and {op.attrs["groups"] for op in forward} >= {1}
    for op in forward:
        x, w = (graph.type_of(v) for v in op.inputs[:2])
        assert op.flops == pytest.approx(_closed_form(x, w, op.outputs[0], op.attrs["transposed"]), rel=0.01)
    for op in (op for op in graph.ops if op.target == "convolution_backward"):
        twin = graph.op(op.grad_of)
        assert op.flops == twin.flops * sum(op.attrs["output_mask"][:2])  # data and weight gradients
    convolutions = [op for op in graph.ops if op.target.startswith("convolution")]
    ratio = _flops(graph, Phase.BACKWARD, convolutions) / _flops(graph, Phase.FORWARD, convolutions)
    assert 1.8 < ratio <= 2.0  # the first layer's input needs no gradient


def test_grouped_convolution_divides_by_its_groups():
    graph = watos.trace(f"{VISION}:cnn", seq_len=32)
    by_groups = {op.attrs["groups"]: op.flops for op in graph.ops if op.target == "convolution" and op.block is not None}
    assert by_groups[1] == 4 * by_groups[4]


@pytest.mark.parametrize("factory", ["cnn", "unet"])
def test_vision_models_from_a_factory_compile(factory):
    result = watos.compile(_vision_source(factory), "dgx-a100-80g", {"dp": 8, "global_batch": 16}, seq=32)
    assert result["fits"] and result["step_time_s"] > 0 and result["model_flops_per_step"] > 0


@pytest.mark.parametrize("config,head", [(BERT, AutoModelForMaskedLM), (VIT, AutoModelForImageClassification)])
def test_encoders_trace_with_exact_parameters_and_compile_tensor_parallel(config, head):
    graph = watos.trace(dict(config), seq_len=16)
    fields = {k: v for k, v in config.items() if k != "model_type"}
    with torch.device("meta"):
        reference = head.from_config(CONFIG_MAPPING[config["model_type"]](**fields))
    assert graph.model.parameters == sum(p.numel() for p in reference.parameters())
    assert [op.attrs["causal"] for op in graph.ops if op.target == "attention"] == [False, False]  # bidirectional
    result = watos.compile(dict(config), "dgx-a100-80g", {"tp": 4, "dp": 2, "global_batch": 4}, seq=16)
    assert result["fits"] and result["breakdown_s"]["tp_comm"] > 0


def test_selective_scan_flops_are_nine_b_l_d_n():
    """Mamba's selective scan (Gu & Dao 2023; mamba_ssm's flops count): discretisation exp(Δ·A) and Δ·B·u, the
    recurrence h = Ā·h + B̄u and the readout C·h: 9·B·L·D·N per layer forward (docs/ir.md)."""
    b, seq = 2, 8
    graph = watos.trace(dict(MAMBA), seq_len=seq, micro_batch=b)
    d, n = MAMBA["expand"] * MAMBA["hidden_size"], MAMBA["state_size"]

    def scan(op):
        shape = op.outputs[0].shape
        return (op.module.endswith("mixer") and op.phase is Phase.FORWARD and op.target != "convolution"
                and len(shape) >= 3 and shape[0] == b and shape[1] == d and (shape[-1] == n or
                                                                             (op.kind is OpKind.MATMUL and not op.params)))

    for block in graph.model.traced_blocks:
        assert sum(op.flops for op in graph.ops if op.block == block and scan(op)) == 9 * b * seq * d * n
    result = watos.compile(dict(MAMBA), "dgx-a100-80g", {"dp": 8, "global_batch": 8}, seq=seq)
    assert result["fits"] and result["step_time_s"] > 0


def test_mamba_with_more_blocks_than_traced_replicates_exactly():
    """Mamba's first block keeps its residual in fp32 (the rest receive it so): its own group, the rest one."""
    config = {**MAMBA, "num_hidden_layers": 4}
    replicated = watos.trace(dict(config), seq_len=8)
    full = watos.trace(dict(config), seq_len=8, replicate_blocks=False)
    assert sorted(len(g.blocks) for g in replicated.block_groups) == [1, 3]
    assert replicated.total("flops") == full.total("flops")


def test_sliding_window_attention_flops_follow_the_window():
    """gemma2 alternates windowed and global layers: a window of w keys costs s·w per head, not s²; gemma2's
    soft-capped attention traces as the fused kernel (SDPA), not silently as the eager pattern."""
    seq, window = 256, 16
    config = dict(model_type="gemma2", hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=16, vocab_size=512, max_position_embeddings=512, sliding_window=window)
    graph = watos.trace(config, seq_len=seq)
    assert graph.model.config["attention"] == "sdpa"
    local, full = sorted((op for op in graph.ops if op.target == "attention"), key=lambda op: op.flops)
    assert local.attrs["window"] == window and "window" not in full.attrs
    assert full.flops == 2 * 4 * seq * seq * (16 + 16)
    assert local.flops == 2 * 4 * seq * window * (16 + 16) == full.flops * window // seq
