"""The ``watos`` command line: one module per command, each with its flags (``add_parser``) and a ``run``
that calls the public API (:mod:`watos.api`) and renders its result (:mod:`watos.report.tables`).

Every user error (a :class:`~watos.errors.WatosError`) is one line on stderr and exit code 2; output
files are written whole or not at all.
"""
from __future__ import annotations

import argparse
import sys

from watos.cli import compile, explore, faults, listing, search, trace, validate
from watos.cli.common import add_verbose_flag, quiet_libraries
from watos.errors import WatosError

EXIT_USER_ERROR = 2
COMMANDS = (trace, compile, validate, search, explore, faults)


EXIT_INTERNAL_ERROR = 1


class _HelpWithDefaults(argparse.HelpFormatter):
    """Help lines that end with the option's default, when it has one worth saying and the text does not."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.option_strings and action.default not in (None, False, [], argparse.SUPPRESS) \
                and "default" not in text:
            text += " (default: %(default)s)"
        return text


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line and exit code 2, like every other bad input."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", _HelpWithDefaults)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``watos`` argument parser, a subcommand per command module, each with ``--verbose``."""
    parser = _Parser(
        prog="watos",
        description="WATOS: find how to train a PyTorch LLM fastest on a wafer-scale chip.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        p = command.add_parser(sub)
        p.set_defaults(run=command.run)
    listing.add_parsers(sub)
    for p in sub.choices.values():
        add_verbose_flag(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``watos`` command; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        with quiet_libraries(args.verbose):
            return args.run(args)
    except WatosError as exc:
        print(f"watos: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("watos: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug, not bad input: one line, and the traceback under --verbose
        if args.verbose:
            raise
        text = str(exc).strip().splitlines()
        print(f"watos: internal error: {type(exc).__name__}: {text[0] if text else ''} "
              "(rerun with --verbose for the traceback)", file=sys.stderr)
        return EXIT_INTERNAL_ERROR


if __name__ == "__main__":
    sys.exit(main())
