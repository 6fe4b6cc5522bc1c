"""device_cost: the time of every op on one device of the target, and of every collective on its network.

Kernels are costed by the roofline of :mod:`watos.cost.kernel`; collectives by :mod:`watos.network.collectives`
over the groups of ``analyses["sharding"]``, all groups at once, on the dies of ``analyses["placement"]``.

Writes ``attrs["time_s"]`` on every op and ``analyses["device_cost"]`` (:class:`~watos.ir.analyses.DeviceTimes`):
seconds per micro-batch, per block group representative and for the ``pre``/``post`` segments, split into
forward, backward, optimizer and the communication of each group per micro-batch (``<group>_comm_fwd|bwd``)
and once per step (``step_grad_comm``: gradient reductions, ``step_param_comm``: parameter all-gathers); ``recompute:<policy>`` (and its FLOPs) is the forward work that recompute
policy re-runs in the backward; ``dram_bytes`` and ``network_bytes`` are the memory traffic of its kernels and
the bytes its collectives hand to the network per device and micro-batch (``step_...``: once per step, the
optimizer and gradient reduction), for energy.
"""
from __future__ import annotations

from collections import defaultdict

from pydantic import Field

from watos.cost.kernel import KernelModel
from watos.hardware.stack import Software
from watos.hardware.target import Target
from watos.ir import Graph, OpKind, Phase
from watos.ir.analyses import DeviceTimes
from watos.ir.pass_manager import Pass, PassConfig, register_pass
from watos.network.collectives import collective_time


@register_pass("device_cost")
class DeviceCost(Pass):
    stage = "cost"
    requires = frozenset({"recompute", "placement"})
    provides = frozenset({"device_cost"})

    class Config(PassConfig):
        target: Target = Field(description="the hardware the plan runs on")
        dtype: str = Field("bf16", description="the training dtype: bf16, fp16, or fp8 (FP8 GEMMs)")
        software: Software = Field(description="the stack the plan runs under, resolved (per-kernel overhead, FP8)")

    def run(self, graph: Graph) -> None:
        target = self.config.target
        kernel = KernelModel(target, self.config.dtype, self.config.software)
        groups = graph.analyses["sharding"].groups
        dies = graph.analyses["placement"].dies
        slowdown = graph.analyses["placement"].slowdown  # the die with the most work paces every kernel
        collective_cache: dict[tuple, float] = {}
        totals: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        for op in graph.ops:
            if op.kind is OpKind.COLLECTIVE:
                key = (op.target, op.attrs["bytes"], op.attrs["group"], op.attrs.get("copies", 1))
                if key not in collective_cache:
                    collective_cache[key] = collective_time(target, op.target, op.attrs["bytes"],
                                                            groups[op.attrs["group"]], dies, copies=key[3])
                seconds = collective_cache[key]
                bucket = f"step_{op.attrs.get('dp_phase', 'grad')}_comm" if op.attrs.get("per_step") else \
                    f"{op.attrs['group']}_comm_{'fwd' if op.phase is Phase.FORWARD else 'bwd'}"
            else:
                seconds = kernel.op_time(graph, op) * slowdown
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
        graph.analyses["device_cost"] = DeviceTimes({k: dict(v) for k, v in totals.items()})
