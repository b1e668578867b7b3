"""Interrupted training (SIGINT, SIGKILL) resumed from last.pt to the planned epochs, recorded in provenance."""

import json
import signal
import subprocess
import sys
import time

import pandas as pd
import pytest

import fmnist_yolo
from fmnist_yolo import load_history, prepare
from fmnist_yolo.errors import FmnistWarning, RunError
from fmnist_yolo.rundir import PROVENANCE, SAFE_LAST
from tests.conftest import ROOT, run_cli

EPOCHS = 25


def _train_cmd(tree, project) -> list[str]:
    return [sys.executable, "-m", "fmnist_yolo", "train", "model=yolo11n-cls.yaml", f"epochs={EPOCHS}", "batch=16",
            "workers=0", "plots=False", f"data={tree}", f"project={project}", "name=r"]  # fmt: skip


def _epochs_done(run_dir) -> int:
    try:
        return max(0, len((run_dir / "results.csv").read_text().splitlines()) - 1)
    except OSError:
        return 0


@pytest.fixture
def interrupted(request, source, tmp_path):
    """A run of EPOCHS epochs on a tiny tree, stopped by a signal once two epochs are saved."""
    tree = prepare(source=source, out=tmp_path / "fm", val_size=10, verify=False, workers=1, progress=False)
    run_dir = tmp_path / "runs" / "r"
    proc = subprocess.Popen(_train_cmd(tree, tmp_path / "runs"), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 300
    while _epochs_done(run_dir) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(request.param)
    _, err = proc.communicate(timeout=120)
    return run_dir, proc.returncode, err


@pytest.mark.slow
@pytest.mark.parametrize("interrupted", [signal.SIGINT, signal.SIGKILL], indirect=True, ids=["SIGINT", "SIGKILL"])
def test_interrupt_then_resume(interrupted, capsys):
    run_dir, code, err = interrupted
    assert code in (130, -signal.SIGKILL), err[-2000:]
    if code == 130:
        assert err.rstrip().endswith("Interrupted.")
    done = len(load_history(run_dir))
    assert 2 <= done < EPOCHS
    raw_before = pd.read_csv(run_dir / "results.csv")["epoch"].tolist()  # Ultralytics' own file, as written
    assert raw_before == list(range(1, done + 1))
    before = json.loads((run_dir / PROVENANCE).read_text())
    assert before["status"] == "running" and before["model"]["pretrained"] is False  # written at the start
    assert before["args"]["fast"] is True  # the default where it serves: the fast path
    assert before["wall_time_s"] > 0 and before["epochs_completed"] >= done - 1  # and kept current every epoch
    with pytest.raises(RunError, match="training has not finished"):
        fmnist_yolo.Run.load(run_dir)
    assert "Training has not finished" in fmnist_yolo.report(run_dir).read_text()  # the epochs so far
    row = fmnist_yolo.compare(run_dir.parent).iloc[0]
    assert row["status"] == "running" and row["epochs_completed"] == done and pd.isna(row["test_top1"])

    code, out, err = run_cli(["train", f"resume={run_dir}"], capsys)
    assert code == 0, err[-2000:]
    assert f"Resuming {run_dir} after epoch " in err and f"Run {run_dir}: val top-1" in out
    history = load_history(run_dir)
    assert list(history.index) == list(range(1, EPOCHS + 1))
    (resumed,) = json.loads((run_dir / PROVENANCE).read_text())["resumed"]
    # continued, not restarted: the raw rows go on from the checkpoint's epoch (a kill between an epoch's row and
    # its checkpoint repeats that one epoch, never more)
    raw = pd.read_csv(run_dir / "results.csv")["epoch"].tolist()
    assert raw == raw_before + list(range(resumed["completed_epochs"] + 1, EPOCHS + 1))
    assert len(raw) - EPOCHS == done - resumed["completed_epochs"] <= 1
    p = json.loads((run_dir / PROVENANCE).read_text())
    assert p["status"] == "finished" and p["epochs_completed"] == EPOCHS and p["epochs_planned"] == EPOCHS
    assert p["args"]["fast"] is True  # the loader it was recorded with, which the resume's trainer is chosen by
    assert p["wall_time_s"] > before["wall_time_s"]  # the interrupted part's time is kept, not restarted
    (resumed,) = p["resumed"]
    assert resumed["checkpoint"] == str(run_dir / "weights" / "last.pt") and resumed["planned_epochs"] == EPOCHS
    assert resumed["completed_epochs"] >= done - 1  # the kill may land between an epoch's row and its checkpoint
    assert p["model"] == {**before["model"], "parameters": p["model"]["parameters"]}  # original facts kept
    assert p["metrics"]["test"]["images"] == 30 and (run_dir / "test_predictions.csv").is_file()

    code, _, err = run_cli(["train", f"resume={run_dir}"], capsys)  # nothing left to do: said, not restarted
    assert code == 1 and "training already finished" in err and err.count("\n") == 1


def test_resume_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # runs/ below is the project's own: no untrusted-checkpoint warning
    code, _, err = run_cli(["train", "resume=runs/nope"], capsys)
    assert code == 1 and err == "Error: runs/nope: run directory not found\n"
    for key in ("fast=False", "recipe=cpu", "evaluate_test=False"):  # fmnist-yolo's own keys: fixed by the record
        code, _, err = run_cli(["train", "resume=runs/nope", key], capsys)
        assert code == 1 and err.startswith(f"Error: {key.split('=')[0]}= cannot be given with resume=: "), err
    (tmp_path / "runs" / "r" / "weights").mkdir(parents=True)
    code, _, err = run_cli(["train", "resume=runs/r"], capsys)
    assert code == 1 and "no checkpoint to resume from" in err
    (tmp_path / "runs" / "r" / "weights" / "last.pt").write_bytes(b"PK\x03\x04 truncated")
    code, _, err = run_cli(["train", "resume=runs/r"], capsys)
    assert code == 1 and "damaged checkpoint" in err and SAFE_LAST in err and err.count("\n") == 1, err


@pytest.mark.slow
def test_truncated_last_falls_back_to_safe_copy(source, tmp_path, capsys):
    """A kill during Ultralytics' in-place write of last.pt: resume uses the atomic copy of the epoch before."""
    from fmnist_yolo.training.train import resume_checkpoint

    tree = prepare(source=source, out=tmp_path / "fm", val_size=10, verify=False, workers=1, progress=False)
    run = fmnist_yolo.train(model="yolo11n-cls.yaml", epochs=2, batch=16, workers=0, plots=False, data=str(tree),
                            project=str(tmp_path / "runs"), name="r")  # fmt: skip
    safe = run.dir / "weights" / SAFE_LAST
    assert safe.is_file()
    # Make it look interrupted: the safe copy is the epoch-2 checkpoint before the final strip; last.pt cut short
    last = run.dir / "weights" / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])
    with pytest.warns(FmnistWarning, match="damaged"):
        _, _, ckpt = resume_checkpoint(run.dir)  # fails only if the copy is not resumable (no optimizer state)
    assert ckpt["optimizer"] is not None and last.read_bytes() == safe.read_bytes()
