"""The time of one kernel on one device.

A kernel takes ``max(FLOPs / (peak · e), bytes / (bandwidth · e_mem)) + launches · host`` (roofline, plus
the stack's host-side time per kernel launched). A matmul's efficiency e depends on its per-device problem
(``attrs["mnk"]``): it rises with the work and, sharply then saturating, with the smallest dimension of the
weight operand, ``e = matmul_max · f/(f + f½) · d²/(d² + d½²) · q`` (a 128-wide head dimension runs well
below peak, a 1024-wide split barely; ``q`` is the tile quantization, :class:`watos.hardware.target.Efficiency`).
A fused attention kernel has no weight operand: its efficiency rises with its work alone. Bytes come from
SRAM when the op's working set fits there, else from DRAM.

A thin problem is bandwidth bound, not slow: the shape efficiency never makes a kernel slower than moving
its bytes at the memory bandwidth and then computing at the efficiency ceiling, one after the other
(``bytes / (BW · e_mem) + FLOPs / (peak · matmul_max)``, the serial roofline) — a matrix-vector product (a
gate of width 1, whose efficiency by shape alone would be ~10⁻⁶) runs at the speed of reading its matrix.

FP8 (the training dtype ``fp8``): the GEMMs of linear layers (matmuls that read a weight, and their
gradients) run at the FP8 peak and ``fp8_matmul_max``, after casting what they read in 16 bits (one more
kernel, the recipe's ``cast_bytes`` per input byte): the forward its activation and, unless the recipe keeps
the FP8 weight for the step, its weight; the data-gradient GEMM the incoming gradient (and the weight, so
kept or not); the weight-gradient GEMM nothing (it reuses both FP8 copies). Attention, norms and everything
else stay in 16 bits.

Work and traffic are divided by ``attrs["shard"]`` (devices sharing the op); an expert matmul's work is
multiplied by ``attrs["load"]`` (the busiest rank under the routing model).
"""
from __future__ import annotations

from watos.hardware.stack import Software
from watos.hardware.target import Target
from watos.ir import Graph, Op, OpKind, Phase


