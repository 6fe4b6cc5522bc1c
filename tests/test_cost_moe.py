"""Mixture-of-experts: tensor-parallel roles of routers and MLA projections, expert parallelism, routing."""
from __future__ import annotations

import pytest
from conftest import FAMILIES

import watos
from watos.ir import OpKind, Phase
from watos.plan import software_of


@pytest.fixture(scope="module")
def lowered():
    graphs = {}

    def get(family: str):
        if family not in graphs:
            graphs[family] = watos.lower(watos.trace(FAMILIES[family], seq_len=64), fusion="none")
        return graphs[family]
    return get


def _forward_matmuls(graph, block: int) -> dict[str, str]:
    """Parameter name within the block (``mlp.gate``) -> TP role of the forward matmuls of one block."""
    return {op.params[0].split(f".{block}.")[1].removesuffix(".weight"): op.attrs["tp_role"] for op in graph.ops
            if op.block == block and op.phase is Phase.FORWARD and op.kind is OpKind.MATMUL and op.params}


@pytest.mark.parametrize("family", ["mixtral", "deepseek_v3"])
def test_router_and_low_rank_projections_stay_whole_so_the_residual_stream_is_not_split(lowered, family):
    graph = lowered(family)
    roles = _forward_matmuls(graph, 1)
    assert roles["mlp.gate"] == "replicated"  # the router: every TP rank routes alike
    assert roles["mlp.experts.gate_up_proj"] == "column" and roles["mlp.experts.down_proj"] == "row"
    if family == "deepseek_v3":  # MLA (DeepSeek-V2 §2.1): down-projections feed a norm over whole tokens
        assert roles["self_attn.q_a_proj"] == roles["self_attn.kv_a_proj_with_mqa"] == "replicated"
        assert roles["self_attn.q_b_proj"] == roles["self_attn.kv_b_proj"] == "column"
    assert roles["self_attn.o_proj"] == "row"
    residual = [op for op in graph.ops if op.phase is Phase.FORWARD and op.kind is OpKind.NORM]
    assert residual and all(op.attrs["tp_role"] == "replicated" for op in residual
                            if len(graph.type_of(op.inputs[0]).shape) == 3)


MIXTRAL8 = dict(FAMILIES["mixtral"], num_local_experts=8)


@pytest.fixture(scope="module")
def mixtral8():
    return watos.lower(watos.trace(MIXTRAL8, seq_len=64), fusion="none")


def _costed(graph, **fields):
    plan = {"dp": 8, "zero": 1, "global_batch": 8, **fields}
    wafer = watos.load_target("watos-config3")
    return watos.cost_plan(graph, wafer.model_copy(update={"topology": wafer.topology.model_copy(update={"rows": 2, "cols": 4})}),
                     plan)


def test_expert_parallelism_divides_expert_weights_and_adds_four_all_to_alls_per_moe_block(mixtral8):
    from watos.ir.queries import expert_params

    experts = expert_params(mixtral8)
    # blocks 0 and 1 are traced, block 2 is costed as a copy of block 1
    assert set(experts) == {f"model.layers.{b}.mlp.experts.{w}" for b in range(2) for w in ("gate_up_proj", "down_proj")}
    h, f = MIXTRAL8["hidden_size"], MIXTRAL8["intermediate_size"]
    expert_numel = 3 * 8 * 3 * h * f  # layers x experts x (gate, up, down)
    plain, split = _costed(mixtral8, ep=1), _costed(mixtral8, ep=8)
    memory = [g.analyses["cost"]["stages"][0]["memory"] for g in (plain, split)]
    # bf16 weights and fp32 main gradients lose 7/8 of the experts; ZeRO-1 states were already a 1/8 share of all
    assert memory[0]["weights_bytes"] - memory[1]["weights_bytes"] == pytest.approx(2 * expert_numel * 7 / 8)
    assert memory[0]["gradients_bytes"] - memory[1]["gradients_bytes"] == pytest.approx(4 * expert_numel * 7 / 8)
    assert memory[0]["optimizer_bytes"] == pytest.approx(memory[1]["optimizer_bytes"])
    moved = [op for op in split.ops if op.kind is OpKind.COLLECTIVE and op.attrs["group"] == "ep"]
    # per traced MoE block: dispatch, combine and their gradients, each the routed rows (s·k of them) x h, bf16
    routed = 64 * MIXTRAL8["num_experts_per_tok"] * MIXTRAL8["hidden_size"] * 2
    assert sorted(op.attrs["moe"] for op in moved if op.block == 1) == [
        "combine", "combine gradient", "dispatch", "dispatch gradient"]
    assert {op.attrs["bytes"] for op in moved} == {routed}
    # dp = ep: each expert has one copy per TP/CP coordinate, so expert gradients are not reduced
    reduced = {op.attrs["param"] for op in split.ops if op.kind is OpKind.COLLECTIVE and "param" in op.attrs}
    assert not reduced & experts.keys() and reduced
    assert split.analyses["sharding"].groups["ep"] == [list(range(8))]


