"""Validation against published training runs (format ``watos-validation-cases/1``, see
shared/validation/README.md): build each case's model, trace it, cost its plan on its target, choose every
knob the source left ``null`` as its authors would have (the fastest plan that fits in memory), and compare
predicted with measured tokens/s per device.
"""
from __future__ import annotations

import functools
import itertools
import json
from typing import Any, Literal, TypedDict

from pydantic import ConfigDict, Field, ValidationError

from watos.errors import WatosError, describe_validation_error
from watos.files import StrictModel, parse_json_object, read_file
from watos.frontend.sources import from_hf_config
from watos.hardware.target import Target, load_target
from watos.pipelines import attention_for, cost_plan, lower, trace
from watos.plan import Plan, check_plan

MICRO_BATCH_CANDIDATES = (1, 2, 4, 8, 16)


class CaseModel(StrictModel):
    family: Literal["gpt", "llama"]
    hidden: int = Field(gt=0)
    layers: int = Field(gt=0)
    heads: int = Field(gt=0)
    kv_heads: int | None = Field(default=None, gt=0)
    ffn: int = Field(gt=0)
    vocab: int = Field(gt=0)
    seq: int = Field(gt=0)


class CaseSystem(StrictModel):
    target: str
    devices: int = Field(gt=0)
    precision: Literal["bf16", "fp16"]


class CasePlan(StrictModel):
    strategy: Literal["3d", "weight-streaming"]
    tp: int = Field(default=1, gt=0)
    pp: int = Field(default=1, gt=0)
    dp: int = Field(default=1, gt=0)
    cp: int = Field(default=1, gt=0)
    global_batch: int = Field(gt=0)
    micro_batch: int | None = Field(default=None, gt=0)
    recompute: Literal["none", "selective", "full"] | None = None
    sequence_parallel: bool | None = None
    zero: Literal[0, 1, 2, 3] = 0
    interleave: int | None = Field(default=None, gt=0)


class CaseMeasured(StrictModel):
    model_config = ConfigDict(extra="allow", frozen=True)
    tokens_per_s_per_device: float = Field(gt=0)
    peak_memory_gib_per_device: float | None = None


class Case(StrictModel):
    model_config = ConfigDict(extra="allow", frozen=True)
    id: str
    source: str = ""
    model: CaseModel
    system: CaseSystem
    plan: CasePlan
    measured: CaseMeasured


def load_cases(path: str) -> list[Case]:
    """Cases from a validation file; errors name the file, case and field."""
    data = parse_json_object(read_file(path, "validation file"), path, "a validation file")
    if data.get("format") != "watos-validation-cases/1":
        raise WatosError(f"{path}: not a watos-validation-cases/1 file (field 'format')")
    cases = []
    for index, raw in enumerate(data.get("cases", [])):
        try:
            cases.append(Case(**raw))
        except (ValidationError, TypeError) as exc:
            detail = describe_validation_error(exc) if isinstance(exc, ValidationError) else str(exc)
            name = raw.get("id", f"#{index}") if isinstance(raw, dict) else f"#{index}"
            raise WatosError(f"{path}: case {name}: {detail}") from None
    if not cases:
        raise WatosError(f"{path}: no cases")
    return cases


def hf_config(model: CaseModel) -> dict[str, Any]:
    """A transformers config of the case's shape (GPT-2 architecture for ``gpt``, Llama for ``llama``)."""
    if model.family == "gpt":
        return {"model_type": "gpt2", "n_embd": model.hidden, "n_layer": model.layers, "n_head": model.heads,
                "n_inner": model.ffn, "vocab_size": model.vocab, "n_positions": model.seq,
                "activation_function": "gelu_new", "tie_word_embeddings": True}
    return {"model_type": "llama", "hidden_size": model.hidden, "intermediate_size": model.ffn,
            "num_hidden_layers": model.layers, "num_attention_heads": model.heads,
            "num_key_value_heads": model.kv_heads or model.heads, "vocab_size": model.vocab,
            "max_position_embeddings": model.seq, "tie_word_embeddings": False}


