"""Kernel times are sane at every shape: never faster than the roofline, never slower than moving the bytes at
the memory bandwidth and then computing at the efficiency ceiling, plus the host's launch time."""
from __future__ import annotations

import itertools

import pytest

import watos
from watos.cost.kernel import KernelModel
from watos.hardware.stack import load_stack
from watos.ir import Graph, Op, OpKind, Phase, TensorType
from watos.ir.graph import ModelInfo

# Every dimension from 1 to 65,536: powers of two, their neighbours, and odd sizes in between.
DIMS = sorted({1, 3, 7, 100, 1000, 5000, 65536} | {2**p + d for p in range(1, 16) for d in (-1, 0, 1)})
TARGETS = ("dgx-a100-80g", "dgx-h100-80g", "dgx-b200", "watos-config3")


def _matmul(m: int, n: int, k: int) -> tuple[Graph, Op]:
    """A graph of one linear layer's forward GEMM [m, k] x [k, n] in bf16."""
    x = Op(0, "x", "input", OpKind.INPUT, Phase.FORWARD, [], [TensorType((m, k), "bf16")])
    w = Op(1, "w", "param", OpKind.PARAM, Phase.FORWARD, [], [TensorType((k, n), "bf16")], attrs={"name": "w"})
    mm = Op(2, "mm", "matmul", OpKind.MATMUL, Phase.FORWARD, [(0, 0), (1, 0)], [TensorType((m, n), "bf16")],
            params=["w"], flops=2 * m * n * k, bytes_read=2 * (m * k + k * n), bytes_written=2 * m * n,
            attrs={"mnk": [m, n, k]})
    info = ModelInfo(name="gemm", family="test", micro_batch=1, seq_len=m, dtype="bf16", parameters=k * n,
                     num_blocks=0, block_prefix=None, traced_blocks=[], block_signatures=[])
    return Graph(model=info, ops=[x, w, mm], outputs={}), mm


def _bounds(target, dtype: str, software, graph: Graph, op: Op) -> tuple[float, float]:
    """(roofline: the bytes at the fastest memory or the work at the FP8/BF16 peak, whichever is longer;
    ceiling: the bytes at the slowest memory, then the work at the efficiency ceiling, then the FP8 casts,
    plus every launch)."""
    device = target.device
    e = device.efficiency
    memories = [b for b in (device.dram_bytes_per_s, device.sram_bandwidth_gb_per_s * 1e9 * e.memory) if b]
    fp8 = dtype == "fp8"
    peak = device.peak_tflops_for("fp8" if fp8 else "bf16") * 1e12
    ceiling = (e.fp8_matmul_max or e.matmul_max) if fp8 else e.matmul_max
    io = op.bytes_read + op.bytes_written
    roofline = max(io / max(memories), op.flops / peak)
    cast = software.fp8_cast_bytes * op.bytes_read / device.dram_bytes_per_s + software.kernel_overhead_s if fp8 else 0
    return roofline, io / min(memories) + op.flops / (peak * ceiling) + cast + software.kernel_overhead_s


@pytest.mark.parametrize("name", TARGETS)
@pytest.mark.parametrize("dtype", ["bf16", "fp8"])
def test_every_matmul_shape_lies_between_its_roofline_and_its_serial_roofline(name, dtype):
    target = watos.load_target(name)
    if dtype == "fp8" and not target.device.peak_tflops_for("fp8"):
        pytest.skip(f"{name} has no FP8 peak")
    software = load_stack("megatron-core").resolve()
    model = KernelModel(target, dtype, software)
    worst = 0.0
    for m, n, k in itertools.product(DIMS, repeat=3):
        graph, op = _matmul(m, n, k)
        seconds = model.op_time(graph, op)
        low, high = _bounds(target, dtype, software, graph, op)
        assert low <= seconds <= high * (1 + 1e-9), (m, n, k, seconds, low, high)
        worst = max(worst, seconds / low)
    assert worst > 1.5  # the shape efficiency does act (thin and small GEMMs run below the roofline)


