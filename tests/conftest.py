"""Shared helpers: traced graphs are cached per session, since tracing is the slow part."""
from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest

import watos
from watos.printers import summary

FIXTURES = Path(__file__).parent / "fixtures"


@functools.lru_cache(maxsize=None)
def traced(spec: str, seq_len: int = 64, micro_batch: int = 1, attention: str = "sdpa",
           replicate_blocks: bool = True):
    """The IR of ``spec`` after the default pipeline (cached; do not mutate)."""
    return watos.trace(spec, seq_len=seq_len, micro_batch=micro_batch, attention=attention,
                       replicate_blocks=replicate_blocks)


def traced_summary(*args, **kwargs) -> dict:
    return summary(traced(*args, **kwargs))


@pytest.fixture
def write_config(tmp_path):
    """Write a config dict to a config.json-style file and return its path."""

    def write(config: dict, name: str = "config") -> str:
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(config))
        return str(path)

    return write
