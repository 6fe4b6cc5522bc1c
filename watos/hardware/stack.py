"""Software stacks: what a training framework runs on a target, apart from the silicon and the wires.

A measured step time is a property of the hardware *and* of the software that ran on it: an A100 runs
FlashAttention under one framework and not under another; Megatron-Core overlaps tensor-parallel
communication with its GEMMs, Megatron-LM 2021 does not; FSDP prefetches the next layer's all-gather. A
stack (``hw_targets/stacks/*.yaml``) says

* ``kernels``: which exist (flash attention, fused norms and activations, FP8 GEMMs and their recipes);
* ``overlap``: what the framework overlaps with compute (TP collectives with the GEMMs they feed, the
  data-parallel gradient reduction with the backward, the distributed optimizer's parameter all-gather
  with the next forward, FSDP's per-layer all-gathers with the layers before, pipeline sends), and
  ``contention``: how much the compute that overlaps communication slows (the collectives' kernels take
  SMs and memory bandwidth);
* ``overheads``: per kernel (host dispatch and launch, eager or captured in CUDA graphs / torch.compile)
  and per step;
* ``memory``: what the framework holds beyond the model's tensors (context, communication buffers,
  workspaces, the caching allocator's slack).

A run may state its own settings (:class:`Features`, a plan's ``features`` or a validation case's
``stack`` fields); a feature it leaves out takes the stack's default. :meth:`Stack.resolve` gives the
:class:`Software` the costing passes read. Parameters a stack file calibrates on public runs say so in it.
"""
from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError

from watos.errors import WatosError, describe_validation_error
from watos.files import StrictModel, parse_yaml_mapping, read_file

NonNegative = Annotated[float, Field(ge=0)]
Fraction = Annotated[float, Field(ge=0, le=1)]
Attention = Literal["flash", "unfused"]
Fp8Recipe = Literal["delayed", "current", "blockwise", "mxfp8", "tensorwise"]
MoeDispatcher = Literal["alltoall", "allgather", "flex", "deepep", "hybridep"]
# What ``selective`` recompute re-runs (Megatron-Core's ``recompute_modules``): the attention core, the MLA
# up-projections, the experts' (or the dense MLP's) activation, the norms, the dense MLP, the whole MoE layer,
# its shared experts.
RecomputeModule = Literal["core_attn", "mla_up_proj", "moe_act", "mlp_act", "layernorm", "mlp", "moe",
                          "shared_experts"]


class Fp8(StrictModel):
    """An FP8 training recipe: a linear layer's GEMMs run in FP8 on inputs cast (and scaled) from 16 bits;
    attention, norms and the optimizer stay in 16 bits. The forward casts its activation, the data-gradient
    GEMM the incoming gradient, and the weight-gradient GEMM reuses both FP8 copies; ``weights_cached``: the
    FP8 weight is cast once per step and kept across micro-batches (Transformer Engine), else cast before
    every GEMM that reads it (torchao). ``cast_bytes`` counts the traffic of a cast per byte of its 16-bit
    input: reading 2 bytes and writing 1 is 1.5, a separate pass that finds the scale (current, tensorwise)
    adds 1."""

    cast_bytes: NonNegative
    weights_cached: bool = True


class Kernels(StrictModel):
    """The kernels a stack runs: attention (``flash``: one fused kernel that keeps no s×s tensor;
    ``unfused``: matmul, softmax and dropout kernels), fused elementwise chains and norms (TE, Megatron's
    fused kernels, torch.compile), a fused cross-entropy that keeps no fp32 logits, and the FP8 recipes it has
    (the first is its default)."""

    attention: Attention
    fused_elementwise: bool = True
    fused_loss: bool = False
    fp8: dict[Fp8Recipe, Fp8] = Field(default_factory=dict)


class Overlap(StrictModel):
    """What overlaps compute by default (a run's :class:`Features` may turn each on or off), and at what
    cost. ``tp_comm``: the fraction of the TP collectives that the userbuffers/async-TP GEMMs hide, when
    enabled; ``fsdp_prefetch``: how many layers ahead FSDP issues its all-gathers (0: none, every gather is
    exposed); ``fsdp_reshard_with_pp``: whether FSDP frees gathered parameters after every micro-batch when the
    model is also pipelined (torchtitan keeps them, and the unsharded gradients, for the whole step, gathering
    and reducing once per step); ``contention``: the overlapped compute's slowdown, per second of communication
    hidden under it."""

    tp_comm: bool = False
    tp_comm_hidden: Fraction = 0.0
    grad_reduce: bool = False
    param_gather: bool = False
    p2p: bool = False
    fsdp_prefetch: int = Field(1, ge=0)
    fsdp_reshard_with_pp: bool = True
    contention: Fraction = 0.0


