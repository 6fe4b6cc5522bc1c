"""The sweep's infrastructure: the crash-safe result store, Pareto fronts, executors."""
from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time

import pytest
from conftest import FIXTURES
from fixtures.explore_fns import fail_on_three, square
from fixtures.store_worker import META, record
from hypothesis import given
from hypothesis import strategies as st

from watos import WatosError
from watos.exploration.executors import _pipeline, run_all
from watos.exploration.pareto import pareto_front
from watos.exploration.store import FORMAT, ResultStore, point_key
from watos.report.pareto_picture import write_pareto_png

# store ------------------------------------------------------------------------------


def test_store_round_trip(tmp_path):
    path = tmp_path / "sweep" / "points.jsonl"
    store = ResultStore(path, meta={"model": "llama3-8b"})
    store.append("a", {"tokens_per_s": 1.5, "dies": [4, 4]})
    store.append("b", {"tokens_per_s": None})
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines[0] == {"format": FORMAT, "meta": {"model": "llama3-8b"}}
    assert lines[1:] == [{"key": "a", "record": {"tokens_per_s": 1.5, "dies": [4, 4]}},
                         {"key": "b", "record": {"tokens_per_s": None}}]
    again = ResultStore(path, meta={"model": "llama3-8b"})
    records = {"a": lines[1]["record"], "b": lines[2]["record"]}
    assert again.done() == store.done() == records


def test_point_key_is_stable():
    assert point_key({"rows": 4, "cols": 8}) == point_key({"cols": 8, "rows": 4})
    assert point_key({"rows": 4, "cols": 8}) != point_key({"rows": 8, "cols": 4})
    assert len(point_key({})) == 16


def test_store_of_another_sweep(tmp_path):
    path = tmp_path / "points.jsonl"
    ResultStore(path, meta={"model": "llama3-8b", "objective": "throughput"})
    with pytest.raises(WatosError, match=r"another sweep \(meta field 'objective'"):
        ResultStore(path, meta={"model": "llama3-8b", "objective": "cost"})


def test_not_a_store(tmp_path):
    path = tmp_path / "points.jsonl"
    path.write_text('{"hello": 1}\n')
    with pytest.raises(WatosError, match=r"points.jsonl:1: not a watos explore store"):
        ResultStore(path)


def test_store_resume_skips_done(tmp_path):
    path = tmp_path / "points.jsonl"
    points = [{"x": x} for x in range(6)]
    store = ResultStore(path)
    for point in points[:4]:
        store.append(point_key(point), square(point))
    resumed = ResultStore(path)
    todo = [p for p in points if point_key(p) not in resumed.done()]
    assert todo == points[4:]
    for point in todo:
        resumed.append(point_key(point), square(point))
    assert ResultStore(path).done() == {point_key(p): square(p) for p in points}


@pytest.mark.parametrize("leftover", [b'{"key": "b", "rec', b"\0\0\0\n"], ids=["partial", "garbled"])
def test_a_broken_last_line_is_dropped_and_truncated(tmp_path, leftover):
    """A partial last line, or a garbled one that ends in a newline, is what a kill leaves: dropped,
    truncated away, and the next append starts on a clean line."""
    path = tmp_path / "points.jsonl"
    ResultStore(path).append("a", {"v": 1})
    whole = path.read_bytes()
    with open(path, "ab") as f:
        f.write(leftover)
    store = ResultStore(path)
    assert store.done() == {"a": {"v": 1}}
    assert path.read_bytes() == whole
    store.append("c", {"v": 3})
    lines = path.read_text().splitlines()[1:]
    assert [json.loads(line)["key"] for line in lines] == ["a", "c"]
    assert ResultStore(path).done() == {"a": {"v": 1}, "c": {"v": 3}}


def test_malformed_middle_line_names_it(tmp_path):
    path = tmp_path / "points.jsonl"
    store = ResultStore(path)
    store.append("a", {"v": 1})
    with open(path, "ab") as f:
        f.write(b"not json\n")
    store.append("b", {"v": 2})
    with pytest.raises(WatosError, match=r"points.jsonl:3: malformed line"):
        ResultStore(path)


def test_duplicate_keys_last_wins(tmp_path):
    path = tmp_path / "points.jsonl"
    store = ResultStore(path)
    store.append("a", {"v": 1})
    store.append("b", {"v": 2})
    store.append("a", {"v": 3})
    assert store.done() == ResultStore(path).done() == {"a": {"v": 3}, "b": {"v": 2}}


