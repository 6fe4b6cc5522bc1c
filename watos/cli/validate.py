"""``watos validate CASES.json``: predict published training runs and report the error."""
from __future__ import annotations

import argparse
import json
from typing import Any

from watos.cli.common import activity, add_csv_flag

NAME = "validate"


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(NAME, help="predict published training runs and report the error",
                       description="Predict every case of a validation file (choosing each knob a case leaves null, "
                                   "under the software stack it ran) and compare with the measured tokens/s and "
                                   "memory per device, overall, per framework and per hardware class.")
    p.add_argument("cases", metavar="CASES.json", help="a watos-validation-cases/1 or /2 file")
    p.add_argument("--leave-one-source-out", action="store_true",
                   help="also recalibrate without each source in turn and predict it (the error on unseen runs)")
    add_csv_flag(p, "every case with its prediction and measurement")
    p.add_argument("--json", action="store_true", help="print one JSON object (sorted keys)")
    return p


def run(args: argparse.Namespace) -> int:
    import watos
    from watos.report.csv_rows import VALIDATE_COLUMNS, validate_rows, write_csv
    from watos.report.tables import print_validate

    with activity(f"predicting the cases of {args.cases}") as shown:  # leave-one-source-out refits take minutes
        result = watos.validate(args.cases, leave_one_source_out=args.leave_one_source_out, progress=shown.say)
    if args.csv:
        write_csv(args.csv, VALIDATE_COLUMNS, validate_rows(result))
    if args.json:
        print(json.dumps(result, sort_keys=True))
    else:
        print_validate(result, args.cases)
    return 0
