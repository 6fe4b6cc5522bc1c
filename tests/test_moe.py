"""Mixture-of-experts: tensor-parallel roles of routers and MLA projections, expert parallelism, routing."""
from __future__ import annotations

import pytest
from conftest import FAMILIES

import watos
from watos.compile import lower
from watos.frontend import from_hf_config
from watos.ir import OpKind, Phase


@pytest.fixture(scope="module")
def lowered():
    graphs = {}

    def get(family: str):
        if family not in graphs:
            graphs[family] = lower(watos.trace(from_hf_config(family, FAMILIES[family]), seq_len=64), "none")
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
