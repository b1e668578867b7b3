"""The command line: help, entry points, error format."""

import re
import subprocess
import sys

import pytest

from tests.conftest import ROOT, require, run_cli


def test_every_command_has_its_docstring_as_help(capsys):
    from fmnist_yolo.cli import COMMANDS

    assert set(COMMANDS) >= {"prepare", "check", "train", "tune", "recipes", "val", "predict", "compare", "report"}
    for name, fn in COMMANDS.items():
        code, out, _ = run_cli([name, "--help"], capsys)
        doc = fn.__doc__.strip()
        assert code == 0 and len(doc) > 40 and f"fmnist-yolo {name}" in out
        assert " ".join(doc.split()[:8]) in " ".join(out.split())  # the docstring is the help


def test_flags_of_0_1_are_errors_naming_the_word(tmp_path, capsys):
    """0.1's --flags went in 0.3 (CHANGELOG.md): one is an error that names it, and nothing runs."""
    code, _, err = run_cli(["prepare", "--source", str(tmp_path / "x")], capsys)
    assert code == 1 and err == "Error: expected key=value, found '--source'\n"
    assert not (tmp_path / "x").exists()


def test_no_command_is_usage_error(capsys):
    code, _, err = run_cli([], capsys)
    assert code == 2 and "COMMAND" in err


def test_python_m_entry_point():
    r = subprocess.run([sys.executable, "-m", "fmnist_yolo", "--version"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("fmnist-yolo ")


def test_error_exit_code_subprocess(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "fmnist_yolo", "prepare", f"source={tmp_path / 'x'}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 1 and r.stderr == f"Error: {tmp_path / 'x'}: source directory not found\n"


def test_make_resume_target():
    """`make resume RUN=...` calls the same resume path (dry run: nothing is executed)."""
    require("make", program=True)
    r = subprocess.run(["make", "-n", "resume", "RUN=runs/classify/x"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0 and "-m fmnist_yolo train resume=runs/classify/x" in r.stdout
    r = subprocess.run(["make", "resume"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode != 0 and "usage: make resume RUN=" in r.stderr


def test_no_message_names_the_old_flags():
    """Nothing tells the user to type 0.1's --flags: messages say key=value."""
    import ast

    flags = ("--source", "--out", "--val", "--seed", "--workers", "--force", "--no-verify", "--top", "--csv")
    pattern = re.compile(r"(?<![\w-])(" + "|".join(re.escape(f) for f in flags) + r")\b")
    found = []
    for path in sorted((ROOT / "fmnist_yolo").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and pattern.search(node.value):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value[:80]}")
    assert not found, found


# --- help and checks drawn from the one argument schema (fmnist_yolo.config.OPTIONS) ---------------------------


def _options_section(out: str) -> str:
    return out.split("Options:\n", 1)[1].split("\n\n", 1)[0] if "Options:\n" in out else ""


def test_each_command_help_lists_exactly_the_options_it_takes(capsys):
    """Every option a command takes is in its help with its default and help line, and nothing else is."""
    from fmnist_yolo.cli import COMMANDS, PASSES
    from fmnist_yolo.config import help_lines, options

    for name in COMMANDS:
        code, out, _ = run_cli([name, "--help"], capsys)
        declared = options(name)
        section = _options_section(out)
        assert code == 0 and section == "\n".join(help_lines(name)), name
        for option in declared.values():
            assert option.usage() in section and option.help.split()[0] in section, (name, option.key)
            if option.metavar and option.default is not None:
                assert f"(default {option.default})" in " ".join(section.split()), (name, option.key)
        shown = {m[0] or m[1] for m in re.findall(r"^  (?:(\w+)=|([A-Z_]+)\b)", section, flags=re.M)}
        positional = {o.usage() for o in declared.values() if o.positional}
        assert shown == (set(declared) - {o.key for o in declared.values() if o.positional}) | positional, name
        synopsis = " ".join(out.split(f"fmnist-yolo {name} ", 2)[-1].split("\n\n")[0].split())
        keys = set(re.findall(r"\[?(\w+)=", synopsis)) - {"key"}
        assert keys == set(declared) - {o.key for o in declared.values() if o.positional}, name
        assert ("[Ultralytics " in synopsis) == (name in PASSES), name


def test_prepare_help_names_link(capsys):
    code, out, _ = run_cli(["prepare", "--help"], capsys)
    assert code == 0 and "[link=True|False]" in out and "\n  link=True|False " in out  # accepted, and now shown


@pytest.mark.parametrize(
    "argv, key",
    [
        (["prepare", "val_size=-5"], "val_size"),
        (["prepare", "workers=0"], "workers"),
        (["prepare", "force=maybe"], "force"),
        (["check", "some/tree", "workers=two"], "workers"),
        (["report", "some/run", "top=many"], "top"),
        (["compare", "skip_damaged=2"], "skip_damaged"),
        (["tune", "grace_period=0"], "grace_period"),
        (["export", "model=x.pt", "check=maybe"], "check"),
        (["train", "select_on=top5"], "select_on"),
        (["val", "model=x.pt", "split=dev"], "split"),
    ],
)
def test_an_ill_typed_or_out_of_range_value_is_one_line_naming_the_key(argv, key, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing is written; were it, it would land here
    code, out, err = run_cli(argv, capsys)
    assert code == 1 and err.count("\n") == 1 and (err.startswith(f"Error: {key}=") or err.startswith(f"Error: {key} "))
    assert not list(tmp_path.iterdir())


def test_unknown_key_message_is_the_same_from_every_entry_point(capsys, tmp_path):
    """The CLI's own commands, train's argument resolution and the Ultralytics pass-through all say it one way."""
    from fmnist_yolo.errors import ConfigError
    from fmnist_yolo.evaluation.evaluate import check_ultralytics_keys
    from fmnist_yolo.training.args import resolve_args

    code, _, err = run_cli(["prepare", "vall_size=10"], capsys)
    assert code == 1 and err == "Error: unknown prepare argument 'vall_size'; did you mean 'val_size'?\n"
    with pytest.raises(ConfigError) as caught:
        resolve_args({"epocs": 3})
    assert str(caught.value) == "unknown argument 'epocs'; did you mean 'epochs'?"
    with pytest.raises(ConfigError) as caught:
        check_ultralytics_keys({"imgsize": 32}, "val")
    assert str(caught.value) == "unknown argument 'imgsize'; did you mean 'imgsz'?"
    code, _, err = run_cli(["compare", "zzzz=1"], capsys)
    assert err == "Error: unknown compare argument 'zzzz'; it takes csv, runs_dir, skip_damaged\n"
