"""The bad-input matrix: every malformed input a user can give trace, compile, search, explore and validate is
one line on stderr naming the problem, exit code 2, no traceback, and no output file left behind."""
import json
import subprocess
import sys

import pytest

from watos.cli import main

USER = "tests/fixtures/user_models.py"
LM = f"{USER}:attention_lm"
LLAMA = dict(model_type="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             vocab_size=512)

# Documents of every wrong kind, written into the test's folder by name ({name} in an argv below).
FILES = {
    "binary.json": bytes(range(256)), "binary.yaml": bytes(range(256)), "binary.py": bytes(range(256)),
    "broken.json": b"{not json", "list.json": b"[1, 2]", "broken.yaml": b"a: [1, 2", "list.yaml": b"- 1\n- 2\n",
    "no_type.json": json.dumps({"hidden_size": 8}).encode(),
    "unknown_type.json": json.dumps({"model_type": "no_such_family"}).encode(),
    "word_size.json": json.dumps({**LLAMA, "hidden_size": "big"}).encode(),
    "negative_layers.json": json.dumps({**LLAMA, "num_hidden_layers": -2}).encode(),
    "zero_vocab.json": json.dumps({**LLAMA, "vocab_size": 0}).encode(),
    "bool_heads.json": json.dumps({**LLAMA, "num_attention_heads": True}).encode(),
    "indivisible.json": json.dumps({**LLAMA, "hidden_size": 66}).encode(),
    "target_types.yaml": b"name: t\ndescription: x\ndevice: {peak_tflops: lots}\n",
    "target_fields.yaml": b"name: t\nbogus: 1\n",
    "plan_unknown.yaml": b"tp: 2\nbogus: 1\n", "plan_word.yaml": b"tp: four\n", "plan_negative.yaml": b"tp: -1\n",
    "plan_recompute.yaml": b"recompute: sometimes\n", "plan_zero.yaml": b"zero: 7\n",
    "stack_types.yaml": b"name: s\ndescription: x\nkernels: {attention: magic}\n",
    "template_types.yaml": b"name: t\ndie_width_mm: wide\n",
    "space_unknown.yaml": b"no_such_variable: [1, 2]\n", "space_range.yaml": b"dram_stacks_per_die: {min: 4, max: 1, step: 1}\n",
    "space_empty.yaml": b"dram_stacks_per_die: []\n", "space_words.yaml": b"dram_stacks_per_die: [one, two]\n",
    "cases_format.json": json.dumps({"format": "nope", "cases": []}).encode(),
    "cases_empty.json": json.dumps({"format": "watos-validation-cases/1", "cases": []}).encode(),
    "cases_field.json": json.dumps({"format": "watos-validation-cases/1", "cases": [{"id": "x", "model": 3}]}).encode(),
    "raises.py": b"raise RuntimeError('boom')\n",
    "inputs_raise.py": (b"import torch\nfrom torch import nn\n\ndef build():\n    return nn.Linear(4, 4)\n\n"
                        b"def example_inputs(micro_batch, seq_len):\n    raise ValueError('no inputs today')\n"),
}

MATRIX = [
    # trace: model specs and files
    (["trace", "no-such-model"], "unknown model 'no-such-model'"),
    (["trace", "missing/config.json"], "config file not found: missing/config.json"),
    (["trace", "{folder.json}"], "is a directory, not a file"),
    (["trace", "{binary.json}"], "is not a text file"),
    (["trace", "{broken.json}"], "malformed JSON"),
    (["trace", "{list.json}"], "must be a JSON object"),
    (["trace", "{no_type.json}"], "no 'model_type'"),
    (["trace", "{unknown_type.json}"], "not a family transformers knows"),
    (["trace", "{word_size.json}"], "hidden_size must be an integer, got 'big'"),
    (["trace", "{negative_layers.json}"], "num_hidden_layers must be positive, got -2"),
    (["trace", "{zero_vocab.json}"], "vocab_size must be positive, got 0"),
    (["trace", "{bool_heads.json}"], "num_attention_heads must be a number, got True"),
    (["trace", "{indivisible.json}"], "not a multiple of the number of attention heads"),
    (["trace", "missing/model.py:build"], "model file not found: missing/model.py"),
    (["trace", "{raises.py}:build"], "importing it raised RuntimeError: boom"),
    (["trace", "{binary.py}:build"], "importing it raised"),
    (["trace", "no_such_package.module:build"], "cannot import module 'no_such_package.module'"),
    (["trace", f"{USER}:nothing_here"], "has no callable 'nothing_here'"),
    (["trace", f"{USER}:not_a_module"], "returned dict, not a torch.nn.Module"),
    (["trace", f"{USER}:data_dependent"], "data-dependent control flow"),
    (["trace", "{inputs_raise.py}:build"], "example_inputs(1, 2048) raised ValueError: no inputs today"),
    (["trace", LM, "--seq", "0"], "seq_len and micro_batch must be positive"),
    (["trace", LM, "--micro-batch", "-1"], "seq_len and micro_batch must be positive"),
    (["trace", LM, "--seq", "many"], "argument --seq: invalid int value: 'many'"),
    (["trace", LM, "--dtype", "int8"], "argument --dtype: invalid choice: 'int8'"),
    (["trace", LM, "--passes", "no_such_pass", "--dump-ir", "{out}"], "unknown pass 'no_such_pass'"),
    (["trace", LM, "--passes", "annotate", "--dump-ir", "{out}"], "annotate"),
    (["trace", LM, "--plugin", "missing_pass.py"], "pass plugin not found: missing_pass.py"),
    (["trace", LM, "--bogus-flag"], "unrecognized arguments: --bogus-flag"),
    (["trace"], "the following arguments are required: MODEL"),
    # compile: targets, plans, stacks, flags
    (["compile", LM, "--target", "no-such-target"], "unknown target 'no-such-target'"),
    (["compile", LM, "--target", "{binary.yaml}"], "is not a text file"),
    (["compile", LM, "--target", "{folder.yaml}"], "is a directory, not a file"),
    (["compile", LM, "--target", "{broken.yaml}"], "malformed YAML at line"),
    (["compile", LM, "--target", "{list.yaml}"], "must be a YAML mapping"),
    (["compile", LM, "--target", "{target_types.yaml}"], "device"),
    (["compile", LM, "--target", "{target_fields.yaml}"], "description: missing field"),
    (["compile", LM, "--target", "dgx-a100-80g", "--plan", "missing.yaml"], "plan file not found: missing.yaml"),
    (["compile", LM, "--target", "dgx-a100-80g", "--plan", "{binary.yaml}"], "is not a text file"),
    (["compile", LM, "--target", "dgx-a100-80g", "--plan", "{folder.yaml}"], "is a directory, not a file"),
    (["compile", LM, "--target", "dgx-a100-80g", "--plan", "{plan_unknown.yaml}"], "bogus: unknown field"),
    (["compile", LM, "--target", "dgx-a100-80g", "--plan", "{plan_word.yaml}"], "tp: "),
    (["compile", LM, "--target", "dgx-a100-80g", "--plan", "{plan_negative.yaml}"], "tp: "),
    (["compile", LM, "--target", "dgx-a100-80g", "--plan", "{plan_recompute.yaml}"], "recompute"),
    (["compile", LM, "--target", "dgx-a100-80g", "--plan", "{plan_zero.yaml}"], "zero"),
    (["compile", LM, "--target", "dgx-a100-80g", "--tp", "3", "--dp", "1", "--seq", "32"],
     "tp=3 does not divide the 8 attention heads"),
    (["compile", LM, "--target", "watos-config3", "--dp", "2", "--seq", "32"], "but the target has 56 devices"),
    (["compile", LM, "--target", "dgx-a100-80g", "--pp", "8", "--seq", "32"], "exceeds the 4 blocks"),
    (["compile", LM, "--target", "dgx-a100-80g", "--dp", "8", "--global-batch", "12", "--seq", "32"],
     "global batch 12 is not a multiple of dp·micro_batch = 8"),
    (["compile", LM, "--target", "dgx-a100-80g", "--tp", "two"], "argument --tp: invalid int value: 'two'"),
    (["compile", LM, "--target", "dgx-a100-80g", "--zero", "5"], "argument --zero: invalid choice: 5"),
    (["compile", LM, "--target", "dgx-a100-80g", "--recompute", "sometimes"], "argument --recompute: unknown recompute policy 'sometimes'"),
    (["compile", LM, "--target", "dgx-a100-80g", "--placement", "random"], "argument --placement: invalid choice"),
    (["compile", LM, "--target", "dgx-a100-80g", "--stack", "no-such-stack"], "unknown stack 'no-such-stack'"),
    (["compile", LM, "--target", "dgx-a100-80g", "--stack", "{binary.yaml}"], "is not a text file"),
    (["compile", LM, "--target", "dgx-a100-80g", "--stack", "{stack_types.yaml}"], "kernels"),
    (["compile", LM, "--plan", "x.yaml"], "the following arguments are required: --target"),
    # search
    (["search", LM, "--target", "dgx-a100-80g", "--seq", "32"], "give the number of GPUs (--devices N)"),
    (["search", LM, "--target", "watos-config3", "--global-batch", "0", "--out", "{out}"],
     "--seq and --global-batch must be positive"),
    (["search", LM, "--target", "watos-config3", "--consider", "tp", "--out", "{out}"], "expected a plan YAML file"),
    (["search", LM, "--target", "watos-config3", "--consider", "tp=abc", "--out", "{out}"], "tp: "),
    (["search", LM, "--target", "watos-config3", "--consider", "{plan_unknown.yaml}"], "bogus: unknown field"),
    (["search", LM, "--target", "{binary.yaml}", "--out", "{out}"], "is not a text file"),
    (["search", LM, "--target", "watos-config3", "--seq", "32", "--global-batch", "5", "--out", "{out}"],
     "do not divide the global batch of 5 sequences"),
    (["search", LM, "--target", "watos-config3", "--routing-skew", "-1"], "skew"),
    # explore
    (["explore", LM, "--template", "no-such-template"], "unknown template 'no-such-template'"),
    (["explore", LM, "--template", "{binary.yaml}", "--out", "{out}"], "is not a text file"),
    (["explore", LM, "--template", "{template_types.yaml}"], "template_types.yaml: "),
    (["explore", LM, "--template", "watos-wafer", "--space", "missing.yaml"], "space file not found: missing.yaml"),
    (["explore", LM, "--template", "watos-wafer", "--space", "{space_unknown.yaml}"], "unknown variable 'no_such_variable'"),
    (["explore", LM, "--template", "watos-wafer", "--space", "{space_range.yaml}"], "a range is {min, max, step}"),
    (["explore", LM, "--template", "watos-wafer", "--space", "{space_empty.yaml}"], "give a non-empty list of numbers"),
    (["explore", LM, "--template", "watos-wafer", "--space", "{space_words.yaml}"], "give a non-empty list of numbers"),
    (["explore", LM, "--template", "watos-wafer", "--workers", "0", "--out", "{out}"], "must be positive"),
    (["explore", LM, "--template", "watos-wafer", "--objective", "speed"], "argument --objective: invalid choice"),
    (["explore", "no-such-model", "--template", "watos-wafer", "--out", "{out}"], "unknown model 'no-such-model'"),
    # validate
    (["validate", "missing.json"], "validation file not found: missing.json"),
    (["validate", "{binary.json}"], "is not a text file"),
    (["validate", "{folder.json}"], "is a directory, not a file"),
    (["validate", "{broken.json}"], "malformed JSON"),
    (["validate", "{list.json}"], "must be a JSON object"),
    (["validate", "{cases_format.json}"], "(field 'format')"),
    (["validate", "{cases_empty.json}"], "no cases"),
    (["validate", "{cases_field.json}"], "case x: "),
]


@pytest.fixture
def bad_files(tmp_path):
    for name, content in FILES.items():
        (tmp_path / name).write_bytes(content)
    (tmp_path / "folder.json").mkdir()
    (tmp_path / "folder.yaml").mkdir()
    return tmp_path


def _argv(argv, folder):
    names = {name: str(folder / name) for name in [*FILES, "folder.json", "folder.yaml"]}
    names["out"] = str(folder / "out")
    for name, path in names.items():
        argv = [a.replace(f"{{{name}}}", path) for a in argv]
    return argv


def test_the_matrix_is_large_and_covers_every_command():
    assert len(MATRIX) >= 40
    assert {argv[0] for argv, _ in MATRIX} == {"trace", "compile", "search", "explore", "validate"}


@pytest.mark.parametrize("argv,needle", MATRIX, ids=[" ".join(a)[:60] for a, _ in MATRIX])
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(bad_files, capsys, argv, needle):
    before = sorted(p.name for p in bad_files.iterdir())
    with pytest.raises(SystemExit) if _is_usage_error(needle) else _no_exit() as raised:
        code = main(_argv(argv, bad_files))
    code = raised.value.code if raised is not None else code
    out, err = capsys.readouterr()
    assert code == 2, err
    assert needle in err, err
    assert err.count("\n") == 1 and err.startswith("watos") and "Traceback" not in err
    assert sorted(p.name for p in bad_files.iterdir()) == before  # no output folder, no staging left


def _is_usage_error(needle: str) -> bool:
    return needle.startswith(("argument ", "unrecognized arguments", "the following arguments"))


class _no_exit:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def _subcommands():
    from watos.cli import build_parser

    return build_parser()._subparsers._group_actions[0].choices


@pytest.mark.parametrize("command", ["trace", "compile", "search", "explore", "validate", "models", "targets",
                                     "stacks", "passes"])
def test_help_describes_every_option_with_its_default(command):
    parser = _subcommands()[command]
    text = " ".join(parser.format_help().split())
    for action in parser._actions:
        assert action.help, f"{command} {action.option_strings or action.dest}: no help"
        if action.option_strings and action.default not in (None, False, [], "==SUPPRESS=="):
            assert f"default: {action.default}" in text, f"{command} {action.option_strings[0]}: default not shown"
    assert "--verbose" in text


@pytest.mark.parametrize("command,option,unit", [
    ("trace", "--seq", "tokens"), ("compile", "--seq", "tokens"), ("search", "--seq", "tokens"),
    ("explore", "--seq", "tokens"), ("trace", "--micro-batch", "sequences"), ("compile", "--micro-batch", "sequences"),
    ("compile", "--global-batch", "sequences"), ("search", "--global-batch", "sequences"),
    ("explore", "--batch-per-die", "sequences"),
])
def test_help_gives_units(command, option, unit):
    action = next(a for a in _subcommands()[command]._actions if option in a.option_strings)
    assert unit in action.help


def test_compile_takes_placement_attention_and_plugin_flags(capsys, tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({**LLAMA, "num_attention_heads": 8, "num_hidden_layers": 4}))
    plan = ["compile", str(config), "--target", "watos-config3", "--tp", "2", "--pp", "2", "--dp", "14", "--seq", "32",
            "--global-batch", "14", "--json"]
    results = {}
    for placement in ("row_major", "snake"):
        for attention in ("sdpa", "eager"):
            assert main([*plan, "--placement", placement, "--attention", attention]) == 0
            results[placement, attention] = json.loads(capsys.readouterr()[0])
    assert {r["plan"]["placement"] for r in results.values()} == {"row_major", "snake"}
    assert results["row_major", "sdpa"]["step_time_s"] != results["row_major", "eager"]["step_time_s"]
    assert main([*plan, "--plugin", "missing.py"]) == 2


def test_fp32_example_inputs_are_cast_to_the_traced_dtype(capsys):
    """tests/fixtures/regressor.py makes fp32 inputs (torch's default) for a model traced in bf16."""
    assert main(["trace", "tests/fixtures/regressor.py:regressor", "--seq", "8", "--json"]) == 0
    report = json.loads(capsys.readouterr()[0])
    assert report["dtype"] == "bf16" and report["parameters"] == 16 * 64 + 64 + 64 + 1


def test_explore_with_no_feasible_point_says_why(tmp_path, capsys):
    space = tmp_path / "space.yaml"
    space.write_text("die_width_mm: [40, 50]\n")
    out = tmp_path / "out"
    assert main(["explore", LM, "--template", "watos-wafer", "--space", str(space), "--out", str(out)]) == 0
    text = capsys.readouterr()[0]
    assert "none of the 2 points on watos-wafer is feasible" in text and "exceeds the reticle" in text
    assert sorted(p.name for p in out.iterdir()) == ["explore.json", "report.html"]  # no blank pareto.png


def test_library_noise_stays_off_the_terminal_unless_verbose(capsys, tmp_path):
    """A fake-tensor failure inside torch logs its whole traceback (~34 lines) before WATOS reports it: off the
    terminal, unless --verbose."""
    config = tmp_path / "gptj.json"  # rotary_dim 64 > the head dimension 16: torch fails inside fake tensors
    config.write_text(json.dumps({"model_type": "gptj", "n_embd": 64, "n_layer": 2, "n_head": 4, "vocab_size": 512}))
    for verbose in (False, True):  # a fresh process: torch's log handlers bind the stderr of their first import
        run = subprocess.run([sys.executable, "-m", "watos", "trace", str(config), "--seq", "16",
                              *(["--verbose"] if verbose else [])], capture_output=True, text=True)
        assert run.returncode == 2
        assert "tracing failed" in run.stderr and (run.stderr.count("\n") > 1) is verbose
    import logging
    import warnings

    from watos.cli.common import quiet_libraries

    with warnings.catch_warnings(record=True) as heard:
        warnings.simplefilter("always")
        with quiet_libraries(False):
            warnings.warn("a warning from torch")
    assert not heard and logging.root.manager.disable == logging.NOTSET  # restored after the command
