"""Repeated transformer blocks: finding them, telling their structures apart, tracing a prefix of them.

A model whose blocks repeat is traced with the shortest prefix of its blocks that contains every distinct
block structure (and at least two blocks); the ``group_blocks`` pass then counts each traced block for all
full-model blocks of its structure.
"""
from __future__ import annotations

import contextlib
import hashlib
from typing import Any, Iterator

import torch

_IGNORED_BLOCK_ATTRIBUTES = frozenset({"layer_idx", "layer_id", "layer_number", "training"})


def find_blocks(model: Any) -> tuple[str | None, list[Any]]:
    """The repeated transformer blocks: the longest ModuleList of at least two modules."""
    best: tuple[str | None, list[Any]] = (None, [])
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) >= 2 and len(module) > len(best[1]):
            best = (name, list(module))
    return best


def block_signature(block: Any) -> str:
    """A digest of a block's structure: submodule types, parameter shapes, scalar settings."""
    parts = []
    for name, sub in block.named_modules():
        settings = sorted((k, v) for k, v in vars(sub).items()
                          if not k.startswith("_") and k not in _IGNORED_BLOCK_ATTRIBUTES
                          and isinstance(v, (int, float, str, bool, type(None))))
        shapes = [(n, tuple(p.shape), str(p.dtype)) for n, p in sub.named_parameters(recurse=False)]
        parts.append((name, type(sub).__qualname__, settings, shapes))
    return hashlib.sha1(repr(parts).encode()).hexdigest()[:12]


def traced_prefix(signatures: list[str]) -> int:
    """Shortest prefix of blocks holding every distinct structure, and at least two blocks."""
    needed = set(signatures)
    seen: set[str] = set()
    for i, sig in enumerate(signatures):
        seen.add(sig)
        if seen == needed:
            return min(len(signatures), max(i + 1, 2))
    return len(signatures)


@contextlib.contextmanager
def truncated_blocks(model: Any, prefix: str | None, keep: int | None) -> Iterator[None]:
    """Keep only the first ``keep`` blocks (and say so in the config) while tracing; restore them
    after, since a source may hand out the same module or config object again."""
    if keep is None:
        yield
        return
    parent_name, _, attr = prefix.rpartition(".")
    parent = model.get_submodule(parent_name)
    config = getattr(model, "config", None)
    saved = {name: getattr(config, name) for name in ("num_hidden_layers", "layer_types")
             if config is not None and hasattr(config, name) and _settable(config, name)}
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



def _settable(config: Any, name: str) -> bool:
    """Whether a config attribute can be set (Mamba derives ``layer_types`` in a read-only property)."""
    attribute = getattr(type(config), name, None)
    return not isinstance(attribute, property) or attribute.fset is not None
