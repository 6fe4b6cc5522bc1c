"""The strategies WATOS is compared with, on the same problem (docs/search.md states their rules).

* ``megatron``: Megatron-LM's recommended strategy taken to the target as is: TP 8 (or the largest
  power of two up to 8 dividing the heads), sequence parallelism with TP, the distributed optimizer
  (ZeRO-1) with DP, the fewest pipeline stages that fit, plain 1F1B, one recompute policy for every stage
  (the least recomputation that fits), row-major placement, no cross-die memory; the micro-batch size is
  tuned (1, 2 or 4), as a Megatron user would. An MoE model's experts are split over the largest
  expert-parallel group its data-parallel ranks and experts allow (Megatron-LM's MoE guidance: EP over DP).
* ``cerebras-ws``: Cerebras weight streaming on the wafer: weights (and optimizer) off-wafer, streamed
  in layer by layer through the wafer's I/O and broadcast to every die, gradients streamed out the same
  way; activations stay on the dies; the dies are data parallel. Micro-batch and recomputation are
  tuned (the largest micro-batch that fits amortises the stream best).
* ``megatron-gpu``: ``megatron`` on 8 GPUs of an NVLink node (the target's GPU template, ``dgx-b200`` by
  default) scaled to the wafer's total peak compute, DRAM capacity and DRAM bandwidth, as the paper
  compares against 8 GPUs of equal peak.
"""
from __future__ import annotations

import itertools

from watos.hardware.target import Mesh2D, Target, WeightStreaming, load_target
from watos.plan import head_split_error
from watos.strategy.problem import Problem, evaluate
from watos.strategy.result import Outcome, plan_summary
from watos.strategy.space import expert_degrees

GPU_TEMPLATE = "dgx-b200"
GPUS = 8


def megatron(problem: Problem) -> Outcome | str | None:
    """Megatron-LM's recommended plan (module docstring), None when nothing fits, or why no shape divides."""
    info = problem.info
    tp = max(t for t in (1, 2, 4, 8) if problem.devices % t == 0
             and head_split_error(t, info["heads"], info["kv_heads"]) is None)
    depths = [p for p in range(1, info["layers"] + 1) if problem.devices % (tp * p) == 0
              and problem.global_batch % (problem.devices // (tp * p)) == 0]
    if not depths:
        return (f"at tp={tp}, no pipeline depth up to the {info['layers']} blocks leaves a data-parallel degree "
                f"dividing the global batch of {problem.global_batch} sequences")
    for pp in depths:
        dp = problem.devices // (tp * pp)
        for recompute in ("none", "selective", "full"):
            fitting = []
            for mb in problem.micro_batch_sizes:
                plan = problem.plan(tp=tp, pp=pp, dp=dp, ep=max(expert_degrees(problem, dp)), zero=1 if dp > 1 else 0,
                                    micro_batch=mb, recompute=recompute, sequence_parallel=tp > 1)
                if problem.global_batch % (dp * mb):
                    continue
                cost = evaluate(problem, plan)
                if cost["fits"]:
                    fitting.append(Outcome(plan, cost))
            if fitting:
                return min(fitting, key=lambda o: o.cost["step_time_s"])
    return None


def cerebras_ws(problem: Problem) -> Outcome | str | None:
    """Weight streaming over the wafer's I/O with every die data parallel (module docstring); why not, when
    the batch does not split over the dies."""
    mesh = problem.target.topology
    if not isinstance(mesh, Mesh2D) or not mesh.io_bandwidth_gb_per_s:
        return None
    streamed = problem.target.model_copy(update={"weight_streaming": WeightStreaming(
        capacity_tb=1e3, bandwidth_gb_per_s=mesh.io_bandwidth_gb_per_s)})
    wafer = problem.on(streamed)
    if problem.global_batch % problem.devices:
        return (f"the global batch of {problem.global_batch} sequences is not a multiple of the {problem.devices} "
                "dies, every one data parallel")
    per_die = problem.global_batch // problem.devices
    best = None
    for mb, recompute in itertools.product(sorted({m for m in (*problem.micro_batch_sizes, per_die) if m and per_die % m == 0}),
                                           ("none", "selective", "full")):
        plan = problem.plan(strategy="weight-streaming", dp=problem.devices, micro_batch=mb, recompute=recompute)
        cost = evaluate(wafer, plan)
        if cost["fits"] and (best is None or cost["step_time_s"] < best.cost["step_time_s"]):
            best = Outcome(plan, cost)
    return best


def equal_peak_gpus(target: Target, template: str = GPU_TEMPLATE, gpus: int = GPUS) -> Target:
    """``gpus`` GPUs of one NVLink node whose totals equal the wafer's peak compute, DRAM capacity and
    DRAM bandwidth (the GPU template's network and efficiency)."""
    base = load_target(template)
    dies = target.dies or gpus
    d = target.device
    device = base.device.model_copy(update={
        "name": f"{base.device.name} x{dies / gpus:g} (equal to {target.name})",
        "peak_tflops": {k: v * dies / gpus for k, v in d.peak_tflops.items()},
        "dram_capacity_gb": d.dram_capacity_gb * dies / gpus,
        "dram_bandwidth_gb_per_s": d.dram_bandwidth_gb_per_s * dies / gpus})
    return base.model_copy(update={"name": f"{template}-equal-{target.name}", "device": device,
                                   "description": f"{gpus} GPUs of {template} with {target.name}'s totals"})


def megatron_gpu(problem: Problem, template: str = GPU_TEMPLATE) -> Outcome | None:
    """``megatron`` on :func:`equal_peak_gpus` of the problem's target."""
    return megatron(problem.on(equal_peak_gpus(problem.target, template), GPUS))


BASELINES = {"megatron": megatron, "cerebras-ws": cerebras_ws, "megatron-gpu": megatron_gpu}


def run_baselines(problem: Problem) -> dict[str, dict]:
    """Every baseline's summary (``{"infeasible": reason}`` when nothing it allows fits)."""
    results = {}
    for name, baseline in BASELINES.items():
        outcome = baseline(problem)
        if isinstance(outcome, str):
            results[name] = {"infeasible": outcome}
        elif outcome is None:
            results[name] = {"infeasible": f"no plan it allows fits {problem.capacity / 1e9:.0f} GB per device"}
        else:
            target = equal_peak_gpus(problem.target).name if name == "megatron-gpu" else problem.target.name
            results[name] = {**plan_summary(outcome.plan, outcome.cost), "target": target}
    return results