@pytest.mark.parametrize(("routing", "load"), [({"skew": 0.5}, 1.5), ({"skew": 0.5, "capacity_factor": 1.2}, 1.2)])
def test_the_busiest_expert_rank_sets_expert_time_and_all_to_all_bytes(mixtral8, routing, load):
    balanced, skewed = _costed(mixtral8, ep=4), _costed(mixtral8, ep=4, routing=routing)
    launch = software_of(watos.Plan(), watos.load_target("watos-config3")).kernel_overhead_s
    pairs = list(zip(balanced.ops, skewed.ops))
    experts = [(a, b) for a, b in pairs if a.attrs.get("expert")]
    moved = [(a, b) for a, b in pairs if a.attrs.get("group") == "ep"]
    dense = [(a, b) for a, b in pairs if a.kind is OpKind.MATMUL and not a.attrs.get("expert")]
    assert len(experts) == 2 * 6 and len(moved) == 2 * 4 and dense
    for a, b in experts:  # time without the launch grows with the rows the busiest rank gets: by the load
        # factor when compute-bound, by less when the (unscaled) expert weights' bytes bound it
        assert a.attrs["time_s"] - launch < b.attrs["time_s"] - launch <= load * (a.attrs["time_s"] - launch) * (1 + 1e-9)
    for a, b in moved:
        assert b.attrs["bytes"] == pytest.approx(load * a.attrs["bytes"], rel=1e-4)
    assert all(a.attrs["time_s"] == b.attrs["time_s"] for a, b in dense)


@pytest.mark.parametrize(("fields", "message"), [({"ep": 3, "dp": 6}, r"ep=3 must divide dp=6 \(or .*\) and the 8 experts"),
                                                 ({"ep": 16, "dp": 16}, r"ep=16 must divide dp=16 \(or .*\) and the 8 experts"),
                                                 ({"ep": 12, "dp": 4, "tp": 2}, r"ep=12 must divide dp=4")])
def test_expert_parallel_degree_must_divide_dp_and_the_experts(fields, message):
    from watos.plan import check_plan, make_plan

    with pytest.raises(watos.WatosError, match=message):
        check_plan(make_plan(fields), heads=4, kv_heads=2, layers=3, seq_len=64, experts=8)
    with pytest.raises(watos.WatosError, match="has no experts"):
        check_plan(make_plan({"ep": 2, "dp": 2}), heads=4, kv_heads=2, layers=3, seq_len=64)


def test_expert_parallelism_may_fold_the_tensor_parallel_ranks():
    """Megatron-Core with expert tensor parallelism 1 folds the TP ranks into EP (ep = dp·tp): every rank holds
    1/ep of the experts, costed as 1/tp of each of ep/tp data-parallel ranks' experts."""
    from watos.plan import check_plan, make_plan

    plan = make_plan({"ep": 8, "dp": 4, "tp": 2})
    check_plan(plan, heads=4, kv_heads=2, layers=3, seq_len=64, experts=8)
    assert plan.data_parallel_ep == 4 and make_plan({"ep": 2, "dp": 4, "tp": 2}).data_parallel_ep == 2


def test_search_splits_experts_when_memory_demands_and_reports_considered_plans():
    """2x4 dies of 4 MB: replicated experts leave too little room, the best plan splits them; a plan given
    to ``considered`` is costed (GCMR applied) and reported, one that does not divide says why."""
    import dataclasses

    from test_strategy_search import wafer
    problem = watos.make_problem(MIXTRAL8, wafer(2, 4, 0.004), seq=64, global_batch=16)
    problem = dataclasses.replace(problem, micro_batch_sizes=(1, 2), interleaves=(1,))
    found = watos.search(problem, considered=[watos.Plan(dp=8, ep=8, zero=1, global_batch=16),
                                              watos.Plan(dp=8, ep=3, global_batch=16)], baselines=False)
    assert found["best"]["plan"]["ep"] > 1 and found["best"]["peak_dram_gb_per_die"] <= 0.004
    given, wrong = found["considered"]
    assert given["plan"]["ep"] == 8 and 0 < given["tokens_per_s"] <= found["best"]["tokens_per_s"]
    assert "ep=3 must divide dp=8" in wrong["limited_by"] and "tokens_per_s" not in wrong


