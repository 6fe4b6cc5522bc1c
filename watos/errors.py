"""User-facing errors.

A :class:`WatosError` is a problem with what the user gave (a model spec, a config, a plan): the CLI
prints its message as one line and exits with code 2, never with a traceback.
"""


class WatosError(Exception):
    """Bad input, reported as one line naming the field, file or op, exit code 2."""


_PYDANTIC_MESSAGES = {"extra_forbidden": "unknown field", "missing": "missing field"}


def describe_validation_error(exc) -> str:
    """``field.path: message`` for the first error of a pydantic ``ValidationError`` (tagged-union
    branch names such as ``mesh2d`` are kept: they say which variant was checked)."""
    first = exc.errors()[0]
    field = ".".join(str(part) for part in first["loc"])
    return f"{field}: {_PYDANTIC_MESSAGES.get(first['type'], first['msg'])}" if field else first["msg"]


class BlocksDiffer(WatosError):
    """Traced blocks of one module structure traced to different ops (Mamba's first block keeps its residual in
    fp32, the others receive it so), so a traced prefix cannot stand for the untraced blocks: trace them all."""
