"""device_cost: the time of every op on one device of the target, and of every collective on its network.

A kernel takes ``max(FLOPs / (peak · e), bytes / (bandwidth · e_mem)) + launch`` (roofline). A matmul's
efficiency e depends on its per-device problem (``attrs["mnk"]``): it rises with the work and, sharply
then saturating, with the smallest dimension, ``e = matmul_max · f/(f + f½) · d²/(d² + d½²)`` (a 128-wide
head dimension runs well below peak, a 1024-wide split barely). Bytes come from SRAM when the op's working
set fits there, else from DRAM. Work and traffic are divided by ``attrs["shard"]``; an expert matmul's
work is multiplied by ``attrs["load"]`` (the busiest rank under the routing model; ``shard`` already
folded it, and the expert weights each rank holds, into the op's traffic). Collectives are
costed by ``watos.network.collectives`` over the groups of ``analyses["groups"]``, all groups at once, on the dies
of ``analyses["placement"]``.

Writes ``attrs["time_s"]`` on every op and ``analyses["device_cost"]``: seconds per micro-batch, per block
group representative and for the ``pre``/``post`` segments, split into forward, backward, optimizer and
the communication of each group per micro-batch (``<group>_comm_fwd|bwd``) and once per step
(``step_comm``); ``recompute:<policy>`` (and its FLOPs) is the forward work that
recompute policy re-runs in the backward; ``dram_bytes`` and ``network_bytes`` are the memory traffic of
its kernels and the bytes its collectives hand to the network per device and micro-batch (``step_...``:
once per step, the optimizer and gradient reduction), for energy.
"""
from __future__ import annotations

from collections import defaultdict

from watos.hardware.target import Target
from watos.ir import Graph, Op, OpKind, Phase
from watos.network.collectives import collective_time
from watos.ir.pass_manager import Pass, PassConfig, register_pass


@register_pass("device_cost")
class DeviceCost(Pass):
    requires = frozenset({"recompute", "placed"})
    provides = frozenset({"timed"})
    in_default_pipeline = False

    class Config(PassConfig):
        target: Target
        dtype: str = "bf16"

    def run(self, graph: Graph) -> None:
        target = self.config.target
        peak = target.device.peak_tflops.get(self.config.dtype) or max(target.device.peak_tflops.values())
        kernel = KernelModel(target, peak * 1e12)
        groups = graph.analyses["groups"]
        dies = graph.analyses["placement"]["dies"]
        collective_cache: dict[tuple, float] = {}
        totals: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        for op in graph.ops:
            if op.kind is OpKind.COLLECTIVE:
                key = (op.target, op.attrs["bytes"], op.attrs["group"])
                if key not in collective_cache:
                    collective_cache[key] = collective_time(target, op.target, op.attrs["bytes"],
                                                            groups[op.attrs["group"]], dies)
                seconds = collective_cache[key]
                bucket = "step_comm" if op.attrs.get("per_step") else \
                    f"{op.attrs['group']}_comm_{'fwd' if op.phase is Phase.FORWARD else 'bwd'}"
            else:
                seconds = kernel.op_time(graph, op)
                bucket = {Phase.FORWARD: "fwd", Phase.BACKWARD: "bwd", Phase.OPTIMIZER: "optimizer"}[op.phase]
            op.attrs["time_s"] = seconds
            where = str(op.block) if op.block is not None else op.attrs.get("segment", "post")
            totals[where][bucket] += seconds
            per_device = op.flops / op.attrs.get("shard", 1)
            for policy in op.attrs.get("recompute_under", ()):
                totals[where][f"recompute:{policy}"] += seconds
                totals[where][f"recompute_flops:{policy}"] += op.flops
                totals[where][f"recompute_device_flops:{policy}"] += per_device
            once = "step_" if op.phase is Phase.OPTIMIZER or op.attrs.get("per_step") else ""
            if op.kind is OpKind.COLLECTIVE:
                totals[where][f"{once}network_bytes"] += op.attrs["bytes"]
            else:
                io = op.attrs.get("io_bytes", op.bytes_read + op.bytes_written)
                totals[where][f"{once}dram_bytes"] += io / op.attrs.get("shard", 1)
            if op.phase is not Phase.OPTIMIZER and op.kind is not OpKind.COLLECTIVE:
                totals[where]["flops"] += op.flops
                totals[where]["device_flops"] += per_device
        graph.analyses["device_cost"] = {k: dict(v) for k, v in totals.items()}


class KernelModel:
    """Roofline time of one kernel on one device (see module docstring)."""

    def __init__(self, target: Target, peak_flops: float) -> None:
        device = target.device
        self.e = device.efficiency
        self.peak = peak_flops
        self.dram = device.dram_bandwidth_gb_per_s * 1e9 * self.e.memory
        self.sram = device.sram_bandwidth_gb_per_s * 1e9 * self.e.memory
        self.sram_bytes = device.sram_capacity_mb * 1e6
        self.launch = self.e.kernel_overhead_us * 1e-6

    def op_time(self, graph: Graph, op: Op) -> float:
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
        """A fused (flash) attention kernel has no weight operand: its efficiency rises with its work."""
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
