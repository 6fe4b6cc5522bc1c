"""Predicting one validation case: build its model, trace it, cost its plan on its target under its stack,
and choose every knob the source left ``null`` as its authors would have (the fastest plan that fits).

A case never aborts a file: a target that does not ship is reported ``target not available``; a case whose
every plan overflows memory is reported with the least memory any of its plans needs and counted as a miss
(an error of −100 %: a run that ran was predicted not to). A case's framework picks the shipped stack that
names it (:func:`watos.hardware.stack.stack_for_framework`); a framework no stack names runs on the target's
own stack with the features the case states, and the prediction says so.
"""
from __future__ import annotations

import functools
import itertools
import json
from collections.abc import Callable
from typing import Any

from watos.errors import WatosError
from watos.hardware.stack import Stack, load_stack, stack_for_framework
from watos.hardware.target import Target, Torus, load_target
from watos.ir import Graph
from watos.ir.queries import model_limits
from watos.pipelines import attention_for, cost_plan, lower, trace
from watos.plan import Plan, check_plan, traced_dtype
from watos.validation.cases import Case

MICRO_BATCH_CANDIDATES = (1, 2, 4, 8, 16)
INTERLEAVE_CANDIDATES = (1, 2, 3, 4, 6, 8)
Hardware = Callable[[str], Target]
"""How a target is found by name (a calibration replaces the shipped one)."""
Stacks = Callable[[str], Stack]
"""How a stack is found by name (likewise)."""


@functools.lru_cache(maxsize=256)
def _traced(spec_json: str, seq: int, micro_batch: int, attention: str, dtype: str) -> Graph:
    return trace(json.loads(spec_json), seq_len=seq, micro_batch=micro_batch, attention=attention, dtype=dtype)


@functools.lru_cache(maxsize=256)
def lowered_case(spec_json: str, seq: int, micro_batch: int, fusion: str, dtype: str, fused_loss: bool = False) -> Graph:
    """A case's model (its :meth:`~watos.validation.cases.CaseModel.spec` as JSON) traced at one micro-batch size
    and lowered for a stack's kernels (cached: every plan of every trial of a calibration reuses it)."""
    return lower(_traced(spec_json, seq, micro_batch, attention_for(fusion), traced_dtype(dtype)), fusion,
                 fused_loss=fused_loss)


def stack_of(case: Case, stacks: Stacks = load_stack) -> tuple[str | None, str | None]:
    """The shipped stack a case ran (None: the target's own), and a note when its framework has none."""
    stack = stack_for_framework(case.stack.framework)
    if stack is not None:
        return stack.name, None
    return None, (f"framework {case.stack.framework!r} has no shipped stack: the target's own, with the "
                  "features the case states")


def case_plans(case: Case, limits: dict[str, int], stack: str | None,
               tp_shards_activations: bool = False) -> list[Plan]:
    """Every plan the case allows: its published knobs, and each choice for those left null (weight streaming:
    a system runs its whole batch per layer, so the micro-batch is the batch per system). A stack whose tensor
    parallelism shards the activations between layers (``tp_shards_activations``) runs it as sequence
    parallelism does."""
    p = case.plan
    per_replica = p.global_batch // p.dp
    if p.strategy == "weight-streaming":
        micro = [per_replica]
    else:
        micro = [p.micro_batch] if p.micro_batch else [b for b in MICRO_BATCH_CANDIDATES if per_replica % b == 0]
    recompute = [p.recompute] if p.recompute else ["none", "selective", "full"]
    sp = [p.sequence_parallel] if p.sequence_parallel is not None else ([False, True] if p.tp > 1 else [False])
    if tp_shards_activations and p.tp > 1:
        sp = [True]
    chunks = limits["layers"] // p.pp
    interleave = [p.interleave] if p.interleave else \
        [v for v in INTERLEAVE_CANDIDATES if chunks % v == 0 and (v == 1 or p.pp > 1)]
    fixed = dict(strategy=p.strategy, tp=p.tp, pp=p.pp, dp=p.dp, cp=p.cp, ep=p.ep, zero=p.zero,
                 global_batch=p.global_batch, routing=p.routing or {}, shard_group=p.shard_group,
                 stage_layers=p.stage_layers, stack=stack, features=case.stack.features(),
                 schedule="gpipe" if p.pipeline_schedule == "gpipe" else "1f1b")
    plans = []
    for b, r, s, v in itertools.product(micro, recompute, sp, interleave):
        plan = Plan(**fixed, micro_batch=b, recompute=r, sequence_parallel=s, interleave=v)
        try:
            check_plan(plan, **limits)
        except WatosError:
            continue
        plans.append(plan)
    return plans


