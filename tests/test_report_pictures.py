"""Pipeline timelines (watos.report.timeline) and the mesh picture's data (watos.report.pictures); the outputs
of real runs are tested in test_report_outputs.py."""
import itertools
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from watos.report.pictures import mesh_figure_data
from watos.report.timeline import makespan, pipeline_events

TF, TB = 1.0, 2.0


def check_schedule(events: list[dict], p: int, m: int, v: int, p2p: float) -> None:
    """One forward and one backward per (stage, micro-batch, chunk); inputs there before an op starts;
    one op at a time per stage; events sorted by (start, stage)."""
    ops = Counter((e["kind"], e["stage"], e["micro_batch"], e["chunk"]) for e in events)
    assert ops == Counter({(k, s, i, c): 1 for k in ("fwd", "bwd") for s in range(p) for i in range(m) for c in range(v)})
    end = {(e["kind"], e["micro_batch"], e["chunk"] * p + e["stage"]): e["start_s"] + e["dur_s"] for e in events}
    last = p * v - 1
    for e in events:
        k, i = e["chunk"] * p + e["stage"], e["micro_batch"]
        if e["kind"] == "fwd" and k > 0:
            producer = ("fwd", i, k - 1)
        elif e["kind"] == "bwd":
            producer = ("fwd", i, k) if k == last else ("bwd", i, k + 1)
        else:
            continue
        hop = p2p if producer[2] % p != e["stage"] else 0.0
        assert e["start_s"] >= end[producer] + hop - 1e-9
    for s in range(p):
        mine = sorted((e["start_s"], e["start_s"] + e["dur_s"]) for e in events if e["stage"] == s)
        assert all(t1 <= t2 + 1e-9 for (_, t1), (t2, _) in itertools.pairwise(mine))
    assert [(e["start_s"], e["stage"]) for e in events] == sorted((e["start_s"], e["stage"]) for e in events)


@pytest.mark.parametrize("kind", ["1f1b", "gpipe"])
@pytest.mark.parametrize("p, m", [(1, 1), (1, 4), (2, 1), (3, 2), (4, 4), (4, 9), (8, 16)])
def test_equal_stages_take_m_plus_p_minus_1_slots(kind, p, m):
    events = pipeline_events([TF] * p, [TB] * p, m, kind=kind)
    assert makespan(events) == pytest.approx((m + p - 1) * (TF + TB), rel=1e-9)
    check_schedule(events, p, m, 1, 0.0)


@pytest.mark.parametrize("p, v, m", [(2, 2, 2), (2, 2, 6), (4, 2, 4), (4, 2, 8), (4, 3, 12), (3, 4, 9)])
def test_interleaving_divides_the_bubble_by_v(p, v, m):
    events = pipeline_events([TF] * p, [TB] * p, m, interleave=v, kind="interleaved")
    assert makespan(events) == pytest.approx((m + (p - 1) / v) * (TF + TB), rel=1e-9)
    check_schedule(events, p, m, v, 0.0)
    assert {e["dur_s"] for e in events} == {TF / v, TB / v}


def test_1f1b_order_by_hand():
    """Two stages, three micro-batches: stage 0 warms up with one forward, then alternates."""
    order = [(e["kind"][0], e["micro_batch"]) for e in pipeline_events([TF] * 2, [TB] * 2, 3) if e["stage"] == 0]
    assert order == [("f", 0), ("f", 1), ("b", 0), ("f", 2), ("b", 1), ("b", 2)]


def test_p2p_delays_each_hop():
    """Equal stages, one micro-batch: the path crosses p − 1 links forward and p − 1 back."""
    p, p2p = 4, 0.25
    assert makespan(pipeline_events([TF] * p, [TB] * p, 1, p2p_s=p2p)) == pytest.approx(p * (TF + TB) + 2 * (p - 1) * p2p)


