"""The per-die picture of one costed plan: what ``report.json`` holds next to the search results, and
what ``trace.json`` and ``mesh.png`` draw (:mod:`watos.report.pictures`).

Per die: its stage and role, DRAM used (the stage's memory with borrowed checkpoints moved to the
helper), compute busy (the stage's compute and recompute over the step). Per directed mesh link: the
bytes one step sends over it — every TP/CP collective of every block of every stage (re-run forward
collectives counted under full recomputation), the data-parallel gradient collectives, the pipeline
sends and the Sender/Helper checkpoint traffic, each routed as :mod:`watos.network.collectives` routes it — and its
busy fraction (bytes / (bandwidth · step)). The timeline is the pipeline schedule of one step
(:func:`watos.report.timeline.pipeline_events`) with the checkpoint DMA of Sender dies.
"""
from __future__ import annotations

from collections import defaultdict

from watos.cost.borrowing import checkpoint_traffic
from watos.cost.pipeline import in_flight, stage_segments
from watos.hardware.target import Mesh2D, Target
from watos.ir import Graph, OpKind, Phase
from watos.network.collectives import link_loads
from watos.plan import Plan
from watos.report.timeline import pipeline_events


def build_report(graph: Graph, target: Target, plan: Plan) -> dict:
    """Dies, links and the step's timeline of a costed graph (see module docstring)."""
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
    capacity = cost["memory_capacity_bytes_per_device"] / 1e9
    dies = []
    for die in range(rows * cols):
        s = stage_of_die.get(die)
        memory = stages[min(s, len(stages) - 1)]["memory"] if s is not None else {}
        busy = (plan.micro_batches * stages[s].get("compute_per_microbatch_s", 0.0) / step
                if s is not None and s < len(stages) else (1.0 - _exposed(cost) if s is not None else 0.0))
        dies.append({"die": die, "row": die // cols, "col": die % cols, "stage": s, "role": roles.get(die, "idle"),
                     "dram_used_gb": memory.get("total_bytes", 0.0) / 1e9, "dram_capacity_gb": capacity,
                     "compute_busy": min(1.0, busy),
                     "borrowed_out_gb": memory.get("borrowed_out_bytes", 0.0) / 1e9,
                     "borrowed_in_gb": memory.get("borrowed_in_bytes", 0.0) / 1e9})
    # Several wafers are drawn stacked, each with its own D2D links (wafer-to-wafer links are not drawn).
    links = _link_bytes(graph, target, plan) if isinstance(mesh, Mesh2D) and plan.strategy == "3d" else {}
    bandwidth = (mesh.link_bandwidth_gb_per_s_per_direction * mesh.links_per_edge * 1e9
                 if isinstance(mesh, Mesh2D) else 1.0)
    return {"target": target.name, "mesh": {"rows": rows, "cols": cols, "wafers": target.wafers}, "step_time_s": step,
            "dies": dies,
            "links": [{"src": [a, b], "dst": [c, d], "bytes": nbytes, "busy": min(1.0, nbytes / (bandwidth * step))}
                      for (a, b, c, d), nbytes in sorted(links.items())],
            "timeline": _timeline(cost, plan, dies_of_rank, group)}


def _exposed(cost: dict) -> float:
    breakdown = cost["breakdown_s"]
    return max(0.0, 1.0 - (breakdown["compute"] + breakdown["recompute"]) / cost["step_time_s"])


def _link_bytes(graph: Graph, target: Target, plan: Plan) -> dict[tuple, float]:
    """Bytes per directed link over one step (module docstring)."""
    groups = graph.analyses["sharding"].groups
    dies = graph.analyses["placement"].dies
    layout = graph.analyses["pipeline"]
    policies = graph.analyses["recompute"].policy
    per_stage = plan.tp * plan.cp * plan.dp
    load: dict[tuple, float] = defaultdict(float)

    def add(op: str, nbytes: float, members: list[list[int]], runs: float) -> None:
        if nbytes > 0 and runs > 0 and members and len(members[0]) > 1:
            for link, b in link_loads(target, op, nbytes, members, dies).items():
                load[link] += b * runs

    for s in range(plan.pp):
        counts = dict(stage_segments(layout, s))
        for op in graph.ops:
            where = str(op.block) if op.block is not None else op.attrs.get("segment", "post")
            if op.kind is not OpKind.COLLECTIVE or not counts.get(where):
                continue
            name = op.attrs["group"]
            members = [g for g in groups[name] if g[0] // per_stage == s]
            rerun = 2 if op.phase is Phase.FORWARD and op.block is not None and policies[s] == "full" else 1
            runs = counts[where] if op.attrs.get("per_step") else plan.micro_batches * counts[where] * rerun
            add(op.target, op.attrs["bytes"], members, runs)
    boundaries = [[g[s], g[s + 1]] for g in groups["pp"] for s in range(plan.pp - 1)]
    add("p2p", layout.p2p_bytes, boundaries, 2 * plan.interleave * plan.micro_batches)
    for b in plan.borrow:
        flight = in_flight(plan.pipeline_kind, plan.pp, plan.interleave, plan.micro_batches, b.sender)
        traffic = checkpoint_traffic(b.gb * 1e9, flight)
        add("p2p", traffic, [[g[b.sender], g[b.helper]] for g in groups["pp"]], plan.micro_batches)
    return dict(load)


def _timeline(cost: dict, plan: Plan, dies_of_rank: list[int], group: int) -> dict:
    stages = cost["stages"]
    per_stage = group * plan.dp
    stage_dies = {str(s): sorted(dies_of_rank[s * per_stage:(s + 1) * per_stage]) for s in range(len(stages))}
    if plan.strategy != "3d":
        return {"stage_dies": stage_dies, "events": [], "dma": [], "links": []}
    forward = [st["forward_s"] for st in stages]
    backward = [st["time_per_microbatch_s"] - st["forward_s"] for st in stages]
    events = pipeline_events(forward, backward, plan.micro_batches, interleave=plan.interleave, kind=plan.pipeline_kind)
    dma = []
    for e in events:
        transfer = stages[e["stage"]].get("borrow_transfer_s", 0.0) / 2
        if transfer <= 0:
            continue
        start = e["start_s"] + e["dur_s"] if e["kind"] == "fwd" else max(0.0, e["start_s"] - transfer)
        name = "checkpoint → helper" if e["kind"] == "fwd" else "checkpoint ← helper"
        dma += [{"die": die, "name": name, "start_s": start, "dur_s": transfer} for die in stage_dies[str(e["stage"])]]
    return {"stage_dies": stage_dies, "events": events, "dma": dma, "links": []}
