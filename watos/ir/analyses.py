"""Typed analyses: what a pass writes into ``graph.analyses``, one record per key, units documented once.

The key a pass ``provides`` is the analysis it writes: a pass providing ``"pipeline"`` writes
``graph.analyses["pipeline"]``, a :class:`PipelineLayout`. Keys registered here (or by a user with
:func:`register_analysis`) are checked after the pass that promises them (:class:`~watos.ir.instruments.Verifier`);
a provided name that is not registered is a plain property of the ops (``canonical``, ``tp_roles``).

Records are frozen: a later pass replaces an analysis, never edits one that a cloned graph may share.
Bytes are bytes per device and micro-batch, seconds are seconds per micro-batch, unless a field says
otherwise. :func:`to_plain` turns a record into JSON-able dicts and lists (the IR dumps).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, NamedTuple, TypedDict, is_typeddict

from watos.errors import WatosError

_ANALYSES: dict[str, type] = {}


def register_analysis(key: str, record: type) -> None:
    """Declare that ``graph.analyses[key]`` holds a ``record`` (a dataclass, or a TypedDict whose required
    keys it must carry)."""
    if _ANALYSES.get(key, record) is not record:
        raise WatosError(f"analysis {key!r} is already registered as {_ANALYSES[key].__name__}")
    _ANALYSES[key] = record


def analysis(key: str):
    """Class decorator: :func:`register_analysis` under ``key``."""

    def decorate(cls: type) -> type:
        register_analysis(key, cls)
        return cls

    return decorate


def analysis_type(key: str) -> type | None:
    """The record registered for ``key`` (None: ``key`` names a plain property)."""
    return _ANALYSES.get(key)


def mismatch(key: str, value: Any) -> str | None:
    """Why ``value`` is not the record registered for ``key`` (None when it is, or when none is registered)."""
    record = _ANALYSES.get(key)
    if record is None:
        return None
    if value is None:
        return f"it wrote no analyses[{key!r}] ({record.__name__})"
    if is_typeddict(record):
        missing = sorted(record.__required_keys__ - value.keys()) if isinstance(value, dict) else None
        if missing is None or missing:
            return f"analyses[{key!r}] is not a {record.__name__}" + (f" (missing {missing})" if missing else "")
        return None
    return None if isinstance(value, record) else \
        f"analyses[{key!r}] is a {type(value).__name__}, not a {record.__name__}"


def to_plain(value: Any) -> Any:
    """A record (or anything holding records) as JSON-able dicts, lists and scalars."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_plain(v) for v in value]
    return value


class SavedTensor(NamedTuple):
    """A forward tensor the backward reads: its producer op and output index, bytes, and owning block
    (None: model level)."""

    op: int
    output: int
    nbytes: int
    block: int | None


@dataclass(frozen=True)
class ActivationAccount:
    """Saved bytes per traced block (keyed by block index as a string), at model level, and over the whole
    model with block multiplicities (bytes per micro-batch, whole model, no parallelism)."""

    per_block_bytes: dict[str, int]
    model_level_bytes: int
    total_bytes: int


@analysis("saved_activations")
@dataclass(frozen=True)
class SavedActivations:
    """What the backward keeps from the forward, in two accountings (``as_traced``, ``fused``; ``used`` names
    the one the cost model uses), and the tensors of each."""

    as_traced: ActivationAccount
    fused: ActivationAccount
    used: str
    tensors: dict[str, tuple[SavedTensor, ...]]

    def account(self, mode: str | None = None) -> ActivationAccount:
        """The accounting ``mode`` (default: the one used)."""
        return getattr(self, mode or self.used)


@analysis("fusion")
@dataclass(frozen=True)
class Fusion:
    """The target's kernel fusion level and the tensors saved for the backward as those kernels run."""

    level: str
    saved: tuple[SavedTensor, ...]


@analysis("sharding")
@dataclass(frozen=True)
class Sharding:
    """Device ranks of every parallel group (``tp``, ``cp``, ``dp``, ``pp``; ``ep`` and ``edp`` with expert
    parallelism), and the parameters split over TP and over EP."""

    groups: dict[str, list[list[int]]]
    split_params: tuple[str, ...]
    expert_params: tuple[str, ...]


@analysis("pipeline")
@dataclass(frozen=True)
class PipelineLayout:
    """Pipeline stages: how many blocks of each block group (keyed by representative) every stage holds,
    model chunks per stage, and the bytes each TP rank sends across a stage boundary per micro-batch."""

    pp: int
    interleave: int
    stage_blocks: tuple[dict[str, int], ...]
    p2p_bytes: int


