"""The per-device picture of one costed plan: what ``report.json`` holds next to the search results, and
what ``trace.json``, ``mesh.png`` and ``report.html`` draw (:mod:`watos.report.chrome_trace`,
:mod:`watos.report.pictures`, :mod:`watos.report.html`).

Per device (die of a mesh, GPU of a switched target): its stage and role, DRAM used (the stage's memory
with borrowed checkpoints moved to the helper) against the DRAM capacity and against what a plan may use
(DRAM + SRAM), compute busy (the stage's compute and recompute over the step). Per directed mesh link: the
bytes one step sends over it — every TP/CP collective of every block of every stage (re-run forward
collectives counted under full recomputation), the data-parallel gradient collectives, the pipeline sends
and the Sender/Helper checkpoint traffic, each routed as :mod:`watos.network.collectives` routes it — split
into the per-micro-batch and the once-per-step share, and its busy fraction (bytes / (bandwidth · step)).
The timeline is :func:`watos.report.step.step_timeline`, with counters of the busiest links' load.
"""
from __future__ import annotations

from collections import defaultdict

from watos.cost.borrowing import checkpoint_traffic
from watos.cost.pipeline import in_flight, stage_segments
from watos.hardware.target import Mesh2D, Target
from watos.ir import Graph, OpKind, Phase
from watos.network.collectives import link_loads
from watos.plan import Plan
from watos.report.labels import device_noun
from watos.report.step import step_timeline

BUSIEST_LINKS = 8
"""How many of the busiest links get a load counter in the trace."""


def build_report(graph: Graph, target: Target, plan: Plan) -> dict:
    """Devices, links, stages and the step's timeline of a costed graph (see module docstring)."""
    cost = graph.analyses["cost"]
    mesh = target.topology
    rows, cols = (mesh.rows * target.wafers, mesh.cols) if isinstance(mesh, Mesh2D) else (1, plan.devices)
    dies_of_rank = graph.analyses["placement"].dies
    group = plan.tp * plan.cp
    stage_of_die: dict[int, int] = {}
    roles: dict[int, str] = {}
    for rank, die in enumerate(dies_of_rank):
        stage, replica, position = rank // (group * plan.dp), (rank // group) % plan.dp, rank % group
        stage_of_die[die] = stage
        roles[die] = f"stage {stage} tp {position % plan.tp} cp {position // plan.tp} dp {replica}"
    stages = cost["stages"]
    step = cost["step_time_s"]
    dies = []
    for die in range(rows * cols):
        s = stage_of_die.get(die)
        memory = stages[min(s, len(stages) - 1)]["memory"] if s is not None else {}
        busy = (plan.micro_batches * stages[s].get("compute_per_microbatch_s", 0.0) / step
                if s is not None and s < len(stages) else (1.0 - _exposed(cost) if s is not None else 0.0))
        dies.append({"die": die, "row": die // cols, "col": die % cols, "stage": s, "role": roles.get(die, "idle"),
                     "dram_used_gb": memory.get("total_bytes", 0.0) / 1e9,
                     "dram_capacity_gb": target.device.dram_capacity_gb,
                     "compute_busy": min(1.0, busy),
                     "borrowed_out_gb": memory.get("borrowed_out_bytes", 0.0) / 1e9,
                     "borrowed_in_gb": memory.get("borrowed_in_bytes", 0.0) / 1e9})
    per_stage = group * plan.dp
    stage_dies = {str(s): sorted(dies_of_rank[s * per_stage:(s + 1) * per_stage]) for s in range(len(stages))}
    timeline = step_timeline(cost, plan, stage_dies)
    phases = _link_bytes(graph, target, plan) if isinstance(mesh, Mesh2D) and plan.strategy == "3d" else {}
    bandwidth = (mesh.link_bandwidth_gb_per_s_per_direction * mesh.links_per_edge * 1e9
                 if isinstance(mesh, Mesh2D) else 1.0)
    links = [{"src": [a, b], "dst": [c, d], "bytes": sum(parts), "microbatch_bytes": parts[0], "step_bytes": parts[1],
              "busy": min(1.0, sum(parts) / (bandwidth * step))} for (a, b, c, d), parts in sorted(phases.items())]
    timeline["links"] = _link_counters(links, timeline, stages)
    return {"model": graph.model.name, "target": target.name, "target_description": target.description,
            "plan": plan.model_dump(mode="json"), "device_noun": device_noun(target),
            "mesh": {"rows": rows, "cols": cols, "wafers": target.wafers}, "network": _network(target),
            "memory_capacity_gb": cost["memory_capacity_bytes_per_device"] / 1e9,
            "dram_capacity_gb": target.device.dram_capacity_gb, "sram_capacity_gb": target.device.sram_capacity_mb / 1e3,
            "step_time_s": step, "breakdown_s": cost["breakdown_s"], "stages": [_stage_row(st) for st in stages],
            "dies": dies, "links": links, "timeline": timeline}


