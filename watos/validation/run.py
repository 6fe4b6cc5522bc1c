"""``watos validate``: predict every case of a validation file and say what the predictions say."""
from __future__ import annotations

from collections.abc import Callable

from watos.hardware.stack import load_stack
from watos.hardware.target import load_target
from watos.validation.cases import load_cases
from watos.validation.predict import Hardware, Stacks, predict
from watos.validation.report import ValidationResult, summarise


def validate(path: str, *, leave_one_source_out: bool = False, hardware: Hardware = load_target,
             stacks: Stacks = load_stack, progress: Callable[[str], None] | None = None) -> ValidationResult:
    """Predict every case of ``path`` (never aborting on one: :mod:`watos.validation.predict`) and summarise;
    ``leave_one_source_out``: also recalibrate without each source in turn and predict it
    (:func:`watos.validation.calibrate.leave_one_source_out`)."""
    cases = load_cases(path)
    result = summarise([predict(case, hardware, stacks) for case in cases], cases)
    if leave_one_source_out:
        from watos.validation.calibrate import leave_one_source_out as held_out

        result["leave_one_source_out"] = held_out(cases, progress=progress)
    return result
