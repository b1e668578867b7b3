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


def test_old_flags_still_work_and_say_so(tmp_path, capsys):
    code, _, err = run_cli(["prepare", "--source", str(tmp_path / "x"), "--val", "10", "--no-verify"], capsys)
    assert code == 1 and err.count("is deprecated") == 3 and "write val_size=" in err
    assert err.splitlines()[-1] == f"Error: {tmp_path / 'x'}: source directory not found"


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
    """0.1's --flags still work (with a warning) but nothing tells the user to type them: messages say key=value."""
    import ast

    from fmnist_yolo.cli import OLD_FLAGS

    pattern = re.compile(r"(?<![\w-])(" + "|".join(re.escape(f) for f in OLD_FLAGS) + r")\b")
    found = []
    for path in sorted((ROOT / "fmnist_yolo").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Dict) and any(  # the table of old flags itself
                isinstance(k, ast.Constant) and k.value == "--source" for k in node.keys
            ):
                for child in ast.walk(node):
                    child._skip = True
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and not getattr(node, "_skip", False):
                if " " in node.value and pattern.search(node.value):  # a message (not a flag compared in code)
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.value[:80]}")
    assert not found, found
