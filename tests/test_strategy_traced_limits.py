"""What a plan must divide comes from the traced graph, not a config dict: a user's nn.Module has none."""
import pytest
from conftest import FAMILIES, traced

import watos
from watos.ir.queries import attention_heads, model_limits
from watos.strategy import search as search_module
from watos.strategy.space import shapes

USER = "tests/fixtures/user_models.py"


@pytest.mark.parametrize("spec,heads,kv_heads,layers", [
    (f"{USER}:attention_lm", 8, 8, 4),
    (f"{USER}:gqa_lm", 8, 2, 4),
    (f"{USER}:tiny_lm", 0, 0, 3),
])
def test_heads_and_blocks_of_a_user_module_come_from_its_graph(spec, heads, kv_heads, layers):
    for attention in ("sdpa", "eager"):
        limits = model_limits(traced(spec, seq_len=16, attention=attention))
        assert (limits["heads"], limits["kv_heads"], limits["layers"]) == (heads, kv_heads, layers)


@pytest.mark.parametrize("family", ["llama", "gpt2", "mixtral", "deepseek_v3"])
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_traced_heads_agree_with_the_config(family, attention):
    """Grouped-query keys are repeated to the query heads before attention (repeat_kv); the walk back finds
    the key/value heads behind them."""
    config = FAMILIES[family]
    heads = config.get("num_attention_heads") or config["n_head"]
    graph = watos.trace(dict(config), seq_len=16, attention=attention)
    assert attention_heads(graph) == (heads, config.get("num_key_value_heads") or heads)


@pytest.mark.parametrize("tp", [2, 4, 8])
def test_a_user_module_with_eight_heads_compiles_tensor_parallel(tp):
    result = watos.compile(f"{USER}:attention_lm", "dgx-a100-80g", {"tp": tp, "dp": 8 // tp, "global_batch": 8},
                           seq=32)
    assert result["plan"]["tp"] == tp and result["step_time_s"] > 0 and result["breakdown_s"]["tp_comm"] > 0


@pytest.mark.parametrize("spec,tp,message", [
    (f"{USER}:attention_lm", 3, "tp=3 does not divide the 8 attention heads"),
    (f"{USER}:tiny_lm", 2, "tp=2 needs attention heads to split, and the traced model has no attention"),
])
def test_plans_the_traced_heads_refuse(spec, tp, message):
    with pytest.raises(watos.WatosError, match=message):
        watos.compile(spec, "dgx-a100-80g", {"tp": tp, "dp": 1, "global_batch": 1}, seq=32)


def test_search_explores_tensor_parallelism_of_a_user_module(monkeypatch):
    problem = watos.make_problem(f"{USER}:attention_lm", watos.load_target("dgx-a100-80g"), seq=32, devices=8)
    assert {tp for tp, _, _ in shapes(problem)} == {1, 2, 4, 8}
    costed = []
    evaluate = search_module.try_evaluate
    monkeypatch.setattr(search_module, "try_evaluate", lambda p, plan: costed.append(plan.tp) or evaluate(p, plan))
    watos.search(problem, baselines=False, generations=1)
    assert set(costed) == {1, 2, 4, 8}
    without_attention = watos.make_problem(f"{USER}:tiny_lm", watos.load_target("dgx-a100-80g"), seq=32, devices=8)
    assert {tp for tp, _, _ in shapes(without_attention)} == {1}


def test_a_batch_that_does_not_split_is_said_not_silently_skipped():
    """14 sequences on 56 dies: dp 28 and 56 cannot take them; the search says so for those shapes, and the
    weight-streaming baseline (every die data parallel) blames the batch, not memory."""
    problem = watos.make_problem(f"{USER}:attention_lm", watos.load_target("watos-config3"), seq=32, global_batch=14)
    found = watos.search(problem, generations=1)
    batch = {r["shape"]["dp"] for r in found["rejected"] if r["limited_by"].startswith("batch")}
    assert batch == {28, 56}
    assert found["best"]["plan"]["dp"] in (7, 14)
    assert "not a multiple of the 56 dies" in found["baselines"]["cerebras-ws"]["infeasible"]
