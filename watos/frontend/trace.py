"""Trace the joint forward + backward training step of a model on fake tensors and import it as IR.

The step is ``loss = model(inputs); grads = autograd.grad(loss, parameters)``, traced with
``make_fx`` under one ``FakeTensorMode``: no weight is allocated, every shape is static.

Attribution. Forward ops get their owning module from global module hooks that keep
``fx.traceback.current_meta["nn_module_stack"]`` up to date. Backward ops carry the autograd
sequence number of the forward op they differentiate (the mechanism AOTAutograd uses), so they inherit
its module; the few that carry none (gradient accumulation) inherit from the op that feeds them.

Replication. A model whose blocks repeat is traced with a prefix of its blocks that contains every
distinct block structure (:mod:`watos.frontend.blocks`); ``replicate_blocks=False`` traces every block;
a test checks that both give the same totals. The optimizer step is :mod:`watos.frontend.optimizer`, the
GPU kernels the trace substitutes :mod:`watos.frontend.kernels`, the import into IR
:mod:`watos.frontend.fx_import`.
"""
from __future__ import annotations

import traceback
from typing import Any

import torch
import torch.fx.traceback as fx_traceback
from torch._functorch._aot_autograd.logging_utils import (
    setup_stacktrace_preservation_hooks,
)
from torch._subclasses.fake_tensor import (
    DataDependentOutputException,
    DynamicOutputShapeException,
    FakeTensorMode,
)
from torch.fx.experimental.proxy_tensor import make_fx
from torch.nn.modules import module as nn_module
from torch.utils import _pytree as pytree

from watos.errors import WatosError
from watos.frontend.blocks import (
    block_signature,
    find_blocks,
    traced_prefix,
    truncated_blocks,
)
from watos.frontend.fx_import import PHASE_KEY, import_graph
from watos.frontend.kernels import FUSED_ATTENTION, GpuKernels, unpacked_sequences
from watos.frontend.optimizer import adamw_states, adamw_update
from watos.frontend.sources import ATTENTION_IMPLEMENTATIONS, ModelSource
from watos.ir import Graph, ModelInfo, OpKind, Phase, aten


def trace_step(source: ModelSource, *, seq_len: int, micro_batch: int, dtype: str = "bf16",
               attention: str = "sdpa", replicate_blocks: bool = True) -> Graph:
    """Trace one training step (forward, loss, parameter gradients) of ``source`` into WATOS IR."""
    if seq_len < 1 or micro_batch < 1:
        raise WatosError(f"seq_len and micro_batch must be positive, got {seq_len} and {micro_batch}")
    if dtype not in aten.DTYPE_ALIASES:
        raise WatosError(f"dtype must be one of {', '.join(aten.DTYPE_ALIASES)}, got {dtype!r}")
    if attention not in ATTENTION_IMPLEMENTATIONS:
        raise WatosError(f"attention must be one of {', '.join(ATTENTION_IMPLEMENTATIONS)}, got {attention!r}")
    torch_dtype = getattr(torch, aten.DTYPE_ALIASES[dtype])
    model = source.build(torch_dtype, attention)
    model.train()
    parameters = sum(p.numel() for p in model.parameters())
    prefix, blocks = find_blocks(model)
    signatures = [block_signature(b) for b in blocks]
    traced = traced_prefix(signatures) if replicate_blocks else len(blocks)
    with truncated_blocks(model, prefix, traced if prefix is not None and traced < len(blocks) else None):
        inputs = _example_inputs(source, model, micro_batch, seq_len, torch_dtype)
        module_types = {name: type(m).__name__ for name, m in model.named_modules()}
        gm, names = _trace_joint(model, inputs, source)
    info = ModelInfo(name=source.name, family=source.family, micro_batch=micro_batch, seq_len=seq_len,
                     dtype=dtype, parameters=parameters, num_blocks=len(blocks), block_prefix=prefix,
                     traced_blocks=list(range(traced)), block_signatures=signatures,
                     module_types=module_types,
                     config={**source.config, "attention": _attention_implementation(model, attention)})
    graph = import_graph(gm, names, info)
    _mark_windows(graph, model)
    return graph


