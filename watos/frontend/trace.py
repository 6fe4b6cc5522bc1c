"""Trace the joint forward + backward training step of a model on fake tensors and import it as IR.

The step is ``loss = model(inputs); grads = autograd.grad(loss, parameters)``, traced with
``make_fx`` under one ``FakeTensorMode``: no weight is allocated, every shape is static.

Attribution. Forward ops get their owning module from global module hooks that keep
``fx.traceback.current_meta["nn_module_stack"]`` up to date. Backward ops carry the autograd
sequence number of the forward op they differentiate (the mechanism AOTAutograd uses), so they inherit
its module; the few that carry none (gradient accumulation) inherit from the op that feeds them.

Replication. A model whose blocks repeat is traced with a prefix of its blocks that contains every
distinct block structure (and at least two blocks); the ``group_blocks`` pass then counts each traced
block for all full-model blocks of its structure. ``replicate_blocks=False`` traces every block; a test
checks that both give the same totals.
"""
from __future__ import annotations

import contextlib
import hashlib
import operator
import re
import traceback
from typing import Any, Iterator

import torch
import torch.fx
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
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree

from watos.errors import WatosError
from watos.frontend.sources import ModelSource
from watos.ir import Graph, ModelInfo, Op, OpKind, Phase, TensorType, Value, aten

ATTENTION_IMPLEMENTATIONS = ("sdpa", "eager")
_IGNORED_BLOCK_ATTRIBUTES = frozenset({"layer_idx", "layer_id", "layer_number", "training"})
_NO_TENSOR = TensorType((), "none")
_PHASE_KEY = "watos_phase"
_PARAM_KEY = "watos_param"


def trace_step(source: ModelSource, *, seq_len: int, micro_batch: int, dtype: str = "bf16",
               attention: str = "sdpa", replicate_blocks: bool = True) -> Graph:
    """Trace one training step (forward, loss, parameter gradients) of ``source`` into WATOS IR."""
    if seq_len < 1 or micro_batch < 1:
        raise WatosError(f"seq_len and micro_batch must be positive, got {seq_len} and {micro_batch}")
    if dtype not in aten.DTYPE_ALIASES:
        raise WatosError(f"dtype must be one of {', '.join(aten.DTYPE_ALIASES)}, got {dtype!r}")
    if attention not in ATTENTION_IMPLEMENTATIONS:
        raise WatosError(f"attention must be one of {', '.join(ATTENTION_IMPLEMENTATIONS)}, got {attention!r}")
    model = source.build(getattr(torch, aten.DTYPE_ALIASES[dtype]), attention)
    model.train()
    parameters = sum(p.numel() for p in model.parameters())
    prefix, blocks = _find_blocks(model)
    signatures = [_block_signature(b) for b in blocks]
    traced = _traced_prefix(signatures) if replicate_blocks else len(blocks)
    with _truncated_blocks(model, prefix, traced if prefix is not None and traced < len(blocks) else None):
        inputs = _example_inputs(source, model, micro_batch, seq_len)
        module_types = {name: type(m).__name__ for name, m in model.named_modules()}
        gm, names = _trace_joint(model, inputs, source)
    info = ModelInfo(name=source.name, family=source.family, micro_batch=micro_batch, seq_len=seq_len,
                     dtype=dtype, parameters=parameters, num_blocks=len(blocks), block_prefix=prefix,
                     traced_blocks=list(range(traced)), block_signatures=signatures,
                     module_types=module_types,
                     config={**source.config, "attention": _attention_implementation(model, attention)})
    return _import_graph(gm, names, info)


def _attention_implementation(model: Any, requested: str) -> str:
    config = getattr(model, "config", None)
    return getattr(config, "_attn_implementation", None) or requested


# -- blocks -------------------------------------------------------------------------------------
def _find_blocks(model: Any) -> tuple[str | None, list[Any]]:
    """The repeated transformer blocks: the longest ModuleList of at least two modules."""
    best: tuple[str | None, list[Any]] = (None, [])
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) >= 2 and len(module) > len(best[1]):
            best = (name, list(module))
    return best


def _block_signature(block: Any) -> str:
    """A digest of a block's structure: submodule types, parameter shapes, scalar settings."""
    parts = []
    for name, sub in block.named_modules():
        settings = sorted((k, v) for k, v in vars(sub).items()
                          if not k.startswith("_") and k not in _IGNORED_BLOCK_ATTRIBUTES
                          and isinstance(v, (int, float, str, bool, type(None))))
        shapes = [(n, tuple(p.shape), str(p.dtype)) for n, p in sub.named_parameters(recurse=False)]
        parts.append((name, type(sub).__qualname__, settings, shapes))
    return hashlib.sha1(repr(parts).encode()).hexdigest()[:12]


