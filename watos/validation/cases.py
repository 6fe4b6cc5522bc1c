"""Validation cases: published measurements of real training runs (``shared/validation/README.md``).

Two formats are read. ``watos-validation-cases/1``: a GPT or Llama shape, a target, a plan and the measured
tokens/s per device. ``watos-validation-cases/2`` adds the model as a Hugging Face config or a shipped name,
FP8 precision, the software ``stack`` that ran (framework, version and the features the source states), the
slice topology of TPU runs, expert parallelism, routing, hybrid sharding, uneven pipeline stages, and the
peak memory where the source measured it. A v1 case reads as a v2 case whose stack is Megatron-LM's.

A knob a source left ``null`` is chosen by the tool as the authors would have (:mod:`watos.validation.predict`).
"""
from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import ConfigDict, Field, ValidationError, model_validator

from watos.errors import WatosError, describe_validation_error
from watos.files import StrictModel, parse_json_object, read_file
from watos.hardware.stack import Attention, Features, Fp8Recipe, MoeDispatcher, RecomputeModule
from watos.plan import Routing, StageLayers

FORMATS = ("watos-validation-cases/1", "watos-validation-cases/2")


class _Open(StrictModel):
    """Fields a source may add (notes, derivations) are kept, not refused."""

    model_config = ConfigDict(extra="allow", frozen=True)


class CaseModel(StrictModel):
    """The model: a GPT or Llama shape (``family``...), a Hugging Face ``config``, or a shipped ``name``; and
    the sequence length."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    family: Literal["gpt", "llama"] | None = None
    hidden: int | None = Field(default=None, gt=0)
    layers: int | None = Field(default=None, gt=0)
    heads: int | None = Field(default=None, gt=0)
    kv_heads: int | None = Field(default=None, gt=0)
    ffn: int | None = Field(default=None, gt=0)
    vocab: int | None = Field(default=None, gt=0)
    config: dict[str, Any] | None = None
    name: str | None = None
    seq: int = Field(gt=0)
    notes: str | None = None

    @model_validator(mode="after")
    def _one_spec(self) -> "CaseModel":
        given = [k for k in ("family", "config", "name") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of family (with its shape), config or name")
        if self.family and None in (self.hidden, self.layers, self.heads, self.ffn, self.vocab):
            raise ValueError("a family needs hidden, layers, heads, ffn and vocab")
        return self

    @property
    def label(self) -> str:
        """A short name: the shipped name, the config's model_type, or the family and width."""
        if self.name:
            return self.name
        return str(self.config.get("model_type")) if self.config is not None else f"{self.family}-h{self.hidden}"

    def spec(self) -> str | dict[str, Any]:
        """What :func:`watos.load_model` takes for this model: a config dict or a shipped name."""
        if self.name:
            return self.name
        return dict(self.config) if self.config is not None else hf_config(self)


def hf_config(model: CaseModel) -> dict[str, Any]:
    """A transformers config of a family shape (GPT-2 architecture for ``gpt``, Llama for ``llama``)."""
    if model.family == "gpt":
        return {"model_type": "gpt2", "n_embd": model.hidden, "n_layer": model.layers, "n_head": model.heads,
                "n_inner": model.ffn, "vocab_size": model.vocab, "n_positions": model.seq,
                "activation_function": "gelu_new", "tie_word_embeddings": True}
    return {"model_type": "llama", "hidden_size": model.hidden, "intermediate_size": model.ffn,
            "num_hidden_layers": model.layers, "num_attention_heads": model.heads,
            "num_key_value_heads": model.kv_heads or model.heads, "vocab_size": model.vocab,
            "max_position_embeddings": model.seq, "tie_word_embeddings": False}


class Topology(StrictModel):
    """TPU slices: how many, and the 3D torus shape of each (``4x4x4``)."""

    slices: int = Field(gt=0)
    slice_shape: str


class CaseSystem(StrictModel):
    target: str
    devices: int = Field(gt=0)
    precision: Literal["bf16", "fp16", "fp8"]
    topology: Topology | None = None
    notes: str | None = None


class CaseStack(_Open):
    """The software that ran: its framework, version and the features the source states (None: not published)."""

    framework: str = "megatron-lm"
    version: str = ""
    attention: Attention | None = None
    tp_comm_overlap: bool | None = None
    async_tp: bool | None = None
    overlap_grad_reduce: bool | None = None
    overlap_param_gather: bool | None = None
    overlap_p2p: bool | None = None
    distributed_optimizer: bool | None = None
    fp8_recipe: Fp8Recipe | None = None
    torch_compile: bool | None = None
    cuda_graphs: bool | None = None
    moe_dispatcher: MoeDispatcher | None = None
    recompute_modules: list[RecomputeModule] | None = None
    remat_policy: str | None = None

    def features(self) -> Features:
        """The stated features, as a plan's :class:`~watos.hardware.stack.Features`."""
        return Features(**{name: getattr(self, name) for name in Features.model_fields})


class CasePlan(StrictModel):
    strategy: Literal["3d", "weight-streaming"]
    tp: int = Field(default=1, gt=0)
    pp: int = Field(default=1, gt=0)
    dp: int = Field(default=1, gt=0)
    cp: int = Field(default=1, gt=0)
    ep: int = Field(default=1, gt=0)
    global_batch: int = Field(gt=0)
    micro_batch: int | None = Field(default=None, gt=0)
    recompute: Literal["none", "selective", "full"] | None = None
    sequence_parallel: bool | None = None
    zero: Literal[0, 1, 2, 3] = 0
    interleave: int | None = Field(default=None, gt=0)
    routing: Routing | None = None
    shard_group: int | None = Field(default=None, gt=0)
    stage_layers: StageLayers | None = None
    pipeline_schedule: Literal["1f1b", "interleaved-1f1b", "gpipe"] | None = None


class CaseMeasured(_Open):
    tokens_per_s_per_device: float = Field(gt=0)
    peak_memory_gib_per_device: float | None = None


class Case(_Open):
    id: str
    source: str = ""
    model: CaseModel
    system: CaseSystem
    plan: CasePlan
    measured: CaseMeasured
    stack: CaseStack = CaseStack()

    @property
    def model_key(self) -> str:
        """The model and sequence length, as a string: cases of one model share it."""
        return json.dumps(self.model.spec(), sort_keys=True) + f"@{self.model.seq}"


def load_cases(path: str) -> list[Case]:
    """Cases from a validation file of either format; errors name the file, case and field."""
    data = parse_json_object(read_file(path, "validation file"), path, "a validation file")
    if data.get("format") not in FORMATS:
        raise WatosError(f"{path}: not a {' or '.join(FORMATS)} file (field 'format')")
    raw_cases = data.get("cases")
    if not isinstance(raw_cases, list) or not raw_cases:
        raise WatosError(f"{path}: no cases")
    cases = []
    for index, raw in enumerate(raw_cases):
        name = raw.get("id", f"#{index}") if isinstance(raw, dict) else f"#{index}"
        try:
            cases.append(Case(**raw))
        except (ValidationError, TypeError) as exc:
            detail = describe_validation_error(exc) if isinstance(exc, ValidationError) else str(exc)
            raise WatosError(f"{path}: case {name}: {detail}") from None
    return cases
