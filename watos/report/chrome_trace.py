"""One training step as a Chrome trace (chrome://tracing, ui.perfetto.dev; times in microseconds).

Process 0 is the step: one span over the whole step, the stack's time per step, and a counter per busiest
link (GB/s). Process ``1 + s`` is pipeline stage ``s`` (its dies named in the process name), with threads
0 compute (every micro-batch's forward ``F<i>`` and backward ``B<i>``, ``.c<k>`` for model chunk k under
interleaving, with their parts nested inside: recompute, exposed TP/CP/EP collectives, ...), 1 data
parallel (the gradient reduce / parameter gather, what it overlaps, the optimizer step), 2 checkpoint DMA
(Sender/Helper borrowing), and a memory counter (GB per device). The layout is
:func:`watos.report.step.step_timeline`'s.
"""
from __future__ import annotations

import json
from pathlib import Path

from watos.report.step import block_parts

THREADS = {0: "compute", 1: "data parallel + optimizer", 2: "checkpoint DMA"}
US = 1e6  # trace timestamps are microseconds


def _us(seconds: float) -> float:
    """Seconds as trace microseconds, to the nanosecond (keeps a long step's trace small)."""
    return round(seconds * US, 3)


def _span(pid: int, tid: int, name: str, cat: str, start_s: float, dur_s: float, args: dict) -> dict:
    return {"ph": "X", "pid": pid, "tid": tid, "name": name, "cat": cat,
            "ts": _us(start_s), "dur": _us(dur_s), "args": args}


def _name(pid: int, tid: int | None, name: str) -> dict:
    if tid is None:
        return {"ph": "M", "pid": pid, "tid": 0, "name": "process_name", "args": {"name": name}}
    return {"ph": "M", "pid": pid, "tid": tid, "name": "thread_name", "args": {"name": name}}


def _counter(pid: int, name: str, samples: list[list[float]], key: str) -> list[dict]:
    return [{"ph": "C", "pid": pid, "tid": 0, "name": name, "ts": _us(t), "args": {key: float(value)}}
            for t, value in samples]


def _block_name(block: dict, interleaved: bool) -> str:
    return f"{'F' if block['kind'] == 'fwd' else 'B'}{block['micro_batch']}" + (f".c{block['chunk']}" if interleaved else "")


def _stage_events(stage: dict, noun: str) -> list[dict]:
    pid = 1 + stage["stage"]
    dies = stage["dies"]
    shown = ", ".join(map(str, dies[:8])) + (", ..." if len(dies) > 8 else "")
    events = [_name(pid, None, f"stage {stage['stage']} ({len(dies)} {noun}s: {shown})"),
              *[_name(pid, tid, name) for tid, name in THREADS.items()]]
    interleaved = any(b["chunk"] for b in stage["blocks"])
    for block in stage["blocks"]:
        args = {"micro_batch": block["micro_batch"], "chunk": block["chunk"], "stage": stage["stage"]}
        events.append(_span(pid, 0, _block_name(block, interleaved), block["kind"], block["start_s"], block["dur_s"], args))
        events += [_span(pid, 0, part["name"], "part", part["start_s"], part["dur_s"], {})
                   for part in block_parts(block, stage)]
    events += [_span(pid, 1, span["name"], "data_parallel", span["start_s"], span["dur_s"], span["args"])
               for span in stage["dp"]]
    events += [_span(pid, 2, span["name"], "checkpoint", span["start_s"], span["dur_s"], {}) for span in stage["dma"]]
    return events + _counter(pid, "memory per device (GB)", stage["memory_gb"], "GB")


def chrome_trace(report: dict) -> dict:
    """The report's step as a Chrome trace-event document (times in microseconds; module docstring)."""
    timeline = report["timeline"]
    noun = report.get("device_noun", "die")
    title = f"{report.get('model', '')} on {report['target']}: step {report['step_time_s']:.4g} s".strip()
    events = [_name(0, None, title), _name(0, 0, "step"),
              _span(0, 0, "training step", "step", 0.0, timeline["span_s"], {"step_time_s": report["step_time_s"]})]
    events += [_span(0, 0, span["name"], "step", span["start_s"], span["dur_s"], {}) for span in timeline["step"]]
    for link in timeline.get("links", []):
        (r, c), (r2, c2) = link["src"], link["dst"]
        events += _counter(0, f"link ({r},{c})→({r2},{c2}) GB/s", link["gb_per_s"], "GB/s")
    for stage in timeline["stages"]:
        events += _stage_events(stage, noun)
    return {"traceEvents": events, "displayTimeUnit": "ms",
            "otherData": {"model": report.get("model"), "target": report["target"],
                          "step_time_s": report["step_time_s"]}}


def write_chrome_trace(report: dict, path: str | Path) -> None:
    """Write :func:`chrome_trace` as JSON (sorted keys; ValueError on a NaN or infinite number)."""
    with open(path, "w") as f:
        json.dump(chrome_trace(report), f, sort_keys=True, allow_nan=False)
        f.write("\n")
