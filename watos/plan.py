"""A training plan: how one model is split over the devices of a target, and how it is scheduled."""
from __future__ import annotations

from typing import Literal, get_args

from pydantic import Field, ValidationError

from watos.errors import WatosError, describe_validation_error
from watos.files import StrictModel, parse_yaml_mapping, read_file
from watos.hardware.stack import Features, Software, load_stack
from watos.hardware.target import Target
from watos.ir import Graph
from watos.ir.queries import dropless_experts, expert_params, routed_top_k
from watos.network.placement import Placement

RecomputePolicy = Literal["none", "selective", "full"]
RECOMPUTE_POLICIES: tuple[RecomputePolicy, ...] = get_args(RecomputePolicy)
"""Recomputation policies (Korthikanti et al. 2022): keep every saved tensor; recompute the attention core;
keep only each block's input and re-run its forward."""
PipelineSchedule = Literal["1f1b", "gpipe", "interleaved"]
TrainingDtype = Literal["bf16", "fp16", "fp8"]
"""What a step trains in: 16-bit weights and activations, or ``fp8``: 16-bit (bf16) weights, activations,
attention and norms with FP8 GEMMs (the stack's recipe)."""


def traced_dtype(dtype: str) -> str:
    """The dtype a model is traced in for a training dtype (FP8 runs keep bf16 tensors: only the GEMMs cast)."""
    return "bf16" if dtype == "fp8" else dtype


def software_of(plan: "Plan", target: Target) -> Software:
    """The software a plan runs under on a target: its stack (or the target's) with the plan's features."""
    return load_stack(plan.stack or target.stack_name).resolve(plan.features)


class Borrow(StrictModel):
    """Cross-die memory (WATOS Sender/Helper): every die of stage ``sender`` keeps ``gb`` of its
    checkpoints in the DRAM of its counterpart die of stage ``helper``, over the die-to-die links."""

    sender: int = Field(ge=0)
    helper: int = Field(ge=0)
    gb: float = Field(gt=0)


class Routing(StrictModel):
    """The routing model of MoE layers, which fake tensors cannot trace (the token split is data dependent).

    Balanced top-k: every token picks k experts and, on average, every expert-parallel rank receives an
    equal share of the routed tokens. ``skew``: the busiest EP rank receives (1 + skew) times that mean
    (0: perfectly balanced, as auxiliary-loss-free or loss-balanced training approaches). ``capacity_factor``
    (GShard): each rank accepts at most that multiple of the mean and drops the rest; null: dropless. The
    busiest rank, which every rank waits for in the all-to-all, carries ``load`` times the mean. A model whose
    graph routes into static capacity buffers (GShard's einsum dispatch) already carries its padding and is
    not scaled again.
    """

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


class StageLayers(StrictModel):
    """Blocks on the first and the last pipeline stage; the others share the rest evenly (Megatron-Core's
    ``num_layers_in_first_pipeline_stage`` / ``..._last_...``: room for the embedding and the head)."""

    first: int = Field(ge=0)
    last: int = Field(ge=0)