def _traced_prefix(signatures: list[str]) -> int:
    """Shortest prefix of blocks holding every distinct structure, and at least two blocks."""
    needed = set(signatures)
    seen: set[str] = set()
    for i, sig in enumerate(signatures):
        seen.add(sig)
        if seen == needed:
            return min(len(signatures), max(i + 1, 2))
    return len(signatures)


@contextlib.contextmanager
def _truncated_blocks(model: Any, prefix: str | None, keep: int | None) -> Iterator[None]:
    """Keep only the first ``keep`` blocks (and say so in the config) while tracing; restore them
    after, since a source may hand out the same module or config object again."""
    if keep is None:
        yield
        return
    parent_name, _, attr = prefix.rpartition(".")
    parent = model.get_submodule(parent_name)
    config = getattr(model, "config", None)
    saved = {name: getattr(config, name) for name in ("num_hidden_layers", "layer_types")
             if config is not None and hasattr(config, name)}
    blocks = getattr(parent, attr)
    setattr(parent, attr, torch.nn.ModuleList(list(blocks)[:keep]))
    if "num_hidden_layers" in saved:
        config.num_hidden_layers = keep
        if isinstance(saved.get("layer_types"), list):
            config.layer_types = saved["layer_types"][:keep]
    try:
        yield
    finally:
        setattr(parent, attr, blocks)
        for name, value in saved.items():
            setattr(config, name, value)


# -- inputs and the step --------------------------------------------------------------------------
def _example_inputs(source: ModelSource, model: Any, micro_batch: int, seq_len: int) -> Any:
    """Inputs as fake-able tensors on the meta device: ``(args, kwargs)``."""
    if source.example_inputs is not None:
        made = source.example_inputs(micro_batch, seq_len)
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
    state_names = [(n, state) for n, p in model.named_parameters() for state in _adamw_states(p.dtype)]

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
        with fx_traceback.annotate({_PHASE_KEY: Phase.BACKWARD.value}):  # the seed gradient too
            grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
        states: dict[str, dict[str, Any]] = {}
        for (name, state), tensor in zip(state_names, flat[n_p + n_b + n_i:]):
            states.setdefault(name, {})[state] = tensor
        with fx_traceback.annotate({_PHASE_KEY: Phase.OPTIMIZER.value}):
            updated = [_adamw_update(name, params[name], grad, states[name])
                       for name, grad in zip(param_names, grads)]
        return loss, grads, updated

    module_names = {id(m): n for n, m in model.named_modules()}
    mode = FakeTensorMode(allow_non_fake_inputs=False)
    with mode:
        fake = [torch.empty(p.shape, dtype=p.dtype, requires_grad=True) for p in model.parameters()]
        fake += [torch.empty(b.shape, dtype=b.dtype) for b in model.buffers()]
        fake += [torch.zeros(flat_inputs[i].shape, dtype=flat_inputs[i].dtype) for i in tensor_slots]
        shapes = {n: p.shape for n, p in model.named_parameters()}
        fake += [torch.zeros(shapes[name], dtype=torch.float32) for name, _ in state_names]
        with fx_traceback.preserve_node_meta(), _ModuleScopes(module_names), _GpuKernels(), \
                _unpacked_sequences():
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


# Mixed-precision AdamW hyper-parameters: they change no shape or cost, only make the update concrete.
_ADAMW = {"lr": 1e-4, "beta1": 0.9, "beta2": 0.95, "eps": 1e-8, "weight_decay": 0.1}


def _adamw_states(dtype: torch.dtype) -> tuple[str, ...]:
    """Optimizer state per parameter: fp32 moments, plus an fp32 master copy of 16-bit weights."""
    return ("exp_avg", "exp_avg_sq") + (("master",) if dtype != torch.float32 else ())


def _adamw_update(name: str, param: Any, grad: Any, state: dict[str, Any]) -> Any:
    """One AdamW step (Loshchilov & Hutter 2019, Algorithm 2) for one parameter, in place on its
    fp32 state, at step 1 (bias corrections are constants); returns the new weights in the model's
    dtype. Runs under the parameter's module scope so it is counted with its block, and names the
    parameter on every op."""
    module = name.rpartition(".")[0]
    fx_traceback.current_meta["nn_module_stack"] = {module: (module, "")}
    try:
        with fx_traceback.annotate({_PARAM_KEY: name}):
            return _adamw_math(param, grad, state)
    finally:
        fx_traceback.current_meta.pop("nn_module_stack", None)


