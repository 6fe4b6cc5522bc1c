"""IR printers: text (one line per op), JSON (complete, deterministic), DOT (one block)."""
import json

from conftest import traced

from watos.ir.printers import summary, to_dot, to_json, to_text


def test_text_has_one_line_per_op_with_costs():
    graph = traced("tests/fixtures/user_models.py:tiny_lm", seq_len=16, micro_batch=2)
    lines = to_text(graph).splitlines()
    op_lines = [line for line in lines if line.startswith("%")]
    assert len(op_lines) == len(graph.ops)
    assert all("flops=" in line and "read=" in line and "write=" in line for line in op_lines)
    assert any(" x3" in line for line in op_lines) and any(" x0" in line for line in op_lines)


def test_json_is_complete_and_deterministic():
    graph = traced("llama2-7b", seq_len=64)
    first = json.dumps(to_json(graph), sort_keys=True)
    second = json.dumps(to_json(graph), sort_keys=True)
    assert first == second
    data = json.loads(first)
    assert data["summary"] == json.loads(json.dumps(summary(graph)))
    op = next(o for o in data["ops"] if o["kind"] == "matmul" and o["phase"] == "forward" and o["block"] == 1)
    for field in ("inputs", "outputs", "flops", "bytes_read", "bytes_written", "module", "params", "phase"):
        assert field in op
    assert op["module"].startswith("model.layers.1.") and op["params"]
    fused = [o for o in data["ops"] if o.get("members")]
    assert fused, "composite norms should be fused ops with their members kept"


def test_dot_shows_one_block():
    graph = traced("llama2-7b", seq_len=64)
    dot = to_dot(graph)
    assert dot.startswith('digraph "block_1"') and "->" in dot
    nodes = [line for line in dot.splitlines() if "[label=" in line]
    block_ops = [op for op in graph.ops if op.block == 1 and op.kind.value != "param"]
    assert len(nodes) == len(block_ops)