def hardware_class(target: Target) -> str:
    """The chip a target is built of (``A100``, ``H100``, ``WSE``...): what validation errors are grouped by."""
    return target.device.name.split("-")[0]


def sized_for(target: Target, case: Case) -> Target:
    """A torus target cut to the slices a case ran on (its stated slice shape, or the target's shape for the
    case's chip count); any other target as it is."""
    if not isinstance(target.topology, Torus):
        return target
    slices = case.system.topology.slices if case.system.topology else 1
    shape = [int(x) for x in case.system.topology.slice_shape.split("x")] if case.system.topology else None
    return target.sliced(case.system.devices // slices, slices, shape)


def predict(case: Case, hardware: Hardware = load_target, stacks: Stacks = load_stack) -> dict[str, Any]:
    """One case's prediction (see module docstring): predicted and measured tokens/s per device, the error,
    the knobs chosen, predicted and measured peak memory, and what was assumed. A case whose model cannot be
    traced or costed is reported ``failed`` with the reason, and counted as a miss."""
    try:
        return _predict(case, hardware, stacks)
    except WatosError as exc:
        return {"id": case.id, "source": case.source, "framework": case.stack.framework, "hardware": None,
                "status": "failed", "reason": str(exc), "error": -1.0, "predicted_tokens_per_s_per_device": 0.0,
                "predicted_peak_memory_gib_per_device": 0.0,
                "measured_tokens_per_s_per_device": case.measured.tokens_per_s_per_device,
                "measured_peak_memory_gib_per_device": case.measured.peak_memory_gib_per_device}


def _predict(case: Case, hardware: Hardware, stacks: Stacks) -> dict[str, Any]:
    measured = case.measured.tokens_per_s_per_device
    base = {"id": case.id, "source": case.source, "framework": case.stack.framework,
            "measured_tokens_per_s_per_device": measured,
            "measured_peak_memory_gib_per_device": case.measured.peak_memory_gib_per_device}
    try:
        target = hardware(case.system.target)
    except WatosError:
        return {**base, "status": "target not available", "hardware": None}
    target = sized_for(target, case)
    stack, note = stack_of(case, stacks)
    spec = json.dumps(case.model.spec(), sort_keys=True)
    dtype = case.system.precision
    limits = model_limits(_traced(spec, case.model.seq, 1, "eager", traced_dtype(dtype)))
    best, least_memory = None, None
    for plan in case_plans(case, limits, stack, stacks(stack or target.stack_name).tp_shards_activations):
        software = stacks(plan.stack or target.stack_name).resolve(plan.features)
        graph = lowered_case(spec, case.model.seq, plan.micro_batch, software.fusion, dtype, software.fused_loss)
        cost = cost_plan(graph, target, plan, dtype=dtype, verify=False, software=software).analyses["cost"]
        memory = cost["peak_memory_bytes_per_device"]
        least_memory = memory if least_memory is None else min(least_memory, memory)
        if cost["fits"] and (best is None or cost["tokens_per_s_per_device"] > best[1]["tokens_per_s_per_device"]):
            best = (plan, cost)
    result = {**base, "hardware": hardware_class(target), "stack": stack or target.stack_name,
              **({"note": note} if note else {})}
    if best is None:
        return {**result, "status": "does not fit", "error": -1.0, "predicted_tokens_per_s_per_device": 0.0,
                "predicted_peak_memory_gib_per_device": (least_memory or 0.0) / 2**30}
    plan, cost = best
    predicted = cost["tokens_per_s_per_device"]
    return {**result, "status": "predicted", "predicted_tokens_per_s_per_device": predicted,
            "error": (predicted - measured) / measured, "mfu": cost["mfu"],
            "chosen": {"micro_batch": plan.micro_batch, "recompute": plan.recompute,
                       "sequence_parallel": plan.sequence_parallel, "interleave": plan.interleave},
            "predicted_peak_memory_gib_per_device": cost["peak_memory_bytes_per_device"] / 2**30}