class Plan(StrictModel):
    """Parallel degrees and schedule knobs (Megatron-LM vocabulary).

    ``recompute``: ``none``; ``selective`` (the attention core, Korthikanti et al. 2022); ``full`` (every
    block's forward, keeping only its input); or a list with one of these per pipeline stage.
    ``interleave`` is the number of model chunks per pipeline stage (1: plain 1F1B). ``zero``: 0 none,
    1 optimizer states, 2 + gradients, 3 + parameters sharded over data parallelism. ``strategy:
    weight-streaming`` keeps weights off-device (Cerebras). ``placement`` puts ranks on a mesh's dies
    (:mod:`watos.network.placement`; ``seed`` drives ``optimized``); ``borrow`` lists Sender/Helper checkpoint
    storage. ``fault_policy`` says what a plan does on a target with dead dies (its fault map):
    ``robust`` places ranks on working dies only; ``non_robust`` keeps the fault-free placement and moves a
    dead die's ranks to the nearest working die, which then carries both (:mod:`watos.network.placement`).
    ``ep`` splits each MoE layer's experts over that many of the ``dp`` ranks (expert
    parallelism; dense weights stay data parallel), routed under ``routing`` (:class:`Routing`).
    ``shard_group``: ZeRO shards within groups of that many data-parallel ranks and replicates across
    them (hybrid sharding, HSDP); None shards over all of them. ``stage_layers``: blocks on the first and
    last pipeline stages when they differ from an even split (``{first: 3, last: 2}``).

    ``stack`` names the software stack (:mod:`watos.hardware.stack`; None: the target's own) and
    ``features`` what this run turns on or off in it (overlaps, FP8 recipe, compilation).

    Gradients are accumulated over micro-batches in a main-gradient buffer of ``grad_reduce_dtype``
    (None: the stack's — fp32 for Megatron-LM's ``accumulate_allreduce_grads_in_fp32``, which bf16 training
    forces; bf16 for FSDP's all-bf16 mixed-precision policies), inside the weight-gradient GEMM (``fused``,
    Megatron's gradient-accumulation fusion) or by an add after every backward (``unfused``, its local
    DDP of 2021), and reduced after the backward, or overlapped with it when the stack does
    (``features.overlap_grad_reduce``).
    """

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
    recompute: RecomputePolicy | tuple[RecomputePolicy, ...] = "none"  # one policy, or one per pipeline stage
    sequence_parallel: bool = False
    interleave: int = Field(default=1, gt=0)
    schedule: PipelineSchedule = "1f1b"
    placement: Placement = "row_major"
    borrow: tuple[Borrow, ...] = ()
    seed: int = 0
    fault_policy: Literal["robust", "non_robust"] = "robust"
    shard_group: int | None = Field(default=None, gt=0)
    stage_layers: StageLayers | None = None
    stack: str | None = None
    features: Features = Features()
    grad_reduce_dtype: Literal["fp32", "bf16", "fp16"] | None = None
    grad_accumulation: Literal["unfused", "fused"] = "fused"

    @property
    def devices(self) -> int:
        return self.tp * self.pp * self.dp * self.cp

    @property
    def sequences_per_step(self) -> int:
        return self.global_batch or self.dp * self.micro_batch

    @property
    def pipeline_kind(self) -> PipelineSchedule:
        """The pipeline schedule run: interleaved 1F1B whenever stages hold several model chunks."""
        return "interleaved" if self.interleave > 1 else self.schedule

    @property
    def data_parallel_ep(self) -> int:
        """The experts' split over the data-parallel ranks: ``ep``, or, when ``ep`` exceeds ``dp`` (Megatron-Core
        folds the TP and CP ranks into expert parallelism, expert tensor parallelism 1), ``ep / (tp·cp)``:
        every rank then holds 1/ep of the experts and computes 1/(tp·cp) of its tokens' expert work, which is
        costed as each of tp·cp ranks computing a slice of each of ep/(tp·cp) ranks' experts — the same work,
        weights and all-to-all bytes per rank."""
        return self.ep if self.ep <= self.dp else self.ep // (self.tp * self.cp)

    @property
    def micro_batches(self) -> int:
        """Micro-batches per pipeline per step (m)."""
        return self.sequences_per_step // (self.dp * self.micro_batch)


def head_split_error(tp: int, heads: int, kv_heads: int) -> str | None:
    """Why ``tp`` cannot split the attention heads (``heads`` query heads over ``kv_heads`` key/value heads,
    0 for a model without attention: nothing to split), or None. Megatron splits the query heads evenly over
    the TP ranks, and the key/value heads too, or replicates each over ``tp / kv_heads`` ranks."""
    if tp == 1:
        return None
    if not heads:
        return f"tp={tp} needs attention heads to split, and the traced model has no attention"
    if heads % tp:
        return f"tp={tp} does not divide the {heads} attention heads"
    if kv_heads % tp and tp % kv_heads:
        return f"tp={tp} and the {kv_heads} key/value heads do not divide each other"
    return None


