"""What is being planned: a traced model, a target and a batch (:class:`Problem`), and how one plan of it
is costed (:func:`evaluate`) or refused (:func:`plan_error`)."""
from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from watos.cost.memory import model_state_bytes
from watos.errors import WatosError
from watos.frontend.sources import ModelSource, load_model
from watos.hardware.stack import Features, Software, load_stack
from watos.hardware.target import Mesh2D, Target
from watos.ir import Graph
from watos.ir.analyses import StepMetrics
from watos.ir.queries import expert_params, model_limits
from watos.pipelines import attention_for, cost_plan, lower, trace
from watos.plan import RECOMPUTE_POLICIES, Plan, Routing, check_plan

MICRO_BATCH_SIZES = (1, 2, 4)
INTERLEAVES = (1, 2)


@dataclass(frozen=True)
class Problem:
    """A traced model (per micro-batch size), the target, its devices and the global batch, the software
    stack (None: the target's) and the features every plan runs with, and the choices a search may make:
    micro-batch sizes, interleaving degrees, recompute policies, the MoE routing model every plan is
    costed under."""

    traced: Callable[[int], Graph]  # micro-batch size → traced graph (cached by the caller)
    target: Target
    devices: int
    global_batch: int
    dtype: str = "bf16"
    micro_batch_sizes: tuple[int, ...] = MICRO_BATCH_SIZES
    interleaves: tuple[int, ...] = INTERLEAVES  # model chunks per stage
    recompute_policies: tuple[str, ...] = RECOMPUTE_POLICIES  # those GCMR may choose
    routing: Routing = Routing()
    stack: str | None = None
    features: Features = Features()

    @property
    def software(self) -> Software:
        """The stack every plan of this problem runs under, resolved."""
        return load_stack(self.stack or self.target.stack_name).resolve(self.features)

    def plan(self, **fields) -> Plan:
        """A plan of this problem: its global batch, routing model, stack and features, and ``fields``."""
        return Plan(global_batch=self.global_batch, routing=self.routing, stack=self.stack, features=self.features,
                    **fields)

    def lowered(self, micro_batch: int) -> Graph:
        """The traced graph at ``micro_batch`` lowered for the stack's fusion (cached)."""
        software = self.software
        return _lowered(self.traced, micro_batch, software.fusion, software.fused_loss)

    def on(self, target: Target, devices: int | None = None) -> Problem:
        """The same model and batch on another target."""
        return dataclasses.replace(self, target=target, devices=devices or self.devices)

    @property
    def capacity(self) -> float:
        """Memory of one device, bytes."""
        return self.target.device.memory_capacity_bytes

    @functools.cached_property
    def limits(self) -> dict[str, int]:
        """What a plan must divide (:func:`~watos.ir.queries.model_limits`)."""
        return model_limits(self.traced(1))

    @functools.cached_property
    def info(self) -> dict[str, int]:
        """:attr:`limits`, the parameter count and the expert parameters among them."""
        graph = self.traced(1)
        return {**self.limits, "parameters": graph.model.parameters,
                "expert_parameters": sum(op.outputs[0].numel * graph.weight(op) for op in expert_params(graph).values())}

    def model_state_bytes(self, tp: int, pp: int, dp: int, zero: int, ep: int = 1) -> float:
        """Model states per device of an average stage (:func:`watos.cost.memory.model_state_bytes`)."""
        return model_state_bytes(self.info["parameters"], self.info["expert_parameters"], tp=tp, pp=pp, dp=dp,
                                 zero=zero, ep=ep)


@functools.lru_cache(maxsize=32)
def _lowered(traced: Callable[[int], Graph], micro_batch: int, fusion: str, fused_loss: bool) -> Graph:
    return lower(traced(micro_batch), fusion, fused_loss=fused_loss)


def make_problem(source: Any, target: Target, *, seq: int, global_batch: int | None = None,
                 dtype: str = "bf16", devices: int | None = None, routing: Routing | None = None,
                 stack: str | None = None, features: Features | None = None) -> Problem:
    """A problem for a model source (anything :func:`watos.load_model` takes) on all of a target's devices
    (a mesh's dies; ``devices`` for a switched target) under a stack (default: the target's). Default batch:
    16 sequences per device."""
    if devices is None:
        if not isinstance(target.topology, Mesh2D):
            raise WatosError(f"target {target.name} is a cluster of GPU nodes: give the number of GPUs (--devices N)")
        devices = target.dies
    source = load_model(source) if not isinstance(source, ModelSource) else source
    attention = attention_for(load_stack(stack or target.stack_name).resolve(features).fusion)

    @functools.cache
    def traced(micro_batch: int) -> Graph:
        return trace(source, seq_len=seq, micro_batch=micro_batch, dtype=dtype, attention=attention)

    return Problem(traced, target, devices, global_batch or 16 * devices, dtype, routing=routing or Routing(),
                   stack=stack, features=features or Features())


_CHECKED = "costing_checked"  # a lowered graph the costing pipeline has run on with every check


def evaluate(problem: Problem, plan: Plan) -> StepMetrics:
    """The cost of one plan (``analyses["cost"]`` of the costing pipeline). The search runs the pipeline
    thousands of times on one lowered graph, so it checks the IR only for the first plan of each graph."""
    graph = problem.lowered(plan.micro_batch)
    verify = _CHECKED not in graph.properties
    graph.properties.add(_CHECKED)
    return cost_plan(graph, problem.target, plan, dtype=problem.dtype, verify=verify).analyses["cost"]


def try_evaluate(problem: Problem, plan: Plan) -> StepMetrics | str:
    """:func:`evaluate`, or the one-line reason a plan cannot be costed (groups that cannot be placed
    whole on a wafer)."""
    try:
        return evaluate(problem, plan)
    except WatosError as exc:
        return str(exc)


def plan_error(problem: Problem, plan: Plan) -> str | None:
    """Why the plan does not divide the model or the devices (:func:`~watos.plan.check_plan`), or None."""
    try:
        check_plan(plan, **problem.limits, devices=problem.devices)
    except WatosError as exc:
        return str(exc)
    return None
