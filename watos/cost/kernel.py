"""The roofline time of one kernel on one device.

A kernel takes ``max(FLOPs / (peak · e), bytes / (bandwidth · e_mem)) + launch``. A matmul's efficiency e
depends on its per-device problem (``attrs["mnk"]``): it rises with the work and, sharply then saturating,
with the smallest dimension of the weight operand, ``e = matmul_max · f/(f + f½) · d²/(d² + d½²) · q`` (a
128-wide head dimension runs well below peak, a 1024-wide split barely; ``q`` is the tile quantization,
:class:`watos.hardware.target.Efficiency`). A fused attention kernel has no weight operand: its efficiency
rises with its work alone. Bytes come from SRAM when the op's working set fits there, else from DRAM.
Work and traffic are divided by ``attrs["shard"]`` (devices sharing the op); an expert matmul's work is
multiplied by ``attrs["load"]`` (the busiest rank under the routing model).
"""
from __future__ import annotations

from watos.hardware.target import Target
from watos.ir import Graph, Op, OpKind


class KernelModel:
    """Roofline time of one kernel on one device of a target (the module docstring)."""

    def __init__(self, target: Target, peak_flops: float) -> None:
        device = target.device
        self.e = device.efficiency
        self.peak = peak_flops
        self.dram = device.dram_bytes_per_s
        self.sram = device.sram_bandwidth_gb_per_s * 1e9 * self.e.memory
        self.sram_bytes = device.sram_capacity_mb * 1e6
        self.launch = self.e.kernel_overhead_us * 1e-6

    def op_time(self, graph: Graph, op: Op) -> float:
        """Seconds of ``op`` on one device (a fused op whose members run as kernels of their own: their sum)."""
        shard = op.attrs.get("shard", 1)
        if op.members and not op.attrs.get("single_kernel"):
            return sum(self._time(m, shard, self._matmul_efficiency(_member_mnk(graph, m, op, shard)))
                       for m in op.members)
        mnk = op.attrs.get("mnk")
        return self._time(op, shard, self._matmul_efficiency(mnk) if mnk else self._attention_efficiency(op, shard))

    def _time(self, op: Op, shard: int, efficiency: float) -> float:
        launches = op.attrs.get("launches", 0 if op.kind in (OpKind.VIEW, OpKind.PARAM, OpKind.INPUT) else 1)
        io = op.attrs.get("io_bytes", op.bytes_read + op.bytes_written) / shard
        if not launches and not io:
            return 0.0
        in_sram = self.sram and (io <= self.sram_bytes or not self.dram)
        memory = io / (self.sram if in_sram else self.dram) if io else 0.0
        compute = op.flops * op.attrs.get("load", 1.0) / shard / (self.peak * efficiency) if op.flops and op.kind in (
            OpKind.MATMUL, OpKind.ATTENTION) else 0.0
        return max(compute, memory) + launches * self.launch

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
