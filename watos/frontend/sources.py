"""Model specs in: resolve what the user names into something the tracer can build on the meta device.

A spec is one of
  * a shipped model name (``llama3-70b``; see ``models/configs``),
  * a path to a Hugging Face style ``config.json`` of any decoder (causal LM), encoder (masked LM) or vision
    (image classifier) family transformers knows, or of a family defined in ``watos.models`` (``model_type: gshard``; see ``watos.models.DEFINITIONS``),
  * ``path/to/file.py:factory`` or ``package.module:attr`` naming a callable that returns an
    ``nn.Module`` (if that module also defines ``example_inputs(micro_batch, seq_len)``, its result
    is the model's input),
  * a config dict, as a ``config.json`` would hold it (Python API only; named by its ``model_type``),
  * an ``nn.Module`` object (Python API only).

Nothing here allocates weights or reaches a network: models are built under ``torch.device("meta")``.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from watos.errors import WatosError, describe_validation_error
from watos.files import parse_json_object, read_file

InputsFn = Callable[[int, int], Any]
ATTENTION_IMPLEMENTATIONS = ("sdpa", "eager")
"""How attention is traced: ``sdpa``, one flash-attention op; ``eager``, the matmul-softmax-matmul pattern."""


@dataclass
class ModelSource:
    """A model the tracer can build: a name, a meta-device builder, and how to make its inputs."""

    name: str
    family: str
    build: Callable[[Any, str], Any]  # (torch dtype, attention implementation) -> nn.Module on meta
    example_inputs: InputsFn | None = None
    config: dict[str, Any] = field(default_factory=dict)
    is_hf: bool = False


def load_model(spec: Any, example_inputs: InputsFn | None = None) -> ModelSource:
    """Resolve a model spec (see module docstring) into a :class:`ModelSource`."""
    import torch

    if isinstance(spec, torch.nn.Module):
        return _from_module_object(spec, example_inputs)
    if isinstance(spec, dict):
        return from_config(str(spec.get("model_type", "config")), spec)
    if not isinstance(spec, str) or not spec:
        raise WatosError(f"model spec must be a name, a config.json path or file.py:factory, got {spec!r}")
    from watos.models import config_names, config_text

    if (text := config_text(spec)) is not None:
        return from_config(spec, parse_json_object(text, f"models/configs/{spec}.json", "a config"))
    path = Path(spec)
    if spec.endswith(".json"):
        data = parse_json_object(read_file(spec, "config file"), spec, "a config")
        return from_config(path.stem if path.name != "config.json" else path.parent.name or "config", data)
    if ":" in spec:
        return _from_factory(spec, example_inputs)
    raise WatosError(f"unknown model {spec!r}: not a shipped name ({', '.join(config_names())}), "
                     "a config.json path, or file.py:factory / package.module:attr")


def from_config(name: str, data: dict[str, Any]) -> ModelSource:
    """A model source from a config dict: a family defined in ``watos.models`` if its ``model_type``
    names one, else a transformers family (:func:`from_hf_config`)."""
    from pydantic import ValidationError

    from watos.models import definition

    model_type = data.get("model_type")
    module = definition(model_type) if isinstance(model_type, str) else None
    if module is None:
        return from_hf_config(name, data)
    try:
        config = module.Config(**{k: v for k, v in data.items() if not k.startswith("_")})
    except ValidationError as exc:
        raise WatosError(f"{name}: invalid {model_type} config: {describe_validation_error(exc)}") from None

    def build(dtype: Any, attention: str) -> Any:
        import torch

        with torch.device("meta"):
            return module.build(config, attention).to(dtype=dtype)

    return ModelSource(name=name, family=model_type, build=build, config=config.model_dump())


def from_hf_config(name: str, data: dict[str, Any]) -> ModelSource:
    """A model source from a transformers config given as a dict (``model_type`` and its fields)."""
    from transformers import CONFIG_MAPPING

    model_type = data.get("model_type")
    if not isinstance(model_type, str):
        raise WatosError(f"{name}: config has no 'model_type' field")
    if model_type not in CONFIG_MAPPING:
        raise WatosError(f"{name}: model_type {model_type!r} is not a family transformers knows")
    fields = {k: v for k, v in data.items() if not k.startswith("_")}
    _check_sizes(name, fields)
    try:
        config = CONFIG_MAPPING[model_type](**fields)
    except Exception as exc:  # transformers' and huggingface_hub's validators raise their own types
        raise WatosError(f"{name}: invalid {model_type} config: {_first_line(_innermost(exc))}") from None
    config.use_cache = False

    head, what, inputs = _head(name, config)

    def build(dtype: Any, attention: str) -> Any:
        """The model on the meta device. A family transformers will not run under SDPA is built eager; one
        whose reason is logit soft-capping (gemma2), which flash-attention kernels fuse, is then dispatched
        to SDPA all the same: the trace wants the fused kernel's shapes, not the CPU's numerics."""
        try:
            return _build_hf(head, what, config, dtype, attention)
        except ValueError as exc:
            if attention == "eager" or "attention implementation" not in str(exc):
                raise WatosError(f"{name}: transformers cannot build {what} from this config: "
                                 f"{_first_line(exc)}") from None
        from watos.frontend.kernels import register_fused_attention

        model = _build_hf(head, what, config, dtype, "eager")
        if getattr(config, "attn_logit_softcapping", None):  # flash attention fuses the soft-cap
            model.config._attn_implementation_internal = register_fused_attention()
        return model

    return ModelSource(name=name, family=model_type, build=build, example_inputs=inputs, config=fields,
                       is_hf=inputs is None)


def _head(name: str, config: Any) -> tuple[str, str, InputsFn | None]:
    """The transformers head a config is traced with, what it is, and its inputs (None: token ids, labels the
    same ids shifted by the model). An encoder (a family whose masked-LM class is ``...ForMaskedLM``, BERT,
    RoBERTa) trains as a masked LM on token ids; a decoder as a causal LM; a vision family (ViT) as an image
    classifier on ``[b, channels, image_size, image_size]`` pixels, whatever ``seq_len`` says (its patches
    fix the sequence)."""
    from transformers.models.auto import modeling_auto as auto

    model_type = config.model_type
    masked = auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES.get(model_type, "")
    if masked.endswith("ForMaskedLM") and not getattr(config, "is_decoder", False):
        return "AutoModelForMaskedLM", "a masked LM", _token_inputs
    if model_type in auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        return "AutoModelForCausalLM", "a causal LM", None
    if model_type in auto.MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES:
        return "AutoModelForImageClassification", "an image classifier", _image_inputs(config)
    raise WatosError(f"{name}: transformers has no causal LM, masked LM or image classifier for model_type "
                     f"{model_type!r}; give WATOS the model through file.py:factory")


def _token_inputs(micro_batch: int, seq_len: int) -> dict[str, Any]:
    import torch

    ids = torch.zeros((micro_batch, seq_len), dtype=torch.long, device="meta")
    return {"input_ids": ids, "labels": ids}


def _image_inputs(config: Any) -> InputsFn:
    def inputs(micro_batch: int, seq_len: int) -> dict[str, Any]:
        import torch

        side, channels = getattr(config, "image_size", 224), getattr(config, "num_channels", 3)
        return {"pixel_values": torch.zeros((micro_batch, channels, side, side), device="meta"),
                "labels": torch.zeros((micro_batch,), dtype=torch.long, device="meta")}

    return inputs


_SIZE_WORDS = ("size", "dim", "layers", "heads", "experts", "positions", "rank", "window")
"""A config field whose name holds one of these counts or measures something: a negative value is an error
(``num_hidden_layers: -2`` would otherwise build a model with no blocks)."""
_POSITIVE = ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size", "n_embd", "n_layer", "n_head",
             "d_model", "num_layers")
"""Fields every model needs at least one of."""


def _check_sizes(name: str, fields: dict[str, Any]) -> None:
    """One line for a size or count of the wrong type or sign, before transformers sees it."""
    for key, value in sorted(fields.items()):
        if not any(word in key for word in _SIZE_WORDS) and key not in _POSITIVE:
            continue
        if isinstance(value, bool) or (value is not None and not isinstance(value, (int, float, list, dict, str))):
            raise WatosError(f"{name}: {key} must be a number, got {value!r}")
        if isinstance(value, str) and key in _POSITIVE:
            raise WatosError(f"{name}: {key} must be an integer, got {value!r}")
        if isinstance(value, (int, float)) and (value < 0 or (key in _POSITIVE and value == 0)):
            raise WatosError(f"{name}: {key} must be {'positive' if key in _POSITIVE else 'non-negative'}, "
                             f"got {value!r}")


def _innermost(exc: BaseException) -> BaseException:
    """The original error under wrappers that re-raise it (``raise ... from e``)."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