@analysis("recompute")
@dataclass(frozen=True)
class RecomputePlan:
    """The recompute policy of each stage, and the activation bytes kept per device and micro-batch under
    each policy: per block group representative, and for the ops before (``pre``) and after (``post``)
    the blocks."""

    policy: tuple[str, ...]
    block_bytes: dict[str, dict[str, int]]
    pre_bytes: int
    post_bytes: int

    def segment_bytes(self, where: str) -> int:
        """Bytes kept by the ``pre`` or ``post`` segment (whatever the policy)."""
        return self.pre_bytes if where == "pre" else self.post_bytes


@analysis("placement")
@dataclass(frozen=True)
class PlacementMap:
    """The die of every device rank (row-major die index; several wafers follow each other), the placement
    strategy that chose it, and the mean hops of a pipeline send. On a faulty wafer, ``crowding``: the most
    ranks one die runs (it holds all their memory), and ``slowdown``: the most work one die carries per unit
    of its working compute (every kernel of a synchronous step waits for it); 1 on a whole wafer."""

    placement: str
    dies: tuple[int, ...]
    pipeline_hops_mean: float
    crowding: int = 1
    slowdown: float = 1.0


@analysis("device_cost")
@dataclass(frozen=True)
class DeviceTimes:
    """Totals per place (a block group representative, ``pre`` or ``post``) and bucket: seconds of ``fwd``,
    ``bwd``, ``optimizer``, ``<group>_comm_fwd|bwd``, ``step_grad_comm``, ``step_param_comm`` and
    ``recompute:<policy>``; FLOPs
    (``flops``, ``device_flops``, ``recompute_flops:<policy>``, ``recompute_device_flops:<policy>``); and
    traffic (``dram_bytes``, ``network_bytes``, and their ``step_`` once-per-step parts)."""

    parts: dict[str, dict[str, float]]

    def get(self, where: str, key: str) -> float:
        """One total (0 where the place or bucket has none)."""
        return self.parts.get(where, {}).get(key, 0.0)

    def over(self, segments: list[tuple[str, int]], key: str) -> float:
        """A total over a stage's segments, each counted as many times as the stage runs it."""
        return sum(self.get(where, key) * count for where, count in segments)


class StageMemory(TypedDict, total=False):
    """Bytes per device of one pipeline stage."""

    weights_bytes: float
    gradients_bytes: float
    optimizer_bytes: float
    activations_bytes: float
    workspace_bytes: float
    framework_bytes: float
    parameters: float
    borrowed_out_bytes: float
    borrowed_in_bytes: float
    total_bytes: float


class StageMetrics(TypedDict, total=False):
    """One pipeline stage of a costed step: seconds per micro-batch and once per step, memory, and what each
    recompute policy would cost it (``options``: GCMR chooses among them). ``parts_s``: one micro-batch's
    seconds part by part, adding up to ``time_per_microbatch_s`` (3D: forward, backward, recompute, exposed
    communication by kind and phase, contention, gradient accumulation, waiting for borrowed checkpoints;
    weight streaming: compute, recompute, streaming not hidden by compute)."""

    stage: int
    recompute: str
    time_per_microbatch_s: float
    forward_s: float
    borrow_transfer_s: float
    parts_s: dict[str, float]
    compute_per_microbatch_s: float
    dp_comm_s: float
    dp_exposed_s: float
    optimizer_s: float
    memory: StageMemory
    options: dict[str, dict[str, float]]


class StepMetrics(TypedDict):
    """The cost of one training step, the same keys for every strategy (:func:`watos.cost.metrics.step_metrics`):
    seconds, tokens/s, FLOPs per step, utilisation, bytes per device, traffic per step over all devices, a
    breakdown of the step in seconds, and per-stage figures."""

    step_time_s: float
    tokens_per_s: float
    tokens_per_s_per_device: float
    model_flops_per_step: float
    executed_flops_per_step: float
    mfu: float
    hfu: float
    peak_memory_bytes_per_device: float
    memory_capacity_bytes_per_device: float
    fits: bool
    dram_bytes_per_step: float
    network_bytes_per_step: float
    breakdown_s: dict[str, float]
    stages: list[StageMetrics]


register_analysis("cost", StepMetrics)
