"""benchmarks/gpu_proof.py's dry run on CPU: the script a GPU session runs cannot rot between GPU sessions.

Three calls as device sessions would make them: the whole proof (tiny, 2 epochs), a call whose budget stops the run
after its first epoch (last.pt comes back), and a call that resumes from what came back and finishes the run; the
last two without polars, as benchmarks/gpu_carry.sh leaves the GPU machine.
"""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fmnist_yolo import prepare

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def proof(*args: str, env: dict | None = None) -> dict:
    r = subprocess.run([sys.executable, "benchmarks/gpu_proof.py", "--dry-run", *args], cwd=ROOT,
                       capture_output=True, text=True, timeout=600, env=env)  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out = Path(args[args.index("--out") + 1])
    assert all(p.is_file() for p in out.iterdir()) and len(list(out.iterdir())) <= 7  # a device call returns <= 8
    return json.loads((out / "summary.json").read_text())


def rows(out: Path) -> int:
    with open(out / "results.csv") as f:
        return len(list(csv.DictReader(f)))


def test_dry_run_proves_stops_on_its_budget_and_resumes(source, tmp_path):
    tree = prepare(source=source, out=tmp_path / "tree", val_size=20, verify=False, workers=1, progress=False)
    common = ["--data", str(tree), "--run-root", str(tmp_path / "root")]

    whole = proof(*common, "--out", str(tmp_path / "whole"))
    assert whole["tests"]["rc"] == 0 and whole["stride"] == {"skipped": "no CUDA"}
    arms = {r["arm"]: r for r in json.loads((tmp_path / "whole" / "throughput.json").read_text())}
    assert set(arms) == {"model", "fast", "stock"} and all(r.get("img_s", 0) > 0 for r in arms.values()), arms
    assert whole["train"]["finished"] and whole["train"]["epochs_completed"] == 2
    assert whole["train"]["metrics"]["test"]["top1"] is not None and rows(tmp_path / "whole") == 2
    assert not (tmp_path / "whole" / "last.pt").exists()  # a finished run brings nothing to resume

    common[-1] = str(tmp_path / "root2")  # a fresh machine, without polars as the carry leaves it
    (tmp_path / "nopolars").mkdir()
    (tmp_path / "nopolars" / "polars.py").write_text("raise ImportError('not carried')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "nopolars"), str(ROOT)])}
    skip = ["--skip", "tests,stride,throughput"]
    cut = proof(*common, *skip, "--out", str(tmp_path / "cut"), "--budget", "1", env=env)
    assert not cut["train"]["finished"] and cut["train"]["epochs_this_call"] == 1
    assert (tmp_path / "cut" / "last.pt").is_file() and rows(tmp_path / "cut") == 1

    common[-1] = str(tmp_path / "root3")  # the next session's machine, with what came back carried in
    resumed = proof(*common, *skip, "--out", str(tmp_path / "resumed"), "--resume", str(tmp_path / "cut"), env=env)
    assert resumed["train"]["finished"] and resumed["train"]["epochs_this_call"] == 1
    assert resumed["train"]["epochs_completed"] == 2 and rows(tmp_path / "resumed") == 2
    record = json.loads((tmp_path / "resumed" / "fmnist_yolo.json").read_text())
    assert record["status"] == "finished" and len(record["resumed"]) == 1