class Dispatcher(StrictModel):
    """An MoE token dispatcher. ``dedup``: a token crosses the network once per device, and once per node, it
    goes to, then is copied to its experts there (DeepEP, HybridEP: RDMA to one GPU of each node, NVLink
    forwarding inside it); without, once per expert it is routed to (an all-to-all of the permuted tokens)."""

    dedup: bool = False


class Overheads(StrictModel):
    """Host-side time per kernel (dispatch and launch) when kernels run eagerly, and when a step is
    captured (CUDA graphs) or compiled (torch.compile fuses the elementwise chains and launches fewer,
    larger kernels); and a fixed time per step (data loading, logging, the optimizer's host work)."""

    kernel_us: NonNegative
    captured_kernel_us: NonNegative
    step_s: NonNegative = 0.0


class Memory(StrictModel):
    """Bytes a framework holds on every device beyond the model's tensors: a fixed part (CUDA context,
    NCCL buffers, cuBLAS workspaces) and the caching allocator's slack over the live peak. ``fp32_shards``:
    fully sharded (ZeRO 3) parameters are kept as fp32 shards, the optimizer's master copy, and cast to 16
    bits only when gathered (PyTorch FSDP's mixed precision), so no 16-bit shard is held beside them."""

    reserved_gb: NonNegative = 0.0
    allocator_slack: Fraction = 0.0
    fp32_shards: bool = False


class Stack(StrictModel):
    """A software stack (see module docstring); ``frameworks`` are the names a validation case's
    ``stack.framework`` gives for it."""

    name: str
    description: str
    frameworks: list[str] = Field(default_factory=list)
    kernels: Kernels
    overlap: Overlap = Overlap()
    overheads: Overheads
    memory: Memory = Memory()
    grad_reduce_dtype: Literal["fp32", "bf16"] = Field(
        "fp32", description="the dtype gradients are accumulated and reduced in unless a plan says")
    moe_dispatchers: dict[MoeDispatcher, Dispatcher] = Field(
        default_factory=lambda: {"alltoall": Dispatcher()}, description="the MoE dispatchers it has (first: default)")
    recompute_modules: list[RecomputeModule] = Field(
        default_factory=lambda: ["core_attn"], description="what selective recompute re-runs unless a run says")
    remat_policies: dict[str, list[RecomputeModule]] = Field(
        default_factory=dict, description="what selective recompute re-runs under each remat policy the framework "
                                          "names (MaxText's remat_policy), when a run names one")
    tp_shards_activations: bool = Field(
        False, description="tensor parallelism keeps 1/tp of the activations between layers, as sequence "
                           "parallelism does (MaxText shards their embedding axis over the tensor axis)")

    def resolve(self, features: "Features | None" = None) -> "Software":
        """The concrete settings of a run of this stack with ``features`` (None: the stack's defaults)."""
        f = features or Features()
        recipe = f.fp8_recipe or next(iter(self.kernels.fp8), None)
        if f.fp8_recipe and f.fp8_recipe not in self.kernels.fp8:
            raise WatosError(f"stack {self.name}: no FP8 recipe {f.fp8_recipe!r} "
                             f"(it has {', '.join(self.kernels.fp8) or 'none'})")
        if f.remat_policy is not None and f.remat_policy not in self.remat_policies:
            raise WatosError(f"stack {self.name}: no remat policy {f.remat_policy!r} "
                             f"(it has {', '.join(self.remat_policies) or 'none'})")
        modules = f.recompute_modules or self.remat_policies.get(f.remat_policy or "") or self.recompute_modules
        dispatcher = f.moe_dispatcher or next(iter(self.moe_dispatchers))
        if dispatcher not in self.moe_dispatchers:
            raise WatosError(f"stack {self.name}: no MoE dispatcher {dispatcher!r} "
                             f"(it has {', '.join(self.moe_dispatchers)})")
        attention = f.attention or self.kernels.attention
        compiled = bool(f.torch_compile or f.cuda_graphs)
        tp_overlap = self.overlap.tp_comm if f.tp_comm_overlap is None and f.async_tp is None \
            else bool(f.tp_comm_overlap or f.async_tp)
        return Software(
            stack=self.name,
            fusion="flash" if attention == "flash" else ("basic" if self.kernels.fused_elementwise or compiled
                                                          else "none"),
            fused_loss=self.kernels.fused_loss,
            kernel_overhead_s=(self.overheads.captured_kernel_us if compiled else self.overheads.kernel_us) * 1e-6,
            step_overhead_s=self.overheads.step_s,
            tp_comm_hidden=self.overlap.tp_comm_hidden if tp_overlap else 0.0,
            grad_reduce_overlap=self.overlap.grad_reduce if f.overlap_grad_reduce is None else f.overlap_grad_reduce,
            param_gather_overlap=self.overlap.param_gather if f.overlap_param_gather is None
            else f.overlap_param_gather,
            p2p_overlap=self.overlap.p2p if f.overlap_p2p is None else f.overlap_p2p,
            fsdp_prefetch=self.overlap.fsdp_prefetch, fsdp_reshard_with_pp=self.overlap.fsdp_reshard_with_pp,
            contention=self.overlap.contention,
            fp8_cast_bytes=self.kernels.fp8[recipe].cast_bytes if recipe else None,
            fp8_weights_cached=self.kernels.fp8[recipe].weights_cached if recipe else True,
            reserved_bytes=self.memory.reserved_gb * 1e9, grad_reduce_dtype=self.grad_reduce_dtype,
            allocator_slack=self.memory.allocator_slack, fp32_shards=self.memory.fp32_shards, ep_dedup=self.moe_dispatchers[dispatcher].dedup,
            recompute_modules=tuple(modules))