def _adamw_math(param: Any, grad: Any, state: dict[str, Any]) -> Any:
    master = state.get("master", param.detach())  # an fp32 parameter is its own master copy
    if grad is None:
        return master.to(param.dtype)
    g = grad.float()
    b1, b2 = _ADAMW["beta1"], _ADAMW["beta2"]
    state["exp_avg"].mul_(b1).add_(g, alpha=1 - b1)
    state["exp_avg_sq"].mul_(b2).addcmul_(g, g, value=1 - b2)
    denominator = (state["exp_avg_sq"] / (1 - b2)).sqrt_().add_(_ADAMW["eps"])
    master.mul_(1 - _ADAMW["lr"] * _ADAMW["weight_decay"])
    master.addcdiv_(state["exp_avg"], denominator, value=-_ADAMW["lr"] / (1 - b1))
    return master.to(param.dtype)


class _GpuKernels(TorchFunctionMode):
    """Trace dropout and attention as the fused kernels GPUs run, not as the CPU fallbacks.

    * dropout -> ``native_dropout`` (output and a 1-byte mask), not CPU's in-place ``bernoulli_``
      into a full-width mask;
    * scaled_dot_product_attention -> one flash-attention op, dropout included, not CPU's
      fp32 math fallback that SDPA takes whenever dropout is on; a value head narrower than the
      query's (DeepSeek's multi-head latent attention) is zero-padded and the output sliced, as
      flash kernels with one head dimension are run.
    """

    _DROPOUT_ARGS = {torch.nn.functional.dropout: ("input", "p", "training", "inplace"),
                     torch.dropout: ("input", "p", "train")}
    _SDPA_ARGS = ("query", "key", "value", "attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa")

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func in self._DROPOUT_ARGS:
            bound = {**dict(zip(self._DROPOUT_ARGS[func], args)), **kwargs}
            p = float(bound.get("p", 0.5))
            if not bound.get("training", bound.get("train", True)) or p == 0.0:
                return bound["input"]
            return torch.ops.aten.native_dropout(bound["input"], p, True)[0]
        if func is torch.nn.functional.scaled_dot_product_attention:
            bound = {**dict(zip(self._SDPA_ARGS, args)), **kwargs}
            query, value = bound["query"], bound["value"]
            width = value.shape[-1]
            if width < query.shape[-1]:  # flash kernels need one head dim: pad V, slice the output
                value = torch.nn.functional.pad(value, (0, query.shape[-1] - width))
            out = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
                query, bound["key"], value, float(bound.get("dropout_p", 0.0)),
                bool(bound.get("is_causal", False)), attn_mask=bound.get("attn_mask"),
                scale=bound.get("scale"))[0]
            return out[..., :width]
        return func(*args, **kwargs)


@contextlib.contextmanager
def _unpacked_sequences() -> Iterator[None]:
    """Training batches are whole, unpadded sequences: tell transformers they are not packed.

    transformers checks position ids for packed sequences by reading tensor values, which fake
    tensors cannot; unable to decide, it would build an explicit s x s mask per layer instead of
    letting SDPA run causally, as it does on real unpacked training batches.
    """
    try:
        from transformers import masking_utils
    except ImportError:
        yield
        return
    original = masking_utils.find_packed_sequence_indices
    masking_utils.find_packed_sequence_indices = lambda position_ids: None
    try:
        yield
    finally:
        masking_utils.find_packed_sequence_indices = original


class _ModuleScopes:
    """Global module hooks that record the stack of module paths into fx node meta."""

    def __init__(self, names: dict[int, str]) -> None:
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
            self.stack.append(self.names[id(module)])
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


# -- fx graph -> IR -----------------------------------------------------------------------------
def _tensor_type(value: Any) -> TensorType:
    if isinstance(value, torch.Tensor):
        dtype = str(value.dtype).removeprefix("torch.")
        return TensorType(tuple(int(d) for d in value.shape), aten.TORCH_DTYPE_NAMES.get(dtype, dtype))
    return _NO_TENSOR


def _scalar_attrs(node: Any) -> dict[str, Any]:
    """Non-tensor arguments by schema name (dims, probabilities, flags), kept for passes."""

    def plain(x: Any) -> Any:
        if isinstance(x, (bool, int, float, str)):
            return x
        if isinstance(x, (list, tuple)) and x and all(isinstance(e, (int, float, bool)) for e in x):
            return list(x)
        return None

    schema = node.target._schema.arguments
    named = {arg.name: value for arg, value in zip(schema, node.args)}
    named.update(node.kwargs)
    return {name: v for name, value in named.items()
            if not isinstance(value, torch.fx.Node) and (v := plain(value)) is not None}