def _network(target: Target) -> dict:
    """The topology as the pictures draw it: a mesh's link bandwidth and wafer-to-wafer links, or a switched
    target's tiers."""
    net = target.topology
    if isinstance(net, Mesh2D):
        w2w = target.systems.bandwidth_gb_per_s_per_direction if target.systems and target.wafers > 1 else None
        return {"kind": "mesh2d", "link_gb_per_s_per_direction": net.link_bandwidth_gb_per_s_per_direction
                * net.links_per_edge, "wafer_link_gb_per_s_per_direction": w2w}
    return {"kind": "switched", "tiers": [{"name": t.name, "size": t.size,
                                           "gb_per_s_per_direction": t.bandwidth_gb_per_s_per_direction}
                                          for t in net.tiers]}


def _stage_row(stage: dict) -> dict:
    """One stage's time per micro-batch and memory per device, for the report's tables."""
    memory = stage["memory"]
    return {"stage": stage["stage"], "recompute": stage["recompute"],
            "time_per_microbatch_s": stage["time_per_microbatch_s"], "parts_s": stage.get("parts_s", {}),
            "dp_exposed_s": stage.get("dp_exposed_s", 0.0), "optimizer_s": stage.get("optimizer_s", 0.0),
            "memory_gb": {k.removesuffix("_bytes"): v / 1e9 for k, v in memory.items() if k.endswith("_bytes")}}


def _exposed(cost: dict) -> float:
    breakdown = cost["breakdown_s"]
    return max(0.0, 1.0 - (breakdown["compute"] + breakdown["recompute"]) / cost["step_time_s"])


def _link_bytes(graph: Graph, target: Target, plan: Plan) -> dict[tuple, tuple[float, float]]:
    """(per-micro-batch bytes, once-per-step bytes) per directed link over one step (module docstring)."""
    groups = graph.analyses["sharding"].groups
    dies = graph.analyses["placement"].dies
    layout = graph.analyses["pipeline"]
    policies = graph.analyses["recompute"].policy
    per_stage = plan.tp * plan.cp * plan.dp
    load: dict[tuple, list[float]] = defaultdict(lambda: [0.0, 0.0])

    def add(op: str, nbytes: float, members: list[list[int]], runs: float, once: bool = False) -> None:
        if nbytes > 0 and runs > 0 and members and len(members[0]) > 1:
            for link, b in link_loads(target, op, nbytes, members, dies).items():
                load[link][int(once)] += b * runs

    for s in range(plan.pp):
        counts = dict(stage_segments(layout, s))
        for op in graph.ops:
            where = str(op.block) if op.block is not None else op.attrs.get("segment", "post")
            if op.kind is not OpKind.COLLECTIVE or not counts.get(where):
                continue
            name = op.attrs["group"]
            members = [g for g in groups[name] if g[0] // per_stage == s]
            rerun = 2 if op.phase is Phase.FORWARD and op.block is not None and policies[s] == "full" else 1
            once = bool(op.attrs.get("per_step"))
            runs = counts[where] if once else plan.micro_batches * counts[where] * rerun
            add(op.target, op.attrs["bytes"], members, runs, once)
    boundaries = [[g[s], g[s + 1]] for g in groups["pp"] for s in range(plan.pp - 1)]
    add("p2p", layout.p2p_bytes, boundaries, 2 * plan.interleave * plan.micro_batches)
    for b in plan.borrow:
        flight = in_flight(plan.pipeline_kind, plan.pp, plan.interleave, plan.micro_batches, b.sender)
        traffic = checkpoint_traffic(b.gb * 1e9, flight)
        add("p2p", traffic, [[g[b.sender], g[b.helper]] for g in groups["pp"]], plan.micro_batches)
    return {link: (parts[0], parts[1]) for link, parts in load.items()}


def _link_counters(links: list[dict], timeline: dict, stages: list[dict]) -> list[dict]:
    """GB/s on each of the busiest links over the step: per-micro-batch bytes spread over the pipeline, per-step
    bytes over the data-parallel window (the longest stage's collectives, ending where their exposed part ends)."""
    end = timeline["pipeline_end_s"]
    if not links or end <= 0:
        return []
    comm = max(st.get("dp_comm_s", 0.0) for st in stages)
    dp_end = end + max(st.get("dp_exposed_s", 0.0) for st in stages)
    dp_start = max(0.0, dp_end - comm)
    counters = []
    for link in sorted(links, key=lambda x: (-x["bytes"], x["src"], x["dst"]))[:BUSIEST_LINKS]:
        phases = [(0.0, end, link["microbatch_bytes"] / end)]  # (start, stop, bytes/s)
        if link["step_bytes"] > 0 and dp_end > dp_start:
            phases.append((dp_start, dp_end, link["step_bytes"] / (dp_end - dp_start)))
        times = sorted({t for start, stop, _ in phases for t in (start, stop)})
        samples = [[t, sum(rate for start, stop, rate in phases if start <= t < stop) / 1e9] for t in times]
        counters.append({"src": link["src"], "dst": link["dst"], "gb_per_s": samples})
    return counters
