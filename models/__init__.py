"""Shipped model definitions: ``configs/<name>.json`` are Hugging Face style configs of known LLMs.

Keys starting with ``_`` (such as ``_comment``, which cites the source of the shape) are notes for
readers and are not passed to transformers.
"""
from importlib import resources


def config_names() -> list[str]:
    """Names of the shipped model configs (``watos trace NAME``)."""
    return sorted(p.name.removesuffix(".json") for p in resources.files(__name__).joinpath("configs").iterdir()
                  if p.name.endswith(".json"))


def config_text(name: str) -> str | None:
    """The JSON text of a shipped config, or None if there is none of that name."""
    path = resources.files(__name__).joinpath("configs", f"{name}.json")
    return path.read_text() if path.is_file() else None