def _import_graph(gm: Any, names: list[tuple[str, str]], info: ModelInfo) -> Graph:
    values: dict[torch.fx.Node, Value] = {}
    ops: list[Op] = []
    forward_by_seq: dict[int, Op] = {}
    block_re = re.compile(rf"^{re.escape(info.block_prefix)}\.(\d+)(?:\.|$)") if info.block_prefix else None
    outputs: dict[str, Value] = {}
    placeholders = iter(names)

    def new_op(node: Any, **fields: Any) -> Op:
        op = Op(id=len(ops), name=node.name, **fields)
        ops.append(op)
        values[node] = op.out
        return op

    for node in gm.graph.nodes:
        if node.op == "placeholder":
            kind, name = next(placeholders)
            op = new_op(node, target=kind, kind=OpKind.PARAM if kind == "param" else OpKind.INPUT,
                        phase=Phase.FORWARD, inputs=[], outputs=[_tensor_type(node.meta.get("val"))],
                        module=name.rpartition(".")[0] if kind != "input" else "")
            op.attrs["name"] = name
            if block_re is not None and (m := block_re.match(name)):
                op.block = int(m.group(1))
        elif node.op == "call_function" and node.target is operator.getitem:
            producer, index = values[node.args[0]], node.args[1]
            values[node] = (producer[0], producer[1] + index)
        elif node.op == "call_function" and isinstance(node.target, torch._ops.OpOverload):
            packet = node.target.overloadpacket.__name__
            kind = aten.kind_of(packet, torch.Tag.pointwise in node.target.tags)
            val = node.meta.get("val")
            outs = [_tensor_type(v) for v in val] if isinstance(val, (tuple, list)) else [_tensor_type(val)]
            inputs = [values[a] for a in _flat_nodes(node)]
            annotated = node.meta.get("custom", {}).get(_PHASE_KEY)
            phase = Phase(annotated) if annotated else Phase.FORWARD
            if node.meta.get("autograd_backward"):
                phase = Phase.BACKWARD
            backward = phase is Phase.BACKWARD
            stack = node.meta.get("nn_module_stack") or {}
            op = new_op(node, target=packet, kind=kind, phase=phase,
                        inputs=inputs, outputs=outs, aten=f"aten.{packet}.{node.target._overloadname}",
                        module=next(reversed(stack)) if stack else "", attrs=_scalar_attrs(node))
            if node.target._schema.is_mutable:
                op.attrs["inplace"] = True
            if _PARAM_KEY in node.meta.get("custom", {}):
                op.attrs["param"] = node.meta["custom"][_PARAM_KEY]
            seq = node.meta.get("seq_nr") if not node.meta.get("is_gradient_acc") else None
            if backward:
                owner = forward_by_seq.get(seq) if seq is not None else None
                if owner is None:  # accumulation, or an op autograd did not number: ask its inputs
                    owner, feeder = _nearest_producer(op, ops)
                    op.module = owner.module if owner is not None else ""
                    op.grad_of = (owner.grad_of if feeder else owner.id) if owner is not None else None
                else:
                    op.module, op.grad_of = owner.module, owner.id
            elif seq is not None:
                forward_by_seq.setdefault(seq, op)
            if block_re is not None and (m := block_re.match(op.module)):
                op.block = int(m.group(1))
        elif node.op == "output":
            loss, grads, updated = node.args[0]
            outputs["loss"] = values[loss]
            param_names = [n for k, n in names if k == "param"]
            for name, grad, new in zip(param_names, grads, updated):
                if grad is not None:
                    outputs[f"grad:{name}"] = values[grad]
                outputs[f"param:{name}"] = values[new]
        else:
            raise WatosError(f"unsupported node in traced graph: {node.op} {node.target}")
    graph = Graph(model=info, ops=ops, outputs=outputs)
    for op in graph.ops:
        roots = (graph.op(graph.storage_root(v)[0]) for v in op.inputs)
        op.params = list(dict.fromkeys(r.attrs["name"] for r in roots if r.kind is OpKind.PARAM))
    return graph


def _flat_nodes(node: Any) -> list[Any]:
    flat: list[Any] = []
    torch.fx.node.map_arg((node.args, node.kwargs), flat.append)
    return [n for n in flat if isinstance(n, torch.fx.Node)]


def _nearest_producer(op: Op, ops: list[Op]) -> tuple[Op | None, bool]:
    """The latest backward op feeding ``op`` (and True), else the latest forward op it reads
    (and False): a backward op with no autograd owner belongs with one of them."""
    producers = sorted((ops[v[0]] for v in op.inputs), key=lambda p: -p.id)
    for producer in producers:
        if producer.phase is Phase.BACKWARD:
            return producer, True
    forward = [p for p in producers if p.kind not in (OpKind.PARAM, OpKind.INPUT)]
    return (forward[0], False) if forward else (None, False)
