"""A training plan: how one model is split over the devices of a target, and how it is scheduled."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from watos.files import parse_yaml_mapping, read_file
from watos.errors import WatosError, describe_validation_error
from watos.ir.aten import is_grouped_mm
from watos.ir import Graph
from watos.network.placement import Strategy

Recompute = Literal["none", "selective", "full"]
Schedule = Literal["1f1b", "gpipe", "interleaved"]


class Borrow(BaseModel):
    """Cross-die memory (WATOS Sender/Helper): every die of stage ``sender`` keeps ``gb`` of its
    checkpoints in the DRAM of its counterpart die of stage ``helper``, over the die-to-die links."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    sender: int = Field(ge=0)
    helper: int = Field(ge=0)
    gb: float = Field(gt=0)


class Routing(BaseModel):
    """The routing model of MoE layers, which fake tensors cannot trace (the token split is data dependent).

    Balanced top-k: every token picks k experts and, on average, every expert-parallel rank receives an
    equal share of the routed tokens. ``skew``: the busiest EP rank receives (1 + skew) times that mean
    (0: perfectly balanced, as auxiliary-loss-free or loss-balanced training approaches). ``capacity_factor``
    (GShard): each rank accepts at most that multiple of the mean and drops the rest; null: dropless. The
    busiest rank, which every rank waits for in the all-to-all, carries ``load`` times the mean. A model whose
    graph routes into static capacity buffers (GShard's einsum dispatch) already carries its padding and is
    not scaled again.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    skew: float = Field(default=0.0, ge=0)
    capacity_factor: float | None = Field(default=None, ge=1)

    @property
    def load(self) -> float:
        """Routed tokens on the busiest EP rank over the balanced mean."""
        return min(1 + self.skew, self.capacity_factor or float("inf"))

    def describe(self, experts: int, top_k: int) -> str:
        """One line for reports."""
        dropping = f"capacity factor {self.capacity_factor:g}" if self.capacity_factor else "dropless"
        return (f"balanced top-{top_k} of {experts} experts, busiest EP rank at {self.load:.2f}x the mean "
                f"(skew {self.skew:g}, {dropping})")


class Plan(BaseModel):
    """Parallel degrees and schedule knobs (Megatron-LM vocabulary).

    ``recompute``: ``none``; ``selective`` (the attention core, Korthikanti et al. 2022); ``full`` (every
    block's forward, keeping only its input); or a list with one of these per pipeline stage.
    ``interleave`` is the number of model chunks per pipeline stage (1: plain 1F1B). ``zero``: 0 none,
    1 optimizer states, 2 + gradients, 3 + parameters sharded over data parallelism. ``strategy:
    weight-streaming`` keeps weights off-device (Cerebras). ``placement`` puts ranks on a mesh's dies
    (:mod:`watos.network.placement`; ``seed`` drives ``optimized``); ``borrow`` lists Sender/Helper checkpoint
    storage. ``ep`` splits each MoE layer's experts over that many of the ``dp`` ranks (expert
    parallelism; dense weights stay data parallel), routed under ``routing`` (:class:`Routing`).

    Gradients are accumulated over micro-batches in a main-gradient buffer of ``grad_reduce_dtype``
    (default fp32: Megatron-LM's ``accumulate_allreduce_grads_in_fp32``, which bf16 training forces;
    Megatron's fp16 default keeps 16-bit gradients), inside the weight-gradient GEMM (``fused``,
    Megatron's gradient-accumulation fusion) or by an add after every backward (``unfused``, its local
    DDP of 2021), and reduced after the backward, or overlapped with it when ``overlap_grad_reduce``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    strategy: Literal["3d", "weight-streaming"] = "3d"
    tp: int = Field(default=1, gt=0)
    pp: int = Field(default=1, gt=0)
    dp: int = Field(default=1, gt=0)
    cp: int = Field(default=1, gt=0)
    ep: int = Field(default=1, gt=0)
    routing: Routing = Routing()
    zero: Literal[0, 1, 2, 3] = 0
    micro_batch: int = Field(default=1, gt=0)
    global_batch: int = Field(default=0, ge=0, description="sequences per step; 0 means dp·micro_batch")
    recompute: Recompute | tuple[Recompute, ...] = "none"  # one policy, or one per pipeline stage
    sequence_parallel: bool = False
    interleave: int = Field(default=1, gt=0)
    schedule: Schedule = "1f1b"
    placement: Strategy = "row_major"
    borrow: tuple[Borrow, ...] = ()
    seed: int = 0
    overlap_grad_reduce: bool = False
    grad_reduce_dtype: Literal["fp32", "bf16", "fp16"] = "fp32"
    grad_accumulation: Literal["unfused", "fused"] = "fused"

    @property
    def devices(self) -> int:
        return self.tp * self.pp * self.dp * self.cp

    @property
    def sequences_per_step(self) -> int:
        return self.global_batch or self.dp * self.micro_batch

    @property
    def pipeline_kind(self) -> Schedule:
        """The pipeline schedule run: interleaved 1F1B whenever stages hold several model chunks."""
        return "interleaved" if self.interleave > 1 else self.schedule

    @property
    def micro_batches(self) -> int:
        """Micro-batches per pipeline per step (m)."""
        return self.sequences_per_step // (self.dp * self.micro_batch)