def test_a_matrix_vector_product_runs_at_the_speed_of_reading_its_matrix():
    """Qwen-MoE's shared-expert gate, [16384, 2048] x [2048, 1]: 67 MFLOP over 67 MB, memory bound."""
    target = watos.load_target("dgx-h100-80g")
    software = load_stack("megatron-core").resolve()
    graph, op = _matmul(16384, 1, 2048)
    seconds = KernelModel(target, "bf16", software).op_time(graph, op)
    reading = (op.bytes_read + op.bytes_written) / target.device.dram_bytes_per_s
    assert seconds == pytest.approx(reading + op.flops / (target.device.peak_tflops_for("bf16") * 1e12
                                                          * target.device.efficiency.matmul_max)
                                    + software.kernel_overhead_s, rel=1e-6)
    assert seconds < 1.01 * reading + software.kernel_overhead_s


def test_no_op_of_qwen_moe_on_an_h100_costs_more_than_its_serial_roofline_plus_launches():
    """The whole costed step of qwen1.5-moe-a2.7b (60 routed experts and a shared expert with a width-1 gate)."""
    target = watos.load_target("dgx-h100-80g")
    plan = watos.Plan(dp=8, ep=4, global_batch=64)
    software = load_stack(target.stack_name).resolve()
    traced = watos.lower(watos.trace("qwen1.5-moe-a2.7b", seq_len=1024), target)
    costed = watos.cost_plan(traced, target, plan)
    device = target.device
    peak, ceiling = device.peak_tflops_for("bf16") * 1e12, device.efficiency.matmul_max
    checked = 0
    for op in costed.ops:
        if op.kind in (OpKind.COLLECTIVE, OpKind.PARAM, OpKind.INPUT) or "time_s" not in op.attrs:
            continue
        shard = op.attrs.get("shard", 1)
        parts = op.members if op.members and not op.attrs.get("single_kernel") else [op]
        bound = 0.0
        for part in parts:
            io = part.attrs.get("io_bytes", part.bytes_read + part.bytes_written) / shard
            work = part.flops * part.attrs.get("load", 1.0) / shard
            launches = part.attrs.get("launches", 0 if part.kind in (OpKind.VIEW, OpKind.PARAM, OpKind.INPUT) else 1)
            bound += io / device.dram_bytes_per_s + work / (peak * ceiling) + launches * software.kernel_overhead_s
        assert op.attrs["time_s"] <= bound * (1 + 1e-9), (op.name, op.attrs["time_s"], bound)
        checked += 1
    assert checked > 100
    # No longer 1-4 %: six tiny ops do not own the step (the rest is the calibrated 15 µs per Megatron-Core launch).
    assert costed.analyses["cost"]["mfu"] > 0.1


def test_fp8_casts_the_activation_and_the_gradient_once_and_keeps_the_weight():
    """Transformer Engine's FP8 linear: the forward casts its activation, the data-gradient GEMM the incoming
    gradient, the weight-gradient GEMM reuses both FP8 copies; the FP8 weight is kept for the step (torchao
    casts it before every GEMM instead)."""
    from conftest import FAMILIES

    graph = watos.lower(watos.trace(FAMILIES["llama"], seq_len=64), fusion="flash")
    target = watos.load_target("dgx-h100-80g")
    cached = KernelModel(target, "fp8", load_stack("megatron-core").resolve())
    uncached = KernelModel(target, "fp8", load_stack("torchtitan").resolve())
    linear = [op for op in graph.ops if op.kind is OpKind.MATMUL and op.phase is Phase.FORWARD and op.params]
    assert linear
    for forward in linear:
        activation, weight = (graph.type_of(v).nbytes for v in forward.inputs[-2:])
        assert cached._cast_bytes(graph, forward) == activation
        assert uncached._cast_bytes(graph, forward) == activation + weight
        backward = [op for op in graph.ops if op.grad_of == forward.id and op.kind is OpKind.MATMUL]
        casts = sorted(cached._cast_bytes(graph, op) for op in backward)
        assert len(backward) == 2 and casts[0] == 0 and casts[1] > 0  # weight gradient: none; data gradient: dY
