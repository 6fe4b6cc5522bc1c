"""What a validation run says: the error over a file, per framework and per hardware class, the error of
the memory predicted where a source measured it, and whether the plans one source measured of one model on
one machine are predicted in the measured order (a strategy search needs the order right more than any
single number)."""
from __future__ import annotations

from collections import defaultdict
from typing import Any, TypedDict


class ErrorSummary(TypedDict):
    """Cases counted, and their mean and largest absolute relative error."""

    cases: int
    mean_abs_error: float
    max_abs_error: float


def error_summary(results: list[dict[str, Any]]) -> ErrorSummary:
    """The errors of the results that have one (a case with no target available has none)."""
    errors = [abs(r["error"]) for r in results if "error" in r]
    return {"cases": len(errors), "mean_abs_error": sum(errors) / len(errors) if errors else 0.0,
            "max_abs_error": max(errors, default=0.0)}


def grouped(results: list[dict[str, Any]], key: str) -> dict[str, ErrorSummary]:
    """:func:`error_summary` per value of ``key`` (``framework``, ``hardware``)."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in results:
        if "error" in r:
            groups[str(r[key])].append(r)
    return {name: error_summary(members) for name, members in sorted(groups.items())}


def memory_errors(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Predicted against measured peak memory per device, where the source measured it."""
    return [{"id": r["id"], "predicted_gib": r["predicted_peak_memory_gib_per_device"],
             "measured_gib": r["measured_peak_memory_gib_per_device"],
             "error": r["predicted_peak_memory_gib_per_device"] / r["measured_peak_memory_gib_per_device"] - 1}
            for r in results if r.get("measured_peak_memory_gib_per_device") and "error" in r]


def rankings(results: list[dict[str, Any]], cases: list[Any]) -> list[dict[str, Any]]:
    """For every source that measured several plans of one model on one machine (same target and devices),
    the measured and predicted orders (fastest first) and whether they agree."""
    by_id = {r["id"]: r for r in results if "error" in r}
    groups: dict[tuple, list[str]] = defaultdict(list)
    labels = {case.id: case.model.label for case in cases}
    for case in cases:
        if case.id in by_id:
            groups[(case.source, case.model_key, case.system.target, case.system.devices)].append(case.id)
    found = []
    for (source, model, target, devices), ids in sorted(groups.items()):
        if len(ids) < 2:
            continue
        measured = sorted(ids, key=lambda i: -by_id[i]["measured_tokens_per_s_per_device"])
        predicted = sorted(ids, key=lambda i: -by_id[i]["predicted_tokens_per_s_per_device"])
        found.append({"source": source, "model": labels[ids[0]], "target": target, "devices": devices,
                      "measured_order": measured, "predicted_order": predicted, "agrees": measured == predicted})
    return found


class ValidationResult(TypedDict, total=False):
    """Every case's prediction (id, source, framework, hardware class, status, predicted and measured tokens/s
    per device, relative error, the knobs chosen for those the source left null, predicted and measured
    peak memory in GiB per device, MFU, and any note); the errors over the cases predicted (a case no plan
    fits counts as −100 %), per framework and per hardware class; the memory errors; the plan rankings per
    source; how many cases had no target; and, with leave-one-source-out, each source predicted by a
    calibration that never saw it."""

    cases: list[dict[str, Any]]
    mean_abs_error: float
    max_abs_error: float
    predicted: int
    not_available: int
    misses: int
    by_framework: dict[str, ErrorSummary]
    by_hardware: dict[str, ErrorSummary]
    memory: list[dict[str, Any]]
    rankings: list[dict[str, Any]]
    leave_one_source_out: dict[str, Any]


def summarise(results: list[dict[str, Any]], cases: list[Any]) -> ValidationResult:
    """The :class:`ValidationResult` of a file's predictions."""
    overall = error_summary(results)
    return {"cases": results, "mean_abs_error": overall["mean_abs_error"], "max_abs_error": overall["max_abs_error"],
            "predicted": overall["cases"], "not_available": sum(r["status"] == "target not available" for r in results),
            "misses": sum(r["status"] in ("does not fit", "failed") for r in results),
            "by_framework": grouped(results, "framework"), "by_hardware": grouped(results, "hardware"),
            "memory": memory_errors(results), "rankings": rankings(results, cases)}