@functools.lru_cache(maxsize=64)
def _traced(config_json: str, seq: int, micro_batch: int, attention: str, dtype: str):
    config = json.loads(config_json)
    source = from_hf_config(config["model_type"], config)
    return trace(source, seq_len=seq, micro_batch=micro_batch, attention=attention, dtype=dtype)


@functools.lru_cache(maxsize=64)
def lowered_case(config_json: str, seq: int, micro_batch: int, fusion: str, dtype: str):
    """A case's model traced at one micro-batch size and lowered for a fusion level (cached)."""
    return lower(_traced(config_json, seq, micro_batch, attention_for(fusion), dtype), fusion)


def case_plans(case: Case) -> list[Plan]:
    """Every plan the case allows: its published knobs, and each choice for those left null."""
    p, m = case.plan, case.model
    per_replica = p.global_batch // p.dp
    micro = [p.micro_batch] if p.micro_batch else [b for b in MICRO_BATCH_CANDIDATES if per_replica % b == 0]
    recompute = [p.recompute] if p.recompute else ["none", "selective", "full"]
    sp = [p.sequence_parallel] if p.sequence_parallel is not None else ([False, True] if p.tp > 1 else [False])
    chunks = m.layers // p.pp
    interleave = [p.interleave] if p.interleave else [v for v in (1, 2, 3, 4, 6, 8) if chunks % v == 0 and (v == 1 or p.pp > 1)]
    plans = []
    for b, r, s, v in itertools.product(micro, recompute, sp, interleave):
        plan = Plan(strategy=p.strategy, tp=p.tp, pp=p.pp, dp=p.dp, cp=p.cp, zero=p.zero, micro_batch=b,
                    global_batch=p.global_batch, recompute=r, sequence_parallel=s, interleave=v)
        try:
            check_plan(plan, heads=m.heads, kv_heads=m.kv_heads or m.heads, layers=m.layers, seq_len=m.seq)
        except WatosError:
            continue
        plans.append(plan)
    return plans


def predict(case: Case, target: Target | None = None) -> dict[str, Any]:
    """The best feasible plan for a case and its predicted throughput."""
    target = target or load_target(case.system.target)
    config = json.dumps(hf_config(case.model), sort_keys=True)
    best = None
    for plan in case_plans(case):
        graph = lowered_case(config, case.model.seq, plan.micro_batch, target.fusion, case.system.precision)
        cost = cost_plan(graph, target, plan, dtype=case.system.precision).analyses["cost"]
        if cost["fits"] and (best is None or cost["tokens_per_s_per_device"] > best[1]["tokens_per_s_per_device"]):
            best = (plan, cost)
    if best is None:
        raise WatosError(f"case {case.id}: no plan fits in device memory")
    plan, cost = best
    predicted = cost["tokens_per_s_per_device"]
    measured = case.measured.tokens_per_s_per_device
    return {"id": case.id, "predicted_tokens_per_s_per_device": predicted,
            "measured_tokens_per_s_per_device": measured, "error": (predicted - measured) / measured,
            "chosen": {"micro_batch": plan.micro_batch, "recompute": plan.recompute,
                       "sequence_parallel": plan.sequence_parallel, "interleave": plan.interleave},
            "predicted_peak_memory_gib_per_device": cost["peak_memory_bytes_per_device"] / 2**30,
            "measured_peak_memory_gib_per_device": case.measured.peak_memory_gib_per_device,
            "mfu": cost["mfu"]}


class ValidationResult(TypedDict):
    """Every case's prediction (id, predicted and measured tokens/s per device, relative error, the knobs
    chosen for those the source left null, predicted and measured peak memory in GiB per device, MFU), and
    the mean and largest absolute error over the file."""

    cases: list[dict[str, Any]]
    mean_abs_error: float
    max_abs_error: float


def validate(path: str) -> ValidationResult:
    """Predict every case of a validation file; mean absolute and max absolute error."""
    results = [predict(case) for case in load_cases(path)]
    errors = [abs(r["error"]) for r in results]
    return {"cases": results, "mean_abs_error": sum(errors) / len(errors), "max_abs_error": max(errors)}
