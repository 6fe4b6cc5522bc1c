"""``watos validate CASES.json``: predict published training runs and report the error."""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

NAME = "validate"


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(NAME, help="predict published training runs and report the error",
                       description="Predict every case of a validation file (choosing each knob a case leaves null, "
                                   "under the software stack it ran) and compare with the measured tokens/s and "
                                   "memory per device, overall, per framework and per hardware class.")
    p.add_argument("cases", metavar="CASES.json", help="a watos-validation-cases/1 or /2 file")
    p.add_argument("--leave-one-source-out", action="store_true",
                   help="also recalibrate without each source in turn and predict it (the error on unseen runs)")
    p.add_argument("--json", action="store_true", help="print one JSON object (sorted keys)")
    return p


def run(args: argparse.Namespace) -> int:
    import watos
    from watos.report.tables import print_validate

    def progress(line: str) -> None:  # leave-one-source-out refits take minutes: say what is being fitted
        print(line, file=sys.stderr, flush=True)

    result = watos.validate(args.cases, leave_one_source_out=args.leave_one_source_out,
                            progress=progress if sys.stderr.isatty() else None)
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        print_validate(result, args.cases)
    return 0
