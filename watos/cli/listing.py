"""``watos models``, ``watos targets``, ``watos stacks``, ``watos passes``: what ships, and every registered pass."""
from __future__ import annotations

import argparse
from typing import Any

from watos.cli.common import add_plugin_flag, load_plugins


def add_parsers(sub: Any) -> None:
    sub.add_parser("models", help="list the shipped model configs").set_defaults(run=run_models)
    sub.add_parser("targets", help="list the shipped hardware targets").set_defaults(run=run_targets)
    sub.add_parser("stacks", help="list the shipped software stacks").set_defaults(run=run_stacks)
    p = sub.add_parser("passes", help="list every registered pass: stage, requires, provides, options",
                       description="List the passes of every stage (import, lower, cost) in registration order, "
                                   "with what each requires and provides and its options (type, default, meaning).")
    add_plugin_flag(p)
    p.set_defaults(run=run_passes)


def run_models(args: argparse.Namespace) -> int:
    from watos.models import config_names

    print("\n".join(config_names()))
    return 0


def run_targets(args: argparse.Namespace) -> int:
    from watos.hardware.target import load_target, shipped_targets

    for name in shipped_targets():
        print(f"{name:16s} {load_target(name).description}")
    return 0


def run_stacks(args: argparse.Namespace) -> int:
    from watos.hardware.stack import load_stack, shipped_stacks

    for name in shipped_stacks():
        print(f"{name:16s} {load_stack(name).description}")
    return 0


def run_passes(args: argparse.Namespace) -> int:
    from watos.ir.pass_manager import STAGES, registered_passes
    from watos.pipelines import SHIPPED
    from watos.report.tables import print_passes

    load_plugins(args)
    registry = registered_passes()
    shipped = [name for names in SHIPPED.values() for name in names]
    ordered = [registry[name] for name in shipped] + [cls for name, cls in registry.items() if name not in shipped]
    print_passes(sorted(ordered, key=lambda cls: STAGES.index(cls.stage)))  # a stable sort: pipeline order kept
    return 0
