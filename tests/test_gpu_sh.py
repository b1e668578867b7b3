"""benchmarks/gpu.sh is sourced into the user's own shell: a missing carry or a failing step must not end it."""

import os
import shutil
import subprocess

import pytest

from tests.conftest import ROOT

SCRIPT = ROOT / "benchmarks" / "gpu.sh"


def _source(cwd, env=None) -> subprocess.CompletedProcess:
    """Source gpu.sh in a bash that then says it is still alive, with its exit status and shell options."""
    line = f'source {SCRIPT}; echo "alive rc=$? opts=$-"'
    return subprocess.run(["bash", "-c", line], cwd=cwd, capture_output=True, text=True, env=env, timeout=60)


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_a_checkout_without_the_carry_is_told_and_the_shell_lives(tmp_path):
    (tmp_path / "fmnist_yolo").mkdir()
    (tmp_path / "fmnist_yolo" / "__init__.py").write_text("")
    done = _source(tmp_path)
    assert "alive rc=1" in done.stdout and "e" not in done.stdout.split("opts=")[1], done
    assert ".whl/*.whl" in done.stderr and ".gpu/fmnist-idx.tar.xz" in done.stderr and "Nothing done" in done.stderr
    assert not (tmp_path / ".whl").exists()


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash")
def test_a_failing_step_returns_without_ending_the_shell(tmp_path):
    (tmp_path / "fmnist_yolo").mkdir()
    (tmp_path / "fmnist_yolo" / "__init__.py").write_text("")
    for f in (".whl/x-1.0-py3-none-any.whl", ".gpu/polars-runtime.tar.xz", ".gpu/fmnist-idx.tar.xz"):
        (tmp_path / f).parent.mkdir(exist_ok=True)
        (tmp_path / f).write_text("")
    stubs = tmp_path / "bin"
    stubs.mkdir()
    (stubs / "python3").write_text("#!/bin/sh\necho pip failed >&2\nexit 3\n")  # the install step fails
    (stubs / "python3").chmod(0o755)
    done = _source(tmp_path, {**os.environ, "PATH": f"{stubs}:{os.environ['PATH']}"})
    assert "alive rc=1" in done.stdout and "e" not in done.stdout.split("opts=")[1], done
    assert "pip failed" in done.stderr and "the step above failed" in done.stderr