def _mark_windows(graph: Graph, model: Any) -> None:
    """``attrs["window"]`` of every attention op whose module attends over a sliding window (Mistral, Gemma 2's
    local layers: the module's ``sliding_window``), which the traced mask tensor cannot say on fake tensors."""
    for op in graph.ops:
        if op.kind is OpKind.ATTENTION and op.module:
            window = getattr(model.get_submodule(op.module), "sliding_window", None)
            if isinstance(window, int) and not isinstance(window, bool) and window > 0:
                op.attrs["window"] = window


def _attention_implementation(model: Any, requested: str) -> str:
    config = getattr(model, "config", None)
    implementation = getattr(config, "_attn_implementation", None) or requested
    return "sdpa" if implementation == FUSED_ATTENTION else implementation



def _example_inputs(source: ModelSource, model: Any, micro_batch: int, seq_len: int, dtype: Any) -> Any:
    """Inputs as fake-able tensors on the meta device: ``(args, kwargs)``; floating inputs a factory's
    ``example_inputs`` made (fp32 by torch's default) are cast to the dtype the model is traced in."""
    if source.example_inputs is not None:
        try:
            made = source.example_inputs(micro_batch, seq_len)
        except Exception as exc:  # the user's code: one line, whatever it raised
            raise WatosError(f"{source.name}: example_inputs({micro_batch}, {seq_len}) raised "
                             f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}") from None
        made = pytree.tree_map(lambda x: x.to(dtype) if isinstance(x, torch.Tensor) and x.is_floating_point()
                               else x, made)
        if isinstance(made, dict):
            return (), made
        return (tuple(made) if isinstance(made, (tuple, list)) else (made,)), {}
    ids = torch.zeros((micro_batch, seq_len), dtype=torch.long, device="meta")
    if source.is_hf:
        return (ids,), {"labels": ids, "use_cache": False}
    if not any(isinstance(m, torch.nn.Embedding) for m in model.modules()):
        raise WatosError(f"{source.name}: no nn.Embedding takes token ids; define "
                         "example_inputs(micro_batch, seq_len) beside the factory")
    return (ids,), {}


