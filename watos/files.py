"""The user's files: documents read safely (YAML, JSON) and validated strictly, with one-line errors
naming the file; outputs staged so that a failed run leaves nothing half-written."""
from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import yaml
from pydantic import BaseModel, ConfigDict

from watos.errors import WatosError


class StrictModel(BaseModel):
    """Base of every schema a user writes (targets, plans, templates, cases, pass options): unknown fields
    are errors and values are frozen once validated."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def read_file(path: str, what: str) -> str:
    """The text of a file the user named; ``what`` says what it should be ("target file")."""
    file = Path(path)
    if file.is_dir():
        raise WatosError(f"{what} {path} is a directory, not a file")
    if not file.is_file():
        raise WatosError(f"{what} not found: {path}")
    try:
        return file.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise WatosError(f"{what} {path} is not a text file (byte {exc.start} is not UTF-8)") from None
    except OSError as exc:
        raise WatosError(f"{what} {path} cannot be read: {exc.strerror}") from None


def parse_yaml_mapping(text: str, where: str, what: str) -> dict[str, Any]:
    """``yaml.safe_load`` of a document that must be a mapping."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark else ""
        raise WatosError(f"{where}: malformed YAML{line}: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise WatosError(f"{where}: {what} must be a YAML mapping")
    return data


def parse_json_object(text: str, where: str, what: str) -> dict[str, Any]:
    """``json.loads`` of a document that must be an object."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise WatosError(f"{where}: malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    if not isinstance(data, dict):
        raise WatosError(f"{where}: {what} must be a JSON object, got {type(data).__name__}")
    return data


@contextlib.contextmanager
def staged_files(directory: str, option: str, stale: str | None = None) -> Iterator[Path]:
    """Files written into a staging folder beside ``directory`` and moved into it together, only if all of
    them succeed (``stale``: a glob of the directory's files the new ones replace); nothing is left
    half-written. ``option`` names the flag in errors."""
    target = Path(directory)
    if target.exists() and not target.is_dir():
        raise WatosError(f"{option} {target}: exists and is not a directory")
    target.resolve().parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".watos-", dir=target.resolve().parent))
    try:
        yield staging
        target.mkdir(exist_ok=True)
        for old in target.glob(stale) if stale else ():
            old.unlink()
        for new in staging.iterdir():
            new.replace(target / new.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
