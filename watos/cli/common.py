"""What several commands share: the model argument, ``--plugin``, ``--stack``, the MoE routing flags, ``--dump-ir``
staging, ``--csv``, and the progress line a long command shows on a terminal."""
from __future__ import annotations

import argparse
import contextlib
from collections.abc import Iterator
from typing import Any

MODEL_HELP = ("a shipped model name (see `watos models`), a Hugging Face config.json, path/to/file.py:factory or "
              "package.module:attr returning an nn.Module")
TARGET_HELP = "a shipped target (`watos targets`) or a YAML file"


def add_plugin_flag(p: argparse.ArgumentParser) -> None:
    """``--plugin FILE.py`` (repeatable): a user's passes, which join the pipeline of the stage they declare."""
    p.add_argument("--plugin", action="append", default=[], metavar="FILE.py",
                   help="import FILE.py first so the passes it registers join their stage's pipeline (repeatable)")


def load_plugins(args: argparse.Namespace) -> None:
    """Import every ``--plugin`` file (its passes register themselves)."""
    from watos.ir.pass_manager import load_pass_file

    for plugin in args.plugin:
        load_pass_file(plugin)


def add_stack_flag(p: argparse.ArgumentParser) -> None:
    """``--stack NAME|FILE.yaml``: the software stack to run under (default: the plan's, else the target's)."""
    p.add_argument("--stack", metavar="S",
                   help="a shipped software stack (`watos stacks`) or a stack YAML file (default: the target's)")


def checked_stack(args: argparse.Namespace) -> str | None:
    """``--stack``, loaded once so that a bad name or file is one clear error before any work."""
    from watos.hardware.stack import load_stack

    if args.stack is not None:
        load_stack(args.stack)
    return args.stack


def add_routing_flags(p: argparse.ArgumentParser) -> None:
    """``--routing-skew`` and ``--capacity-factor``: the MoE routing model (:class:`watos.plan.Routing`)."""
    p.add_argument("--routing-skew", type=float, metavar="S",
                   help="MoE routing model: the busiest expert-parallel rank gets (1+S)x the mean tokens (default 0)")
    p.add_argument("--capacity-factor", type=float, metavar="C",
                   help="MoE routing model: a rank accepts at most C x the mean tokens (default: dropless)")


def routing_fields(args: argparse.Namespace, fields: dict | None = None) -> dict:
    """The plan's ``routing`` fields: those of ``fields`` (a plan file), overridden by the flags."""
    routing = dict((fields or {}).get("routing") or {})
    for flag, name in (("routing_skew", "skew"), ("capacity_factor", "capacity_factor")):
        if getattr(args, flag) is not None:
            routing[name] = getattr(args, flag)
    return routing


@contextlib.contextmanager
def staged_dumps(directory: str | None) -> Iterator[list[Any]]:
    """``--dump-ir DIR``: the DumpIR instrument writing into a staging folder whose dumps replace DIR's
    only if all succeeds (no instrument without DIR)."""
    from watos.files import staged_files
    from watos.ir.instruments import DumpIR

    if not directory:
        yield []
        return
    with staged_files(directory, "--dump-ir", stale="[0-9][0-9][0-9]_*") as staging:
        yield [DumpIR(staging)]


def add_csv_flag(p: argparse.ArgumentParser, rows: str) -> None:
    """``--csv FILE``: one row per ``rows`` (columns in docs/report.md)."""
    p.add_argument("--csv", metavar="FILE", help=f"also write {rows} to FILE as CSV, one row each (docs/report.md)")


class Activity:
    """A running command's progress line (:func:`activity`): ``say`` what it is doing, ``advance`` its count,
    give its ``total`` when known."""

    def __init__(self, bar: Any, task: Any) -> None:
        self._bar, self._task = bar, task

    def say(self, text: str) -> None:
        self._bar.update(self._task, description=text)

    def advance(self, steps: int = 1) -> None:
        self._bar.advance(self._task, steps)

    def total(self, n: int | None) -> None:
        self._bar.update(self._task, total=n)


@contextlib.contextmanager
def activity(description: str, unit: str = "") -> Iterator[Activity]:
    """What a long command is doing, on stderr while stderr is a terminal (nothing otherwise): a rich progress
    line with a spinner, ``description``, a count of ``unit`` (a bar once the total is known) and the time
    elapsed."""
    import sys

    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    counted = [BarColumn(bar_width=16), MofNCompleteColumn(), TextColumn(unit)] if unit else []
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), *counted, TimeElapsedColumn(),
                  console=Console(stderr=True), transient=True, disable=not sys.stderr.isatty()) as bar:
        yield Activity(bar, bar.add_task(description, total=None))
