"""Pass infrastructure: registry, dependency order, checks after each pass, user passes, dumps."""
import re
import sys
from pathlib import Path

import pytest
import watos.passes
from watos.passes import Graph, OpKind, Pass, PassConfig, PassError, register_pass

import watos
from watos.cli import main
from watos.frontend.trace import trace_step
from watos.ir import pass_manager
from watos.ir.pass_manager import PassManager, make_pipeline
from watos.pipelines import import_passes

README = Path(__file__).parents[1] / "README.md"
TINY = "tests/fixtures/user_models.py:tiny_lm"


@pytest.fixture
def private_registry(monkeypatch):
    """Registrations made inside a test do not leak into other tests."""
    monkeypatch.setattr(pass_manager, "_REGISTRY", dict(pass_manager.registered_passes()))


def imported():
    return trace_step(watos.load_model(TINY), seq_len=8, micro_batch=2)


def readme_pass_source() -> str:
    text = README.read_text()
    match = re.search(r"```python\n(# passes/arithmetic_intensity\.py\n.*?)```", text, re.S)
    assert match, "README lost its worked pass example"
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