@pytest.mark.parametrize("args, kwargs", [
    (([1.0] * 4, [2.0] * 4, 6), {"interleave": 2, "kind": "interleaved"}),
    (([1.0] * 2, [2.0] * 2, 2), {"interleave": 2, "kind": "1f1b"}),
    (([1.0] * 2, [2.0] * 3, 2), {}),
    (([1.0, float("nan")], [2.0] * 2, 2), {}),
    (([1.0] * 2, [2.0] * 2, 2), {"kind": "zb"}),
])
def test_bad_arguments_are_one_line_errors(args, kwargs):
    with pytest.raises(ValueError, match=r"^pipeline: [^\n]+$"):
        pipeline_events(*args, **kwargs)


@settings(max_examples=60, deadline=None)
@given(st.data(), st.integers(1, 5), st.integers(1, 3), st.sampled_from(["gpipe", "1f1b", "interleaved"]),
       st.floats(0.0, 0.5))
def test_unequal_stages_respect_the_lower_bounds(data, p, groups, kind, p2p):
    v = data.draw(st.integers(1, 3)) if kind == "interleaved" else 1
    m = groups * p if v > 1 else data.draw(st.integers(1, 7))
    times = st.lists(st.floats(0.01, 5.0), min_size=p, max_size=p)
    fwd, bwd = data.draw(times), data.draw(times)
    events = pipeline_events(fwd, bwd, m, p2p_s=p2p, interleave=v, kind=kind)
    check_schedule(events, p, m, v, p2p)
    span = makespan(events)
    assert span >= max(m * (f + b) for f, b in zip(fwd, bwd)) - 1e-9
    assert span >= sum(fwd) + sum(bwd) + 2 * (p - 1) * p2p - 1e-9


@pytest.fixture
def report() -> dict:
    """A 2x3 mesh: stage 0 on dies 0 and 3 (tensor parallel), stage 1 on dies 1 and 4, column 2 idle."""
    rows, cols = 2, 3
    stage_of = {0: 0, 3: 0, 1: 1, 4: 1}
    dies = [{"die": r * cols + c, "row": r, "col": c, "stage": stage_of.get(r * cols + c),
             "role": f"stage {stage_of[r * cols + c]} tp {r} dp 0" if r * cols + c in stage_of else "idle",
             "dram_used_gb": 10.0 + r * cols + c, "dram_capacity_gb": 96.0, "compute_busy": 0.1 * (r * cols + c),
             "borrowed_out_gb": 0.0, "borrowed_in_gb": 0.0} for r in range(rows) for c in range(cols)]
    links = [{"src": [0, 0], "dst": [0, 1], "bytes": 1e9, "busy": 0.4},
             {"src": [0, 0], "dst": [1, 0], "bytes": 2e9, "busy": 0.7},
             {"src": [0, 1], "dst": [0, 0], "bytes": 1e9, "busy": 0.25},
             {"src": [1, 1], "dst": [1, 0], "bytes": 1e9, "busy": 0.05}]
    return {"target": "toy-2x3", "mesh": {"rows": rows, "cols": cols}, "dies": dies, "links": links,
            "plan": {"borrow": [{"sender": 1, "helper": 0, "gb": 2.0}]}}


def test_mesh_numbers_match_the_report(report):
    data = mesh_figure_data(report)
    for d in report["dies"]:
        at = d["row"], d["col"]
        assert data["dram_used_gb"][at] == d["dram_used_gb"]
        assert data["compute_busy"][at] == pytest.approx(100 * d["compute_busy"])
        assert data["stage"][at] == (-1 if d["stage"] is None else d["stage"])
        outgoing = [link["busy"] for link in report["links"] if tuple(link["src"]) == at]
        assert data["link_load"][at] == pytest.approx(100 * max(outgoing, default=0.0))
    np.testing.assert_allclose(data["link_load"], [[70, 25, 0], [0, 5, 0]])
    assert data["borrow"] == [((0.5, 1.0), (0.5, 0.0), 2.0)]  # from the centre of stage 1's dies to stage 0's


def test_mesh_needs_one_die_per_cell(report):
    report["dies"].pop()
    with pytest.raises(ValueError, match="5 dies for a 2x3 mesh"):
        mesh_figure_data(report)