def _loss_of(output: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """The scalar loss of a model output: ``.loss``, a scalar, or cross entropy of logits
    against ``labels`` (or the integer token ids the model was called with)."""
    labels = kwargs.get("labels")
    if labels is None and args and isinstance(args[0], torch.Tensor) and not args[0].is_floating_point():
        labels = args[0]
    loss = getattr(output, "loss", None)
    if loss is None and isinstance(output, dict):
        loss = output.get("loss")
    if loss is None and isinstance(output, (tuple, list)) and output:
        output = output[0]
    if loss is None and isinstance(output, torch.Tensor):
        if output.dim() == 0:
            loss = output
        elif output.dim() == 3 and labels is not None:
            loss = torch.nn.functional.cross_entropy(output.flatten(0, 1).float(), labels.flatten())
    if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
        raise WatosError("model output has no scalar loss: return a loss, a scalar, or logits of shape (batch, seq, vocab)")
    return loss


def _trace_joint(model: Any, inputs: Any, source: ModelSource) -> tuple[Any, list[tuple[str, str]]]:
    """make_fx of the joint step; returns the graph and (kind, name) of each placeholder."""
    param_names = [n for n, _ in model.named_parameters()]
    buffer_names = [n for n, _ in model.named_buffers()]
    args, kwargs = inputs
    flat_inputs, input_spec = pytree.tree_flatten((args, kwargs))
    tensor_slots = [i for i, x in enumerate(flat_inputs) if isinstance(x, torch.Tensor)]
    n_p, n_b, n_i = len(param_names), len(buffer_names), len(tensor_slots)
    state_names = [(n, state) for n, p in model.named_parameters() for state in adamw_states(p.dtype)]

    def step(*flat: Any) -> Any:
        params = dict(zip(param_names, flat[:n_p]))
        buffers = dict(zip(buffer_names, flat[n_p:n_p + n_b]))
        values = list(flat_inputs)
        for slot, tensor in zip(tensor_slots, flat[n_p + n_b:n_p + n_b + n_i]):
            values[slot] = tensor
        call_args, call_kwargs = pytree.tree_unflatten(values, input_spec)
        output = torch.func.functional_call(model, {**params, **buffers}, tuple(call_args), call_kwargs)
        loss = _loss_of(output, tuple(call_args), call_kwargs)
        setup_stacktrace_preservation_hooks([loss.grad_fn])
        with fx_traceback.annotate({PHASE_KEY: Phase.BACKWARD.value}):  # the seed gradient too
            grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
        states: dict[str, dict[str, Any]] = {}
        for (name, state), tensor in zip(state_names, flat[n_p + n_b + n_i:]):
            states.setdefault(name, {})[state] = tensor
        with fx_traceback.annotate({PHASE_KEY: Phase.OPTIMIZER.value}):
            updated = [adamw_update(name, params[name], grad, states[name])
                       for name, grad in zip(param_names, grads)]
        return loss, grads, updated

    module_names: dict[int, list[str]] = {}
    for path, module in model.named_modules(remove_duplicate=False):
        module_names.setdefault(id(module), []).append(path)
    mode = FakeTensorMode(allow_non_fake_inputs=False)
    with mode:
        fake = [torch.empty(p.shape, dtype=p.dtype, requires_grad=True) for p in model.parameters()]
        fake += [torch.empty(b.shape, dtype=b.dtype) for b in model.buffers()]
        fake += [torch.zeros(flat_inputs[i].shape, dtype=flat_inputs[i].dtype) for i in tensor_slots]
        shapes = {n: p.shape for n, p in model.named_parameters()}
        fake += [torch.zeros(shapes[name], dtype=torch.float32) for name, _ in state_names]
        with fx_traceback.preserve_node_meta(), _ModuleScopes(module_names), GpuKernels(), \
                unpacked_sequences():
            try:
                gm = make_fx(step)(*fake)
            except WatosError:
                raise
            except Exception as exc:  # any failure inside the user's model is reported as one line
                raise WatosError(_describe_trace_failure(exc, source.name)) from None
    names = ([("param", n) for n in param_names] + [("buffer", n) for n in buffer_names]
             + [("input", f"input{i}") for i in range(len(tensor_slots))]
             + [("optimizer_state", f"{name}:{state}") for name, state in state_names])
    return gm, names


class _ModuleScopes:
    """Global module hooks that record the stack of module paths into fx node meta. A module shared by several
    parents (GPT's one activation instance in every block) is named by the path under the module calling it."""

    def __init__(self, names: dict[int, list[str]]) -> None:
        self.names = names
        self.stack: list[str] = []

    def __enter__(self) -> "_ModuleScopes":
        self.handles = [nn_module.register_module_forward_pre_hook(self._enter),
                        nn_module.register_module_forward_hook(self._exit)]
        return self

    def __exit__(self, *exc: Any) -> None:
        for handle in self.handles:
            handle.remove()
        fx_traceback.current_meta.pop("nn_module_stack", None)

    def _publish(self) -> None:
        if self.stack:
            fx_traceback.current_meta["nn_module_stack"] = {p: (p, "") for p in self.stack}
        else:
            fx_traceback.current_meta.pop("nn_module_stack", None)

    def _enter(self, module: Any, args: Any) -> None:
        if id(module) in self.names:
            paths = self.names[id(module)]
            caller = self.stack[-1] if self.stack else None
            under = [p for p in paths if caller is not None and p.startswith(f"{caller}.")] if len(paths) > 1 else []
            self.stack.append(min(under, key=len) if under else paths[0])
            self._publish()

    def _exit(self, module: Any, args: Any, output: Any) -> None:
        if id(module) in self.names and self.stack:
            self.stack.pop()
            self._publish()



def _describe_trace_failure(exc: Exception, model_name: str) -> str:
    """One line naming what stopped the trace and where in the user's code."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if "/torch/" not in f.filename and "/watos/" not in f.filename]
    where = f" at {frames[-1].filename}:{frames[-1].lineno} ({(frames[-1].line or '').strip()})" if frames else ""
    data_dependent = (DataDependentOutputException, DynamicOutputShapeException)
    chain = [exc, exc.__cause__, exc.__context__]
    if any(isinstance(e, data_dependent) for e in chain) or "data-dependent" in str(exc).lower() \
            or "data dependent" in str(exc).lower():
        return f"{model_name}: data-dependent control flow or output shape{where}: WATOS traces static shapes on fake tensors"
    text = str(exc).strip().splitlines()
    return f"{model_name}: tracing failed{where}: {type(exc).__name__}: {text[0] if text else ''}"


