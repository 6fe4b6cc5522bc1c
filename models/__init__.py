"""Shipped model definitions: ``configs/<name>.json`` are Hugging Face style configs of known LLMs.

A config's ``model_type`` names a transformers family, or a family defined here (:data:`DEFINITIONS`:
a module with a pydantic ``Config`` of the config's fields and ``build(config, attention)`` returning
the ``nn.Module``). Keys starting with ``_`` (such as ``_comment``, which cites the source of the shape)
are notes for readers and are passed to neither.
"""
import importlib
from importlib import resources
from types import ModuleType

# model_type -> module of this package defining that family (transformers has no class for it)
DEFINITIONS = {"gshard": "gshard"}


def config_names() -> list[str]:
    """Names of the shipped model configs (``watos trace NAME``)."""
    return sorted(p.name.removesuffix(".json") for p in resources.files(__name__).joinpath("configs").iterdir()
                  if p.name.endswith(".json"))


def config_text(name: str) -> str | None:
    """The JSON text of a shipped config, or None if there is none of that name."""
    path = resources.files(__name__).joinpath("configs", f"{name}.json")
    return path.read_text() if path.is_file() else None


def definition(model_type: str) -> ModuleType | None:
    """The module defining ``model_type`` here, or None if transformers is to build it."""
    module = DEFINITIONS.get(model_type)
    return importlib.import_module(f"{__name__}.{module}") if module else None