class Features(StrictModel):
    """What a run says it used, each overriding its stack's default (None: not stated, the default)."""

    attention: Attention | None = None
    tp_comm_overlap: bool | None = None
    async_tp: bool | None = None
    overlap_grad_reduce: bool | None = None
    overlap_param_gather: bool | None = None
    overlap_p2p: bool | None = None
    fp8_recipe: Fp8Recipe | None = None
    torch_compile: bool | None = None
    cuda_graphs: bool | None = None
    moe_dispatcher: MoeDispatcher | None = None
    recompute_modules: list[RecomputeModule] | None = None
    remat_policy: str | None = None


class Software(StrictModel):
    """A stack resolved for one run: the settings the lowering and costing passes read (seconds, bytes).
    ``fp8_cast_bytes`` is the FP8 recipe's cast traffic per byte of 16-bit GEMM input (None: no FP8)."""

    stack: str
    fusion: str
    fused_loss: bool
    kernel_overhead_s: float
    step_overhead_s: float
    tp_comm_hidden: float
    grad_reduce_overlap: bool
    param_gather_overlap: bool
    p2p_overlap: bool
    fsdp_prefetch: int
    fsdp_reshard_with_pp: bool
    contention: float
    fp8_cast_bytes: float | None
    fp8_weights_cached: bool
    reserved_bytes: float
    allocator_slack: float
    fp32_shards: bool
    grad_reduce_dtype: str
    ep_dedup: bool
    recompute_modules: tuple[str, ...]


@cache
def load_stack(spec: str | Path) -> Stack:
    """A shipped stack by name, or a YAML file by path; errors name the file and field (cached: a stack is
    resolved for every plan costed)."""
    path = Path(spec)
    if not path.suffix:
        text = _shipped_text(str(spec))
        if text is None:
            raise WatosError(f"unknown stack {spec!r}; shipped: {', '.join(shipped_stacks())}")
        where = f"hw_targets/stacks/{spec}.yaml"
    else:
        text, where = read_file(str(spec), "stack file"), str(spec)
    try:
        return Stack(**parse_yaml_mapping(text, where, "a stack"))
    except ValidationError as exc:
        raise WatosError(f"{where}: {describe_validation_error(exc)}") from None


def stack_data(name: str) -> dict:
    """The mapping a shipped stack's YAML holds, unvalidated (a calibration edits it before validating)."""
    text = _shipped_text(name)
    if text is None:
        raise WatosError(f"unknown stack {name!r}; shipped: {', '.join(shipped_stacks())}")
    return parse_yaml_mapping(text, f"hw_targets/stacks/{name}.yaml", "a stack")


def stack_for_framework(framework: str) -> Stack | None:
    """The shipped stack that names ``framework`` (a validation case's ``stack.framework``), or None."""
    return next((stack for stack in map(load_stack, shipped_stacks()) if framework in stack.frameworks), None)


def shipped_stacks() -> list[str]:
    """Names of the stacks in ``hw_targets/stacks/``."""
    return sorted(p.name.removesuffix(".yaml") for p in _stacks_dir().iterdir() if p.name.endswith(".yaml"))


def _stacks_dir():
    return resources.files("watos.hw_targets").joinpath("stacks")


@cache
def _shipped_text(name: str) -> str | None:
    path = _stacks_dir().joinpath(f"{name}.yaml")
    return path.read_text() if path.is_file() else None
