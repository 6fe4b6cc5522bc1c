"""User-facing errors.

A :class:`WatosError` is a problem with what the user gave (a model spec, a config, a plan): the CLI
prints its message as one line and exits with code 2, never with a traceback.
"""


class WatosError(Exception):
    """Bad input, reported as one line naming the field, file or op, exit code 2."""
