"""The command line: help, entry points, error format."""

import re
import subprocess
import sys

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