def _build_hf(head: str, what: str, config: Any, dtype: Any, attention: str) -> Any:
    import torch
    import transformers
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    try:
        with torch.device("meta"):
            return getattr(transformers, head).from_config(config, dtype=dtype, attn_implementation=attention)
    except (AssertionError, TypeError, KeyError, AttributeError, IndexError) as exc:
        raise WatosError(f"transformers cannot build {what} from this {config.model_type} "
                         f"config: {type(exc).__name__}: {_first_line(exc)}") from None


def _from_factory(spec: str, example_inputs: InputsFn | None) -> ModelSource:
    where, _, attr = spec.rpartition(":")
    module = _import_file(where) if where.endswith(".py") else _import_module(where)
    factory = getattr(module, attr, None)
    if factory is None or not callable(factory):
        raise WatosError(f"{spec}: {where} has no callable {attr!r}")
    inputs = example_inputs or getattr(module, "example_inputs", None)

    def build(dtype: Any, attention: str) -> Any:
        import torch

        with torch.device("meta"):
            try:
                model = factory()
            except Exception as exc:  # the user's code: report it as one line, whatever it raised
                raise WatosError(f"{spec}: factory raised {type(exc).__name__}: {_first_line(exc)}") from None
        if not isinstance(model, torch.nn.Module):
            raise WatosError(f"{spec}: factory returned {type(model).__name__}, not a torch.nn.Module")
        return model.to(dtype=dtype)

    return ModelSource(name=attr, family=type(factory).__name__ if isinstance(factory, type) else attr,
                       build=build, example_inputs=inputs)


def _from_module_object(module: Any, example_inputs: InputsFn | None) -> ModelSource:
    import torch

    def build(dtype: Any, attention: str) -> Any:
        return module.to(device=torch.device("meta"), dtype=dtype)

    return ModelSource(name=type(module).__name__, family=type(module).__name__, build=build,
                       example_inputs=example_inputs)


def _import_file(path: str) -> Any:
    file = Path(path)
    if not file.is_file():
        raise WatosError(f"model file not found: {path}")
    name = f"watos_user_model_{abs(hash(file.resolve()))}"
    spec = importlib.util.spec_from_file_location(name, file)
    if spec is None or spec.loader is None:
        raise WatosError(f"cannot load model file {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:  # the user's file: any error it raises is reported as one line
        raise WatosError(f"{path}: importing it raised {type(exc).__name__}: {_first_line(exc)}") from None
    return module


def _import_module(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise WatosError(f"cannot import module {name!r}: {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