def check_plan(plan: Plan, *, heads: int, kv_heads: int, layers: int, seq_len: int, experts: int = 0,
               devices: int | None = None) -> None:
    """One-line errors for a plan that does not divide the model or the devices: the limits are those of the
    traced graph (:func:`watos.ir.queries.model_limits`; ``experts``: per MoE layer, 0 for a dense model)."""
    if devices is not None and plan.devices != devices:
        raise WatosError(f"plan: tp·pp·dp·cp = {plan.tp}·{plan.pp}·{plan.dp}·{plan.cp} = {plan.devices}, "
                         f"but the target has {devices} devices")
    if (reason := head_split_error(plan.tp, heads, kv_heads)) is not None:
        raise WatosError(f"plan: {reason}")
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
    folded = plan.ep > plan.dp and not plan.ep % (plan.tp * plan.cp) and not plan.dp % (plan.ep // (plan.tp * plan.cp))
    if (plan.dp % plan.ep and not folded) or (experts and experts % plan.ep):
        raise WatosError(f"plan: ep={plan.ep} must divide dp={plan.dp} (or be dp's divisor times tp·cp = "
                         f"{plan.tp * plan.cp}) and the {experts} experts per layer")
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
    if plan.shard_group and (plan.dp * plan.cp) % plan.shard_group:
        raise WatosError(f"plan: shard_group={plan.shard_group} does not divide dp·cp = {plan.dp * plan.cp}")
    if plan.stage_layers and plan.interleave > 1:
        raise WatosError("plan: stage_layers needs one model chunk per stage (interleave = 1)")
    if plan.stage_layers:
        first, last = plan.stage_layers.first, plan.stage_layers.last
        middle = layers - first - last
        if plan.pp < 2 or middle < 0 or (plan.pp > 2 and (middle % (plan.pp - 2) or not middle)) \
                or (plan.pp == 2 and middle):
            raise WatosError(f"plan: stage_layers first={first}, last={last} do not split the {layers} blocks "
                             f"over pp={plan.pp} stages (the middle stages share the rest evenly)")


def routing_note(graph: Graph, routing: Routing) -> str | None:
    """The routing model a report states for an MoE model (None for a dense model): experts per layer and
    top-k from the graph (the top-k over expert scores), the busiest rank from ``routing`` for a dropless
    model (grouped expert matmuls); a model routing into static capacity buffers carries them in its graph."""
    weights = expert_params(graph)
    if not weights:
        return None
    experts = max(param.outputs[0].shape[0] for param in weights.values())
    k = routed_top_k(graph, experts)
    if dropless_experts(graph, weights):
        return routing.describe(experts, k)
    return (f"top-{k} of {experts} experts into static capacity buffers traced in the model's graph (every EP "
            "rank computes its experts' full buffers; tokens over capacity are dropped; no skew applied)")


def parallel_groups(tp: int, cp: int, dp: int, pp: int, ep: int = 1,
                    shard_group: int | None = None) -> dict[str, list[list[int]]]:
    """Device ranks of every TP, CP, DP and PP group in Megatron's order (rank = t + tp·(c + cp·(d + dp·p)):
    TP fastest, then CP, DP, PP); for ``ep`` > 1 the EP groups (DP ranks r·ep … r·ep + ep − 1) and the
    expert-data-parallel groups across them; for a ``shard_group`` the ZeRO shard groups (``dps``: runs of
    that many consecutive DP·CP ranks) and the replica groups across them (``dpr``)."""
    def rank(t: int, c: int, d: int, p: int) -> int:
        return t + tp * (c + cp * (d + dp * p))

    hybrid = {}
    if shard_group:
        replicas = [[rank(t, c, d, p) for d in range(dp) for c in range(cp)] for p in range(pp) for t in range(tp)]
        hybrid = {"dps": [g[i:i + shard_group] for g in replicas for i in range(0, len(g), shard_group)],
                  "dpr": [g[i::shard_group] for g in replicas for i in range(shard_group)]}

    expert = {} if ep == 1 else {
        "ep": [[rank(t, c, r * ep + e, p) for e in range(ep)]
               for p in range(pp) for r in range(dp // ep) for c in range(cp) for t in range(tp)],
        "edp": [[rank(t, c, r * ep + e, p) for r in range(dp // ep) for c in range(cp)]
                for p in range(pp) for e in range(ep) for t in range(tp)],
    }
    return {**expert, **hybrid,
            "tp": [[rank(t, c, d, p) for t in range(tp)] for p in range(pp) for d in range(dp) for c in range(cp)],
            "cp": [[rank(t, c, d, p) for c in range(cp)] for p in range(pp) for d in range(dp) for t in range(tp)],
            "dp": [[rank(t, c, d, p) for d in range(dp) for c in range(cp)] for p in range(pp) for t in range(tp)],
            "pp": [[rank(t, c, d, p) for p in range(pp)] for d in range(dp) for c in range(cp) for t in range(tp)]}


def load_plan(path: str) -> Plan:
    """A plan from a YAML file; errors name the file and field."""
    return make_plan(parse_yaml_mapping(read_file(path, "plan file"), path, "a plan"), path)


def make_plan(fields: dict, where: str = "plan") -> Plan:
    """Validate plan fields; errors name the field."""
    try:
        return Plan(**fields)
    except ValidationError as exc:
        raise WatosError(f"{where}: {describe_validation_error(exc)}") from None