def test_store_survives_sigkill(tmp_path):
    """Three SIGKILLs at random moments and restarts: an uninterrupted run's records."""
    path, n = tmp_path / "points.jsonl", 600
    rng = random.Random(2026)

    def worker(seed: int) -> list[str]:
        script = FIXTURES / "store_worker.py"
        return [sys.executable, str(script), str(path), str(n), str(seed)]

    for seed in range(3):
        proc = subprocess.Popen(worker(seed), stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline() == "ready\n"
        time.sleep(rng.uniform(0.05, 0.3))
        assert proc.poll() is None, "the worker finished before it was killed: raise n"
        proc.kill()
        proc.stdout.close()
        assert proc.wait() == -signal.SIGKILL
    assert 0 < len(ResultStore(path, meta=META).done()) < n
    subprocess.run(worker(3), check=True, timeout=60, stdout=subprocess.DEVNULL)
    expected = {point_key({"index": i}): record(i) for i in range(n)}
    assert ResultStore(path, meta=META).done() == expected


# pareto -----------------------------------------------------------------------------

CHIPS = [
    {"name": "a", "tokens_per_s": 10, "cost": 1},
    {"name": "b", "tokens_per_s": 30, "cost": 3},
    {"name": "c", "tokens_per_s": 20, "cost": 3},   # dominated by b
    {"name": "d", "tokens_per_s": 30, "cost": 4},   # dominated by b
    {"name": "e", "tokens_per_s": 50, "cost": 5},
    {"name": "f", "tokens_per_s": 50, "cost": 5},   # ties e: both kept
    {"name": "g", "tokens_per_s": 5, "cost": 0.5},
    {"name": "h", "tokens_per_s": None, "cost": 0.1},
    {"name": "i", "cost": 0.1},
    {"name": "j", "tokens_per_s": float("nan"), "cost": 0.1},
]


def test_pareto_front_by_hand():
    front = pareto_front(CHIPS, maximize="tokens_per_s", minimize="cost")
    assert [p["name"] for p in front] == ["g", "a", "b", "e", "f"]
    assert front[0] is CHIPS[6]


def _dominates(q: dict, p: dict) -> bool:
    return (q["up"] >= p["up"] and q["down"] <= p["down"]
            and (q["up"], q["down"]) != (p["up"], p["down"]))


values = st.one_of(st.none(), st.integers(0, 6), st.floats(0, 6, allow_nan=False))


@given(st.lists(st.fixed_dictionaries({"up": values, "down": values}), max_size=30))
def test_pareto_front_properties(raw):
    points = [{"id": i, **p} for i, p in enumerate(raw)]
    scored = [p for p in points if p["up"] is not None and p["down"] is not None]
    front = pareto_front(points, maximize="up", minimize="down")
    ids = {p["id"] for p in front}
    assert len(ids) == len(front) and ids <= {p["id"] for p in scored}
    assert [p["down"] for p in front] == sorted(p["down"] for p in front)
    for p in front:
        assert not any(_dominates(q, p) for q in scored)
    for p in scored:
        assert p["id"] in ids or any(_dominates(q, p) for q in front)


def test_pareto_png_is_deterministic(tmp_path):
    fronts = [("tokens_per_s", "cost"), ("tokens_per_s", "name_length")]
    points = [{**p, "name_length": len(p["name"]) + i} for i, p in enumerate(CHIPS)]
    first, second = tmp_path / "a.png", tmp_path / "b.png"
    write_pareto_png(points, fronts, first, title="chips")
    write_pareto_png(points, fronts, second, title="chips")
    assert first.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert first.read_bytes() == second.read_bytes()


# executors --------------------------------------------------------------------------

ITEMS = [{"x": x} for x in range(12)]


def _collect(**kwargs) -> dict[int, dict]:
    results: dict[int, dict] = {}
    run_all(square, ITEMS, **kwargs,
            on_result=lambda item, result: results.setdefault(item["x"], result))
    return results


@pytest.mark.parametrize("workers", [1, 2])
def test_local_executor_matches_map(workers):
    assert _collect(workers=workers) == {item["x"]: square(item) for item in ITEMS}


@pytest.mark.parametrize("workers", [1, 2])
def test_local_executor_raises_fn_errors(workers):
    with pytest.raises(WatosError, match=r"^point x=3: no such chip$"):
        run_all(fail_on_three, ITEMS, workers=workers)


def test_pipeline_bounds_in_flight():
    in_flight: set[int] = set()
    peak = 0

    def submit(item: int) -> int:
        nonlocal peak
        in_flight.add(item)
        peak = max(peak, len(in_flight))
        return item

    def harvest(handles: list[int]) -> list[tuple[int, int]]:
        in_flight.remove(min(handles))
        return [(min(handles), 2 * min(handles))]

    results: dict[int, int] = {}
    _pipeline(range(20), 4, submit, harvest, results.__setitem__)
    assert peak == 4 and results == {i: 2 * i for i in range(20)}


def test_bad_executor_and_workers():
    with pytest.raises(WatosError, match=r"--executor: expected one of local, ray"):
        run_all(square, ITEMS, executor="slurm")
    with pytest.raises(WatosError, match=r"--workers: expected at least 1"):
        run_all(square, ITEMS, workers=0)


def test_ray_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    with pytest.raises(WatosError, match=r"pip install 'watos\[ray\]'"):
        run_all(square, ITEMS, executor="ray")


def test_ray_executor(monkeypatch):
    pytest.importorskip("ray")
    monkeypatch.setenv("PYTHONPATH", str(FIXTURES.parent))  # workers import fixtures.*
    expected = {item["x"]: square(item) for item in ITEMS}
    assert _collect(executor="ray", workers=2) == expected
    with pytest.raises(WatosError, match=r"^point x=3: no such chip$"):
        run_all(fail_on_three, ITEMS, executor="ray", workers=2)