class KernelModel:
    """Time of one kernel on one device of a target under a stack (the module docstring)."""

    def __init__(self, target: Target, dtype: str, software: Software) -> None:
        device = target.device
        self.e = device.efficiency
        self.peak = device.peak_tflops_for("bf16" if dtype == "fp8" else dtype) * 1e12
        self.fp8 = software.fp8_cast_bytes if dtype == "fp8" else None
        self.fp8_weights_cached = software.fp8_weights_cached
        self.fp8_peak = device.peak_tflops_for("fp8") * 1e12
        self.fp8_max = self.e.fp8_matmul_max or self.e.matmul_max
        self.dram = device.dram_bytes_per_s
        self.sram = device.sram_bandwidth_gb_per_s * 1e9 * self.e.memory
        self.sram_bytes = device.sram_capacity_mb * 1e6
        self.launch = software.kernel_overhead_s

    def op_time(self, graph: Graph, op: Op) -> float:
        """Seconds of ``op`` on one device (a fused op whose members run as kernels of their own: their sum)."""
        shard = op.attrs.get("shard", 1)
        if op.members and not op.attrs.get("single_kernel"):
            return sum(self._time(m, shard, self._matmul_efficiency(_member_mnk(graph, m, op, shard)))
                       for m in op.members)
        mnk = op.attrs.get("mnk")
        if mnk and self.fp8 is not None and _linear(graph, op):
            return self._fp8_time(graph, op, shard, mnk)
        return self._time(op, shard, self._matmul_efficiency(mnk) if mnk else self._attention_efficiency(op, shard))

    def _time(self, op: Op, shard: int, efficiency: float, peak: float | None = None,
              ceiling: float | None = None) -> float:
        launches = op.attrs.get("launches", 0 if op.kind in (OpKind.VIEW, OpKind.PARAM, OpKind.INPUT) else 1)
        io = op.attrs.get("io_bytes", op.bytes_read + op.bytes_written) / shard
        if not launches and not io:
            return 0.0
        in_sram = self.sram and (io <= self.sram_bytes or not self.dram)
        memory = io / (self.sram if in_sram else self.dram) if io else 0.0
        compute = 0.0
        if op.flops and op.kind in (OpKind.MATMUL, OpKind.ATTENTION):
            work = op.flops * op.attrs.get("load", 1.0) / shard
            peak = peak or self.peak
            # no slower than the serial roofline: its bytes, then its work at the ceiling
            compute = min(work / (peak * efficiency), memory + work / (peak * (ceiling or self.e.matmul_max)))
        return max(compute, memory) + launches * self.launch

    def _fp8_time(self, graph: Graph, op: Op, shard: int, mnk: list[int]) -> float:
        """An FP8 GEMM: the cast of what it reads in 16 bits (one kernel, :meth:`_cast_bytes`), then the GEMM at
        the FP8 peak."""
        inputs = self._cast_bytes(graph, op)
        cast = self.fp8 * inputs / shard / self.dram + self.launch if inputs else 0.0
        efficiency = self._matmul_efficiency(mnk) * self.fp8_max / self.e.matmul_max
        return cast + self._time(op, shard, efficiency, self.fp8_peak, self.fp8_max)

    def _cast_bytes(self, graph: Graph, op: Op) -> int:
        """Bytes of 16-bit input an FP8 GEMM casts first (module docstring)."""
        weights = [graph.is_parameter(v) for v in op.inputs]
        if op.phase is Phase.BACKWARD and not any(weights):
            return 0  # the weight gradient: the forward's FP8 activation and the data gradient's FP8 gradient
        return sum(graph.type_of(v).nbytes for v, weight in zip(op.inputs, weights)
                   if graph.type_of(v).dtype in ("bf16", "fp16") and not (weight and self.fp8_weights_cached))

    def _matmul_efficiency(self, mnk: list[int] | None) -> float:
        if not mnk:
            return self.e.matmul_max
        m, n, k = mnk
        flops = 2.0 * m * n * k
        smallest = min(n, k)  # the weight (right) operand's smaller dimension
        half_flops = self.e.matmul_half_gflop * 1e9
        tile = self.e.matmul_tile
        quantization = n / (-(-n // tile) * tile) * k / (-(-k // tile) * tile)
        half_dim = self.e.matmul_half_dim
        return (self.e.matmul_max * flops / (flops + half_flops) * smallest**2 / (smallest**2 + half_dim**2)
                * quantization)

    def _attention_efficiency(self, op: Op, shard: int) -> float:
        flops = op.flops / shard
        half_flops = self.e.matmul_half_gflop * 1e9
        return self.e.matmul_max * flops / (flops + half_flops) if flops else self.e.matmul_max


def _linear(graph: Graph, op: Op) -> bool:
    """A linear layer's GEMM: a matmul that reads a weight, or the gradient of one (what FP8 recipes cast)."""
    forward = graph.get(op.grad_of) if op.phase is Phase.BACKWARD else op
    return forward is not None and forward.kind is OpKind.MATMUL and bool(forward.params)


def _member_mnk(graph: Graph, member: Op, parent: Op, shard: int) -> list[int] | None:
    """Per-device matmul problem of a fused op's member (attention's batched matmuls: heads split)."""
    if member.kind is not OpKind.MATMUL or len(member.inputs) < 2:
        return None
    types = {m.id: m.outputs for m in parent.members}

    def type_of(v):
        return types[v[0]][v[1]] if v[0] in types else graph.type_of(v)

    a, b = type_of(member.inputs[-2]), type_of(member.inputs[-1])
    batch = max(1, (a.numel // (a.shape[-1] * a.shape[-2])) // shard) if len(a.shape) >= 2 else 1
    return [batch * a.shape[-2], b.shape[-1], a.shape[-1]]
