"""Reading user documents (YAML and JSON files) safely, with one-line errors naming the file."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from watos.errors import WatosError


def read_file(path: str, what: str) -> str:
    """The text of a file the user named; ``what`` says what it should be ("target file")."""
    file = Path(path)
    if not file.is_file():
        raise WatosError(f"{what} not found: {path}")
    return file.read_text()


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
