"""Faulty wafers: fault maps, the non-robust and robust policies, and the fault study."""
import copy

import pytest

import watos
from watos.errors import WatosError
from watos.hardware.faults import FaultMap
from watos.hardware.target import target_data, target_from_data
from watos.network.faults import parse_rates, random_faults, surviving
from watos.network.placement import crowding, move_off_dead, place
from watos.strategy.faults import fault_study
from watos.strategy.problem import evaluate

LLAMA = dict(model_type="llama", hidden_size=256, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
             num_key_value_heads=4, vocab_size=512, max_position_embeddings=256)


def _wafer(faults=None, rows=4, cols=4):
    data = copy.deepcopy(target_data("watos-config3"))
    data["name"] = "test-faulty"
    data["topology"].update(rows=rows, cols=cols)
    if faults:
        data["faults"] = faults
    return target_from_data(data, "test")


def test_rates_parse_and_bad_rates_name_the_part():
    assert parse_rates("dies=0.2,links=0.1") == (0.2, 0.1)
    assert parse_rates("links=0.3") == (0.0, 0.3)
    for bad in ("cores=0.1", "dies=x", "dies=1.5"):
        with pytest.raises(WatosError, match="--faults"):
            parse_rates(bad)


def test_random_fault_maps_are_seeded():
    target = watos.load_target("watos-config3")
    assert random_faults(target, 0.2, 0.2, seed=3) == random_faults(target, 0.2, 0.2, seed=3)
    assert random_faults(target, 0.2, 0.2, seed=3) != random_faults(target, 0.2, 0.2, seed=4)
    assert random_faults(target, 0.0, 0.0, seed=3).empty


def test_a_die_with_every_link_dead_is_lost_and_a_split_wafer_is_reported():
    corner = _wafer({"dead_links": [[0, 1], [0, 4]]})
    faults, split = surviving(corner)
    assert faults.dead_dies == [0] and faults.dead_links == [] and not split
    halves = _wafer({"dead_links": [[r * 4 + 1, r * 4 + 2] for r in range(4)]})  # columns 0-1 | 2-3
    assert surviving(halves)[1] is False  # two equal halves: the largest holds half the dies
    thirds = _wafer({"dead_dies": [1, 5, 9, 13, 2, 6, 10, 14]})  # only the outer columns are left, apart
    assert surviving(thirds)[1] is False
    assert sorted(surviving(thirds)[0].dead_dies) == [1, 2, 3, 5, 6, 7, 9, 10, 11, 13, 14, 15]


def test_robust_placement_avoids_dead_dies_and_non_robust_moves_their_ranks():
    dead = frozenset({5})
    robust = place("compact", 4, 4, 2, 7, 1, dead=dead)
    assert 5 not in robust and len(set(robust)) == 14
    moved = move_off_dead(list(range(16)), dead, 4, 4)
    assert moved[5] == 1  # the nearest working die (four at one hop: the lowest index)
    assert crowding(moved) == (2, 2.0)
    assert crowding(list(range(16)), FaultMap(degraded={3: 0.5}).compute_fraction) == (1, 2.0)


def test_a_dead_dies_neighbour_carries_twice_the_work():
    """The fault-free plan on 16 dies, die 5 dead, non-robust: die 1 runs ranks 1 and 5, every kernel of the
    synchronous step waits for it, so compute takes twice as long; and it holds both ranks' memory."""
    whole, faulty = _wafer(), _wafer({"dead_dies": [5]})
    problem = watos.make_problem(LLAMA, whole, seq=256, global_batch=16)
    plan = problem.plan(tp=4, pp=4, dp=1, micro_batch=1, recompute="none")
    base = evaluate(problem, plan)
    moved = evaluate(problem.on(faulty), plan.model_copy(update={"fault_policy": "non_robust"}))
    assert moved["breakdown_s"]["compute"] == pytest.approx(2 * base["breakdown_s"]["compute"])
    assert moved["peak_memory_bytes_per_device"] == pytest.approx(2 * base["peak_memory_bytes_per_device"])


def test_robust_keeps_at_least_what_non_robust_does_on_every_map():
    problem = watos.make_problem(LLAMA, _wafer(), seq=256, global_batch=32)
    study = fault_study(problem, [(0.0, 0.0), (0.1, 0.1), (0.2, 0.2)], samples=4, seed=1)
    first = study["rates"][0]
    assert first["robust"]["mean"] == pytest.approx(1.0) and first["non_robust"]["mean"] == pytest.approx(1.0)
    maps = [m for row in study["rates"] for m in row["maps"]]
    assert len(maps) >= 8
    assert all(m["robust"] >= m["non_robust"] - 1e-12 for m in maps)
    assert any(m["robust"] < 1 for m in maps)  # faults cost something
    for row in study["rates"]:
        if row["robust"]["mean"] is not None:
            assert row["robust"]["low"] <= row["robust"]["mean"] <= row["robust"]["high"]


def test_a_fault_study_needs_a_wafer():
    problem = watos.make_problem(LLAMA, watos.load_target("dgx-a100-80g"), seq=256, devices=8)
    with pytest.raises(WatosError, match="not a wafer"):
        fault_study(problem, [(0.1, 0.1)], samples=2)


def test_bad_fault_flags_are_one_line_and_exit_code_2(capsys):
    from watos.cli import main

    for flags in (["--rates", "0,x"], ["--rates", "1.5"], ["--faults", "cores=0.1"]):
        assert main(["faults", "gpt2", "--target", "watos-config3", *flags]) == 2
        assert capsys.readouterr().err.count("\n") == 1
