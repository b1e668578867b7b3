"""The command line: help, entry points, error format."""

import subprocess
import sys

import pytest

from tests.conftest import ROOT, require, run_cli

SUBCOMMANDS = ["prepare", "check", "train", "recipes", "val", "predict", "compare", "report"]


@pytest.mark.parametrize("sub", SUBCOMMANDS)
def test_help(sub, capsys):
    code, out, _ = run_cli([sub, "--help"], capsys)
    assert code == 0 and f"fmnist-yolo {sub}" in out


def test_no_command_is_usage_error(capsys):
    code, _, err = run_cli([], capsys)
    assert code == 2 and "COMMAND" in err


def test_python_m_entry_point():
    r = subprocess.run([sys.executable, "-m", "fmnist_yolo", "--version"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.startswith("fmnist-yolo ")


def test_error_exit_code_subprocess(tmp_path):
    r = subprocess.run([sys.executable, "-m", "fmnist_yolo", "prepare", "--source", str(tmp_path / "x")],
                       cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 1 and r.stderr == f"Error: {tmp_path / 'x'}: source directory not found\n"


def test_make_resume_target():
    """`make resume RUN=...` calls the same resume path (dry run: nothing is executed)."""
    require("make", program=True)
    r = subprocess.run(["make", "-n", "resume", "RUN=runs/classify/x"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0 and "-m fmnist_yolo train resume=runs/classify/x" in r.stdout
    r = subprocess.run(["make", "resume"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode != 0 and "usage: make resume RUN=" in r.stderr
