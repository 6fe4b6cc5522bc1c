"""Tracing one block per distinct structure and counting it equals tracing every block."""
import pytest
from conftest import FAMILIES, traced, traced_summary

import watos

TOTALS = ["forward_flops", "backward_flops", "bytes_moved", "activation_bytes_total", "ops", "parameters",
          "activation_bytes_per_block"]


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_replicated_trace_equals_full_trace(family, write_config):
    config = dict(FAMILIES[family])
    key = "n_layer" if "n_layer" in config else "num_hidden_layers"
    config[key] = 5
    path = write_config(config, family)
    replicated = traced_summary(path, seq_len=32, micro_batch=2)
    full = traced_summary(path, seq_len=32, micro_batch=2, replicate_blocks=False)
    assert replicated["traced_blocks"] < full["traced_blocks"] == 5
    assert {k: replicated[k] for k in TOTALS} == {k: full[k] for k in TOTALS}


def test_alternating_block_structures_are_grouped(write_config):
    """Gemma-2 alternates sliding-window and full attention: two groups, each counted."""
    path = write_config(dict(FAMILIES["gemma2"], num_hidden_layers=6), "gemma2")
    graph = traced(path, seq_len=32, micro_batch=1)
    groups = sorted(g.blocks for g in graph.block_groups)
    assert groups == [[0, 2, 4], [1, 3, 5]]
    assert len(graph.model.traced_blocks) == 2


def test_shipped_model_traces_two_blocks_and_counts_all():
    graph = traced("llama2-7b", seq_len=64)
    assert graph.model.num_blocks == 32
    assert graph.model.traced_blocks == [0, 1]
    [group] = graph.block_groups
    assert group.count == 32
    weights = {graph.weight(op) for op in graph.ops if op.block is not None}
    assert weights == {0, 32}


def test_tracing_a_source_twice_gives_the_same_graph():
    """Replication truncates the blocks while tracing; the source must come back whole (the search
    traces one source at several micro-batch sizes)."""
    source = watos.load_model(FAMILIES["llama"])
    first = watos.trace(source, seq_len=32)
    second = watos.trace(source, seq_len=32)
    assert first.model.num_blocks == second.model.num_blocks == FAMILIES["llama"]["num_hidden_layers"]
    assert second.total("flops") == first.total("flops")
