"""Pass infrastructure: registry, dependency order, checks after each pass, user passes, dumps."""
import json
import re
import sys
from pathlib import Path

import pytest

import watos
import watos.passes
from watos.cli import main
from watos.frontend.trace import trace_step
from watos.ir import analyses, pass_manager
from watos.ir.pass_manager import PassManager, make_pipeline
from watos.passes import Graph, OpKind, Pass, PassConfig, PassError, register_pass
from watos.pipelines import import_passes

README = Path(__file__).parents[1] / "README.md"
TINY = "tests/fixtures/user_models.py:tiny_lm"


@pytest.fixture
def private_registry(monkeypatch):
    """Registrations (passes and analyses) made inside a test do not leak into other tests."""
    monkeypatch.setattr(pass_manager, "_REGISTRY", dict(pass_manager.registered_passes()))
    monkeypatch.setattr(analyses, "_ANALYSES", dict(analyses._ANALYSES))


def imported():
    return trace_step(watos.load_model(TINY), seq_len=8, micro_batch=2)


def readme_pass_source(name: str = "arithmetic_intensity") -> str:
    text = README.read_text()
    match = re.search(rf"```python\n(# passes/{name}\.py\n.*?)```", text, re.S)
    assert match, f"README lost its worked pass example {name}"
    return match.group(1)


def test_default_pipeline_orders_builtin_passes_by_dependencies():
    names = [p.name for p in import_passes()]
    assert names == ["canonicalize", "annotate", "group_blocks", "saved_activations"]


def test_missing_requirement_names_the_pass():
    with pytest.raises(PassError, match="pass annotate requires \\['canonical'\\]"):
        PassManager(make_pipeline(["annotate"])).run(imported())


def test_failing_pass_is_named_with_those_before_it(private_registry):
    @register_pass("explodes")
    class Explodes(Pass):
        requires = frozenset({"op_costs"})

        def run(self, graph: Graph) -> None:
            raise RuntimeError("boom")

    with pytest.raises(PassError, match=r"pass explodes failed \(after canonicalize, annotate\): RuntimeError: boom"):
        PassManager(make_pipeline(["canonicalize", "annotate", "explodes"])).run(imported())


def test_ir_is_verified_after_every_pass(private_registry):
    @register_pass("drops_an_op")
    class DropsAnOp(Pass):
        def run(self, graph: Graph) -> None:
            victim = next(op for op in graph.ops if op.kind is OpKind.MATMUL)
            graph.ops.remove(victim)
            graph.reindex()

    with pytest.raises(PassError, match="pass drops_an_op failed.*before it is defined"):
        PassManager(make_pipeline(["drops_an_op"])).run(imported())


def test_pass_options_are_validated(private_registry):
    @register_pass("configurable")
    class Configurable(Pass):
        class Config(PassConfig):
            threshold: float = 1.0

        def run(self, graph: Graph) -> None:
            graph.analyses["threshold"] = self.config.threshold

    assert Configurable(threshold=2).config.threshold == 2.0
    with pytest.raises(PassError, match="option threshold"):
        Configurable(threshold="high")
    with pytest.raises(PassError, match="option colour"):
        Configurable(colour="red")


def test_duplicate_pass_name_is_rejected(private_registry):
    with pytest.raises(PassError, match="already registered"):
        @register_pass("canonicalize")
        class Again(Pass):
            pass


def test_pass_dropped_into_passes_folder_runs_and_is_dumped(tmp_path, monkeypatch, private_registry):
    """The README's worked example, dropped into a passes/ folder, joins the default pipeline."""
    folder = tmp_path / "passes"
    folder.mkdir()
    (folder / "arithmetic_intensity.py").write_text(readme_pass_source())
    monkeypatch.setattr(watos.passes, "__path__", [*watos.passes.__path__, str(folder)])
    monkeypatch.delitem(sys.modules, "watos.passes.arithmetic_intensity", raising=False)
    dump = tmp_path / "dump"
    assert main(["trace", TINY, "--seq", "16", "--dump-ir", str(dump)]) == 0
    names = sorted(p.name for p in dump.iterdir())
    assert "003_arithmetic_intensity.txt" in names and "003_arithmetic_intensity.json" in names
    text = (dump / "003_arithmetic_intensity.txt").read_text()
    assert re.search(r"matmul\[matmul\].*intensity=[0-9.e+]+", text)
    assert "intensity" not in (dump / "002_annotate.txt").read_text()


def test_user_pass_requiring_nothing_runs_last(private_registry):
    @register_pass("observer")
    class Observer(Pass):
        def run(self, graph: Graph) -> None:
            graph.analyses["observed"] = len(graph.ops)

    assert [p.name for p in import_passes()][-1] == "observer"


