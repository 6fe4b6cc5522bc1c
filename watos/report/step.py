"""One costed training step laid out in time: what ``trace.json`` draws (:mod:`watos.report.chrome_trace`).

Per pipeline stage, every micro-batch's forward and backward (one per model chunk under interleaving) from
the dependency-driven schedule of :func:`watos.report.timeline.pipeline_events`, each block cut into its
parts (:class:`~watos.ir.analyses.StageMetrics` ``parts_s``): the forward holds its compute and the exposed
TP/CP/EP collectives of the forward; the backward its recomputation, compute, exposed collectives of the
backward, the exposed per-micro-batch ZeRO collectives and pipeline sends, the contention of overlapped
communication, gradient accumulation and any wait for borrowed checkpoints. The parts are drawn back to
back inside their block: their durations are the cost model's, their order within the block is not
modelled (the kernels interleave layer by layer).

After the pipeline (the last block of any stage), each stage's data-parallel tail: the gradient reduction
and parameter gather — hidden under the backward up to what the cost model exposes, drawn ending at the
end of the exposed part — then the optimizer; then the stack's fixed time per step. The step therefore
spans ``pipeline + max_s(dp_exposed_s + optimizer_s) + step_overhead``, the schedule pass's step time
(its pipeline term is the closed form of Narayanan et al. 2021; the simulated schedule agrees with it
to well within 1% on the shipped models).

Counters: each stage's memory per device over the step, ``total − activations·(1 − held/peak_held)``,
where ``held`` counts the micro-batch chunks whose activations the stage holds (a forward adds one, its
backward frees it), so the 1F1B ramp shows and the peak is the reported peak; and, on a mesh, the load of
the busiest links, each phase's bytes over that phase (per-micro-batch traffic over the pipeline, the
per-step data-parallel traffic over the data-parallel window).
"""
from __future__ import annotations

from watos.plan import Plan
from watos.report.timeline import makespan, pipeline_events

FORWARD_PARTS = {"forward": "forward compute", "tp_comm_fwd": "TP collectives (exposed)",
                 "cp_comm_fwd": "CP exchange (exposed)", "ep_comm_fwd": "EP dispatch all-to-all (exposed)"}
BACKWARD_PARTS = {"recompute": "recompute", "backward": "backward compute", "tp_comm_bwd": "TP collectives (exposed)",
                  "cp_comm_bwd": "CP exchange (exposed)", "ep_comm_bwd": "EP combine all-to-all (exposed)",
                  "zero_comm": "ZeRO gather/reduce-scatter (exposed)", "pp_comm": "pipeline send (exposed)",
                  "contention": "contention of overlapped communication", "grad_accumulation": "gradient accumulation",
                  "borrow_wait": "waiting for borrowed checkpoints"}
"""The parts of a forward and a backward block, by :class:`~watos.ir.analyses.StageMetrics` ``parts_s`` key."""


def step_timeline(cost: dict, plan: Plan, stage_dies: dict[str, list[int]]) -> dict:
    """The step of a costed 3D plan in time (module docstring): ``stages`` (per stage its ``blocks``, whose parts
    :func:`block_parts` lays out, ``dp`` spans, ``dma`` spans and ``memory_gb`` samples ``[t, GB]``), ``step``
    spans (the stack's time per step), ``pipeline_end_s`` and ``span_s``. Empty for a plan without stage parts."""
    stages = cost["stages"]
    if plan.strategy != "3d" or not all("parts_s" in st for st in stages):
        return {"stages": [], "step": [], "pipeline_end_s": 0.0, "span_s": cost["step_time_s"]}
    forward = [sum(st["parts_s"][k] for k in FORWARD_PARTS) for st in stages]
    backward = [sum(st["parts_s"][k] for k in BACKWARD_PARTS) for st in stages]
    events = pipeline_events(forward, backward, plan.micro_batches, interleave=plan.interleave, kind=plan.pipeline_kind)
    end = makespan(events)
    tail = max(st["dp_exposed_s"] + st["optimizer_s"] for st in stages)
    overhead = cost["breakdown_s"]["step_overhead"]
    laid = []
    for st in stages:
        mine = [e for e in events if e["stage"] == st["stage"]]
        laid.append({"stage": st["stage"], "dies": stage_dies[str(st["stage"])], "parts_s": st["parts_s"],
                     "interleave": plan.interleave, "blocks": mine,
                     "dp": _data_parallel(st, end), "dma": _checkpoints(mine, st),
                     "memory_gb": _memory(mine, st)})
    step = [{"name": "step overhead (the stack's time per step)", "start_s": end + tail, "dur_s": overhead}] \
        if overhead > 0 else []
    return {"stages": laid, "step": step, "pipeline_end_s": end, "span_s": end + tail + overhead}


def block_parts(block: dict, stage: dict) -> list[dict]:
    """A forward or backward block's parts back to back, each ``1/interleave`` of a micro-batch's (``stage``: a
    stage of :func:`step_timeline`, with its ``parts_s`` and ``interleave``)."""
    names = FORWARD_PARTS if block["kind"] == "fwd" else BACKWARD_PARTS
    parts, at = [], block["start_s"]
    for key, name in names.items():
        seconds = stage["parts_s"][key] / stage["interleave"]
        if seconds > 0:
            parts.append({"name": name, "start_s": at, "dur_s": seconds})
            at += seconds
    return parts


def _data_parallel(stage: dict, pipeline_end: float) -> list[dict]:
    """The stage's gradient reduction and parameter gather (hidden under the backward but for the exposed
    part, which runs past the pipeline), then the optimizer."""
    spans = []
    exposed, comm = stage["dp_exposed_s"], stage["dp_comm_s"]
    if comm > 0:
        spans.append({"name": "DP gradient reduce / parameter gather", "start_s": max(0.0, pipeline_end + exposed - comm),
                      "dur_s": comm, "args": {"exposed_s": exposed, "hidden_s": max(0.0, comm - exposed),
                                              "overlaps": "the last micro-batches' backward"}})
    if stage["optimizer_s"] > 0:
        spans.append({"name": "optimizer step", "start_s": pipeline_end + exposed, "dur_s": stage["optimizer_s"],
                      "args": {}})
    return spans


def _checkpoints(events: list[dict], stage: dict) -> list[dict]:
    """A Sender's borrowed checkpoints: out to the Helper after each forward, back before each backward."""
    transfer = stage.get("borrow_transfer_s", 0.0) / 2
    if transfer <= 0:
        return []
    return [{"name": "checkpoint → helper" if e["kind"] == "fwd" else "checkpoint ← helper",
             "start_s": e["start_s"] + e["dur_s"] if e["kind"] == "fwd" else max(0.0, e["start_s"] - transfer),
             "dur_s": transfer} for e in events]


def _memory(events: list[dict], stage: dict) -> list[list[float]]:
    """``[t, GB]`` samples of the stage's memory per device (module docstring)."""
    changes = sorted([(e["start_s"] + e["dur_s"], 1 if e["kind"] == "fwd" else -1) for e in events])
    held, peak, counts = 0, 0, [(0.0, 0)]
    for t, delta in changes:
        held += delta
        peak = max(peak, held)
        counts.append((t, held))
    memory = stage["memory"]
    total, activations = memory["total_bytes"], memory.get("activations_bytes", 0.0)
    return [[t, (total - activations * (1 - n / peak if peak else 0.0)) / 1e9] for t, n in counts]