@pytest.mark.parametrize(("spec", "message"), [("tp4", "--consider 'tp4': expected"),
                                             ("tp=[", "--consider 'tp=[': a value is not a YAML scalar"),
                                             ("tp=2,colour=red", "colour: unknown field")])
def test_consider_flag_errors_are_one_line(capsys, spec, message):
    from watos.cli import main

    assert main(["search", "tests/fixtures/user_models.py:tiny_lm", "--target", "watos-config3",
                 "--consider", spec]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err


def test_static_capacity_experts_dispatch_their_padded_buffers_and_ignore_the_skew(write_config):
    """GShard routes into [E, C] buffers traced in its graph: the dispatch all-to-all moves E·C rows of d per
    sequence (capacity padding included), and the routing skew, which a dropless model's busiest rank
    pays, changes nothing."""
    import math

    from test_frontend_gshard import TINY

    graph = watos.lower(watos.trace(write_config(TINY, "gshard"), seq_len=32), fusion="none")
    capacity = math.ceil(TINY["capacity_factor"] * 2 * 32 / TINY["num_experts"])
    routed = TINY["num_experts"] * capacity * TINY["hidden_size"] * 2  # bf16
    balanced = _costed(graph, ep=4)
    skewed = _costed(graph, ep=4, routing={"skew": 1.0})
    moved = [op for op in balanced.ops if op.attrs.get("group") == "ep"]
    assert moved and {op.attrs["bytes"] for op in moved} == {routed}
    assert balanced.analyses["cost"]["step_time_s"] == skewed.analyses["cost"]["step_time_s"]


def test_the_search_counts_every_block_s_expert_weights():
    """The memory screen divides expert weights by EP: it must count all 3 layers' experts, not only the
    traced blocks' (block 2 is costed as a copy of block 1)."""
    from test_strategy_search import wafer
    problem = watos.make_problem(MIXTRAL8, wafer(2, 4, 0.004), seq=64)
    h, f = MIXTRAL8["hidden_size"], MIXTRAL8["intermediate_size"]
    assert problem.info["expert_parameters"] == 3 * 8 * 3 * h * f
    assert problem.limits["experts"] == 8


def _saved(graph, modules: tuple[str, ...], policy: str = "selective") -> int:
    """Activation bytes one micro-batch keeps for the MoE blocks under ``policy`` recomputing ``modules``."""
    plan = watos.Plan(recompute=policy, features={"recompute_modules": list(modules)})
    costed = watos.cost_plan(graph, watos.load_target("dgx-h100-80g"), plan)
    return sum(costed.analyses["recompute"].block_bytes[policy].values())


def test_selective_recompute_drops_the_modules_it_names(lowered):
    """Megatron-Core's recompute_modules: each module named drops what it saves (re-run in the backward);
    the MLA up-projections' per-head queries, keys and values outweigh the attention core's output."""
    graph = lowered("deepseek_v3")
    kept = {m: _saved(graph, (m,)) for m in ("core_attn", "mla_up_proj", "moe_act", "layernorm", "moe")}
    none, full = _saved(graph, (), "none"), _saved(graph, (), "full")
    assert full < kept["moe"] < none
    assert all(full < kept[m] < none for m in kept)
    assert kept["mla_up_proj"] < kept["core_attn"]
    both = _saved(graph, ("mla_up_proj", "moe_act"))
    assert both < min(kept["mla_up_proj"], kept["moe_act"])


def test_moe_act_recomputes_only_the_experts_gated_activation(lowered):
    from watos.passes.recompute import selective_ops
    graph = lowered("deepseek_v3")
    chosen = [graph.op(i) for i in selective_ops(graph, ("moe_act",))]
    assert chosen and all(op.kind is OpKind.ELEMENTWISE and ".experts" in op.module for op in chosen)
    assert {op.target for op in chosen} <= {"silu", "mul", "fused"}


def test_a_deduplicating_dispatcher_costs_less_all_to_all_across_nodes(mixtral8):
    """DeepEP/HybridEP (a stack's ``moe_dispatchers``): a token routed to two experts on one node crosses the
    network once."""
    target = watos.load_target("dgx-h100-80g")
    times = {}
    for dispatcher in ("alltoall", "deepep"):
        plan = watos.Plan(dp=16, ep=16, global_batch=16, stack="megatron-core", features={"moe_dispatcher": dispatcher})
        times[dispatcher] = watos.cost_plan(mixtral8, target, plan).analyses["cost"]["breakdown_s"]["ep_comm"]
    assert 0 < times["deepep"] < times["alltoall"]
