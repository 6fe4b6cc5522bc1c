"""A training plan: how one model is split over the devices of a target, and how it is scheduled."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .documents import parse_yaml_mapping, read_file
from .errors import WatosError, describe_validation_error

Recompute = Literal["none", "selective", "full"]
Schedule = Literal["1f1b", "gpipe", "interleaved"]


class Plan(BaseModel):
    """Parallel degrees and schedule knobs (Megatron-LM vocabulary).

    ``recompute``: ``none``; ``selective`` (the attention core, Korthikanti et al. 2022); ``full`` (every
    block's forward, keeping only its input). ``interleave`` is the number of model chunks per pipeline
    stage (1: plain 1F1B). ``zero``: 0 none, 1 optimizer states, 2 + gradients, 3 + parameters sharded
    over data parallelism. ``strategy: weight-streaming`` keeps weights off-device (Cerebras).
    Gradients are reduced in ``grad_reduce_dtype`` after the backward, or overlapped with it when
    ``overlap_grad_reduce`` (defaults: fp32 main gradients, not overlapped, as Megatron-LM's
    data-parallel reduction of 2021-22).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    strategy: Literal["3d", "weight-streaming"] = "3d"
    tp: int = Field(default=1, gt=0)
    pp: int = Field(default=1, gt=0)
    dp: int = Field(default=1, gt=0)
    cp: int = Field(default=1, gt=0)
    zero: Literal[0, 1, 2, 3] = 0
    micro_batch: int = Field(default=1, gt=0)
    global_batch: int = Field(default=0, ge=0, description="sequences per step; 0 means dp·micro_batch")
    recompute: Recompute = "none"
    sequence_parallel: bool = False
    interleave: int = Field(default=1, gt=0)
    schedule: Schedule = "1f1b"
    overlap_grad_reduce: bool = False
    grad_reduce_dtype: Literal["fp32", "bf16"] = "fp32"

    @property
    def devices(self) -> int:
        return self.tp * self.pp * self.dp * self.cp

    @property
    def sequences_per_step(self) -> int:
        return self.global_batch or self.dp * self.micro_batch

    @property
    def micro_batches(self) -> int:
        """Micro-batches per pipeline per step (m)."""
        return self.sequences_per_step // (self.dp * self.micro_batch)


def check_plan(plan: Plan, *, heads: int, kv_heads: int, layers: int, seq_len: int,
               devices: int | None = None) -> None:
    """One-line errors for a plan that does not divide the model or the devices."""
    if devices is not None and plan.devices != devices:
        raise WatosError(f"plan: tp·pp·dp·cp = {plan.tp}·{plan.pp}·{plan.dp}·{plan.cp} = {plan.devices}, "
                         f"but the target has {devices} devices")
    if heads % plan.tp:
        raise WatosError(f"plan: tp={plan.tp} does not divide the {heads} attention heads")
    if kv_heads % plan.tp and plan.tp % kv_heads:
        raise WatosError(f"plan: tp={plan.tp} and the {kv_heads} key/value heads do not divide each other")
    if plan.pp * plan.interleave > layers:
        raise WatosError(f"plan: pp·interleave = {plan.pp}·{plan.interleave} exceeds the {layers} blocks")
    if seq_len % plan.cp:
        raise WatosError(f"plan: cp={plan.cp} does not divide the sequence length {seq_len}")
    per_replica = plan.dp * plan.micro_batch
    if plan.sequences_per_step % per_replica:
        raise WatosError(f"plan: global batch {plan.sequences_per_step} is not a multiple of "
                         f"dp·micro_batch = {per_replica}")
    if plan.interleave > 1 and plan.micro_batches % plan.pp:
        raise WatosError(f"plan: interleaving needs micro-batches ({plan.micro_batches}) to be a multiple of pp ({plan.pp})")


def load_plan(path: str) -> Plan:
    """A plan from a YAML file; errors name the file and field."""
    return make_plan(parse_yaml_mapping(read_file(path, "plan file"), path, "a plan"), path)


def make_plan(fields: dict, where: str = "plan") -> Plan:
    """Validate plan fields; errors name the field."""
    try:
        return Plan(**fields)
    except ValidationError as exc:
        raise WatosError(f"{where}: {describe_validation_error(exc)}") from None