def test_user_pass_with_unprovided_requirement_is_an_error(private_registry):
    @register_pass("needs_magic")
    class NeedsMagic(Pass):
        requires = frozenset({"magic"})

    with pytest.raises(PassError, match="needs_magic requires \\['magic'\\]"):
        import_passes()


def test_plugin_file_registers_a_pass(tmp_path, private_registry, capsys):
    plugin = tmp_path / "my_pass.py"
    plugin.write_text(readme_pass_source())
    dump = tmp_path / "dump"
    assert main(["trace", TINY, "--seq", "16", "--plugin", str(plugin), "--dump-ir", str(dump)]) == 0
    assert (dump / "003_arithmetic_intensity.txt").exists()


def test_explicit_pipeline_and_unknown_pass(capsys):
    assert main(["trace", TINY, "--seq", "16", "--passes", "canonicalize,annotate", "--json"]) == 0
    assert main(["trace", TINY, "--passes", "canonicalize,nope"]) == 2
    assert "unknown pass 'nope'" in capsys.readouterr().err


GPT2_PLAN = ["--target", "watos-config3", "--tp", "4", "--pp", "2", "--dp", "7", "--global-batch", "14", "--seq", "128"]


def test_costing_stage_plugin_joins_after_the_schedule_and_writes_its_analysis(tmp_path, private_registry, capsys):
    """The README's costing-stage example: it joins the cost pipeline after the pass providing "cost", its
    typed analysis is written and dumped, and the compile result is unchanged by it."""
    plugin = tmp_path / "step_energy.py"
    plugin.write_text(readme_pass_source("step_energy"))
    assert main(["compile", "gpt2", *GPT2_PLAN, "--json"]) == 0
    plain = capsys.readouterr().out
    dump = tmp_path / "dump"
    assert main(["compile", "gpt2", *GPT2_PLAN, "--plugin", str(plugin), "--dump-ir", str(dump), "--json"]) == 0
    assert capsys.readouterr().out == plain
    names = sorted(p.stem for p in dump.glob("*.json"))
    assert names[-3:] == ["011_device_cost", "012_schedule", "013_step_energy"]
    energy = json.loads((dump / "013_step_energy.json").read_text())["analyses"]["step_energy"]
    assert energy["joules"] > 0 and energy["tokens_per_joule"] > 0


def test_a_costing_stage_pass_receives_the_target_plan_and_dtype(private_registry):
    seen = {}

    @register_pass("looks_at_context")
    class LooksAtContext(Pass):
        stage = "cost"
        requires = frozenset({"cost"})

        class Config(PassConfig):
            target: watos.Target
            plan: watos.Plan
            dtype: str = "fp32"

        def run(self, graph: Graph) -> None:
            seen.update(target=self.config.target.name, tp=self.config.plan.tp, dtype=self.config.dtype)

    graph = watos.lower(watos.trace("gpt2", seq_len=64), "watos-config3")
    watos.cost_plan(graph, "watos-config3", {"tp": 2, "dp": 28, "global_batch": 28}, dtype="fp16")
    assert seen == {"target": "watos-config3", "tp": 2, "dtype": "fp16"}


@pytest.mark.parametrize("written,problem", [(None, "it wrote no analyses['pipeline'] (PipelineLayout)"),
                                             ({"pp": 1}, "analyses['pipeline'] is a dict, not a PipelineLayout")])
def test_a_pass_that_does_not_write_the_analysis_it_provides_is_named(private_registry, written, problem):
    @register_pass("claims_pipeline")
    class ClaimsPipeline(Pass):
        requires = frozenset({"op_costs"})
        provides = frozenset({"pipeline"})

        def run(self, graph: Graph) -> None:
            if written is not None:
                graph.analyses["pipeline"] = written

    with pytest.raises(PassError, match=re.escape(f"pass claims_pipeline failed (after canonicalize, annotate): "
                                                  f"it provides 'pipeline' but {problem}")):
        PassManager(make_pipeline(["canonicalize", "annotate", "claims_pipeline"])).run(imported())


def test_passes_command_lists_every_pass_with_stage_and_described_options(capsys):
    registry = pass_manager.registered_passes()
    for cls in registry.values():
        for name, field in cls.Config.model_fields.items():
            assert field.description, f"pass {cls.name}: option {name} has no description"
    assert main(["passes"]) == 0
    out = capsys.readouterr().out
    for name, cls in registry.items():
        assert re.search(rf"│ {cls.stage} +│ {name} ", out), name
    assert "level: Literal['none', 'basic', 'flash'] = 'basic'  the stack's kernel fusion" in out
    positions = [out.index(f"│ {name} ") for name in ("canonicalize", "annotate", "fuse", "shard", "schedule")]
    assert positions == sorted(positions)
