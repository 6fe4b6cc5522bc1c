"""One training step as a Chrome trace (chrome://tracing, Perfetto; times in microseconds).

One process per die (pid = die id) with threads 0 compute, 1 links (transfers leaving the die), 2 DMA, and
a DRAM counter. Every pipeline event of a stage shows on every die of that stage.
"""
from __future__ import annotations

import json
from pathlib import Path

THREADS = {0: "compute", 1: "links", 2: "DMA"}
US = 1e6  # trace timestamps are microseconds


def _span(pid: int, tid: int, name: str, cat: str, start_s: float, dur_s: float, args: dict) -> dict:
    return {"ph": "X", "pid": pid, "tid": tid, "name": name, "cat": cat,
            "ts": start_s * US, "dur": dur_s * US, "args": args}


def _die_id(report: dict, cell: list[int]) -> int:
    return cell[0] * report["mesh"]["cols"] + cell[1]


def _metadata(die: dict) -> list[dict]:
    pid = die["die"]
    process = {"ph": "M", "pid": pid, "tid": 0, "name": "process_name",
               "args": {"name": f"die {pid} ({die['row']},{die['col']})"}}
    threads = [{"ph": "M", "pid": pid, "tid": tid, "name": "thread_name", "args": {"name": name}}
               for tid, name in THREADS.items()]
    memory = {"ph": "C", "pid": pid, "tid": 0, "name": "DRAM", "ts": 0.0,
              "args": {"dram_used_gb": die["dram_used_gb"], "dram_capacity_gb": die["dram_capacity_gb"]}}
    return [process, *threads, memory]


def _compute(timeline: dict) -> list[dict]:
    events = timeline["events"]
    interleaved = any(e["chunk"] for e in events)
    spans = []
    for e in events:
        name = f"{'F' if e['kind'] == 'fwd' else 'B'}{e['micro_batch']}" + (f".c{e['chunk']}" if interleaved else "")
        args = {"micro_batch": e["micro_batch"], "chunk": e["chunk"], "stage": e["stage"]}
        spans += [_span(die, 0, name, "compute", e["start_s"], e["dur_s"], args)
                  for die in timeline["stage_dies"][str(e["stage"])]]
    return spans


def chrome_trace(report: dict) -> dict:
    """The report's step as a Chrome trace-event document (times in microseconds)."""
    timeline = report["timeline"]
    events = [m for die in report["dies"] for m in _metadata(die)]
    events += _compute(timeline)
    events += [_span(_die_id(report, link["src"]), 1, link["name"], "link", link["start_s"], link["dur_s"],
                     {"dst": link["dst"]}) for link in timeline["links"]]
    events += [_span(dma["die"], 2, dma["name"], "dma", dma["start_s"], dma["dur_s"], {})
               for dma in timeline["dma"]]
    return {"traceEvents": events, "displayTimeUnit": "ms"}


def write_chrome_trace(report: dict, path: str | Path) -> None:
    """Write :func:`chrome_trace` as JSON (sorted keys; ValueError on a NaN or infinite number)."""
    with open(path, "w") as f:
        json.dump(chrome_trace(report), f, sort_keys=True, allow_nan=False)
        f.write("\n")