def check_plan(plan: Plan, *, heads: int, kv_heads: int, layers: int, seq_len: int, experts: int = 0,
               devices: int | None = None) -> None:
    """One-line errors for a plan that does not divide the model or the devices (``experts``: per MoE
    layer, 0 for a dense model)."""
    if devices is not None and plan.devices != devices:
        raise WatosError(f"plan: tp·pp·dp·cp = {plan.tp}·{plan.pp}·{plan.dp}·{plan.cp} = {plan.devices}, "
                         f"but the target has {devices} devices")
    if heads % plan.tp:
        raise WatosError(f"plan: tp={plan.tp} does not divide the {heads} attention heads")
    if kv_heads % plan.tp and plan.tp % kv_heads:
        raise WatosError(f"plan: tp={plan.tp} and the {kv_heads} key/value heads do not divide each other")
    if plan.pp * plan.interleave > layers:
        raise WatosError(f"plan: pp·interleave = {plan.pp}·{plan.interleave} exceeds the {layers} blocks")
    if not isinstance(plan.recompute, str) and len(plan.recompute) != plan.pp:
        raise WatosError(f"plan: {len(plan.recompute)} per-stage recompute policies for pp={plan.pp} stages")
    for b in plan.borrow:
        if max(b.sender, b.helper) >= plan.pp or b.sender == b.helper:
            raise WatosError(f"plan: borrow from stage {b.sender} into stage {b.helper} needs two different "
                             f"stages below pp={plan.pp}")
    if plan.ep > 1 and not experts:
        raise WatosError(f"plan: ep={plan.ep} but the model has no experts")
    if plan.dp % plan.ep or (experts and experts % plan.ep):
        raise WatosError(f"plan: ep={plan.ep} must divide dp={plan.dp} and the {experts} experts per layer")
    if seq_len % plan.cp:
        raise WatosError(f"plan: cp={plan.cp} does not divide the sequence length {seq_len}")
    per_replica = plan.dp * plan.micro_batch
    if plan.sequences_per_step % per_replica:
        raise WatosError(f"plan: global batch {plan.sequences_per_step} is not a multiple of "
                         f"dp·micro_batch = {per_replica}")
    if plan.interleave > 1 and plan.pp == 1:
        raise WatosError(f"plan: interleave={plan.interleave} needs pipeline stages (pp > 1)")
    if plan.interleave > 1 and plan.micro_batches % plan.pp:
        raise WatosError(f"plan: interleaving needs micro-batches ({plan.micro_batches}) to be a multiple of pp ({plan.pp})")


def model_limits(graph: Graph) -> dict[str, int]:
    """What a plan must divide, from a traced graph: the keyword arguments of :func:`check_plan`."""
    from watos.passes.shard import expert_count

    config = graph.model.config
    heads = config.get("num_attention_heads") or config.get("n_head") or 1
    return {"heads": heads, "kv_heads": config.get("num_key_value_heads") or heads,
            "layers": max(graph.model.num_blocks, 1), "seq_len": graph.model.seq_len, "experts": expert_count(graph)}


def routing_note(graph: Graph, routing: Routing) -> str | None:
    """The routing model a report states for an MoE model (None for a dense model): experts per layer and
    top-k from the graph (the top-k over expert scores), the busiest rank from ``routing`` for a dropless
    model (grouped expert matmuls); a model routing into static capacity buffers carries them in its graph."""
    from watos.passes.shard import expert_params

    weights = expert_params(graph)
    if not weights:
        return None
    experts = max(param.outputs[0].shape[0] for param in weights.values())
    k = max((op.outputs[0].shape[-1] for op in graph.ops if op.target == "topk"
             and graph.type_of(op.inputs[0]).shape[-1] == experts), default=1)
    if any(is_grouped_mm(op.aten) for op in graph.ops if weights.keys() & set(op.params)):
        return routing.describe(experts, k)
    return (f"top-{k} of {experts} experts into static capacity buffers traced in the model's graph (every EP "
            "rank computes its experts' full buffers; tokens over capacity are dropped; no skew applied)")


def load_plan(path: str) -> Plan:
    """A plan from a YAML file; errors name the file and field."""
    return make_plan(parse_yaml_mapping(read_file(path, "plan file"), path, "a plan"), path)


def make_plan(fields: dict, where: str = "plan") -> Plan:
    """Validate plan fields; errors name the field."""
    try:
        return Plan(**fields)
    except ValidationError as exc:
        raise WatosError(f"{where}: {describe_validation_error(exc)}") from None
