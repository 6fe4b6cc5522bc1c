"""The ``watos`` command line: one module per command, each with its flags (``add_parser``) and a ``run``
that calls the public API (:mod:`watos.api`) and renders its result (:mod:`watos.report.tables`).

Every user error (a :class:`~watos.errors.WatosError`) is one line on stderr and exit code 2; output
files are written whole or not at all.
"""
from __future__ import annotations

import argparse
import sys

from watos.cli import compile, explore, faults, listing, search, trace, validate
from watos.errors import WatosError

EXIT_USER_ERROR = 2
COMMANDS = (trace, compile, validate, search, explore, faults)


def build_parser() -> argparse.ArgumentParser:
    """The ``watos`` argument parser, a subcommand per command module."""
    parser = argparse.ArgumentParser(
        prog="watos",
        description="WATOS: find how to train a PyTorch LLM fastest on a wafer-scale chip.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub).set_defaults(run=command.run)
    listing.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``watos`` command; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except WatosError as exc:
        print(f"watos: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("watos: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
