"""``watos validate CASES.json``: predict published training runs and report the error."""
from __future__ import annotations

import argparse
import json
from typing import Any

NAME = "validate"


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(NAME, help="predict published training runs and report the error",
                       description="Predict every case of a watos-validation-cases/1 file (choosing each knob "
                                   "a case leaves null) and compare with the measured tokens/s per device.")
    p.add_argument("cases", metavar="CASES.json")
    p.add_argument("--json", action="store_true", help="print one JSON object (sorted keys)")
    return p


def run(args: argparse.Namespace) -> int:
    import watos
    from watos.report.tables import print_validate

    result = watos.validate(args.cases)
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        print_validate(result, args.cases)
    return 0
