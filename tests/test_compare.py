"""compare(): one row per run, fmnist-yolo's and plain Ultralytics ones; best_epoch as Ultralytics keeps it."""

import shutil

import pandas as pd
import pytest

import fmnist_yolo
from tests.conftest import plain_ultralytics_copy, run_cli


def test_compare_empty_dir(tmp_path, capsys):
    code, _, err = run_cli(["compare", str(tmp_path)], capsys)
    assert code == 1 and err == f"Error: {tmp_path}: no training runs found\n"


@pytest.mark.slow
def test_compare_lists_every_run(tiny_run, tmp_path, capsys):
    runs = tmp_path / "runs"
    shutil.copytree(tiny_run.dir, runs / "classify" / "ours")
    plain_ultralytics_copy(tiny_run.dir, runs / "classify" / "plain")
    (runs / "classify" / "not-a-run").mkdir()
    table = fmnist_yolo.compare(runs)
    assert sorted(table["name"]) == ["classify/ours", "classify/plain"]
    ours, plain = (table.set_index("name").loc[f"classify/{n}"] for n in ("ours", "plain"))
    p = tiny_run.provenance
    assert ours["test_top1"] == p["metrics"]["test"]["top1"] and ours["macro_f1"] == p["metrics"]["test"]["macro_f1"]
    # best.pt's epoch in results.csv; the trainer's final val re-runs best.pt as saved (FP16): an image may flip
    assert abs(ours["best_val_top1"] - p["metrics"]["val"]["top1"]) <= 2e-3
    assert (ours["model"], ours["pretrained"], ours["epochs"], ours["imgsz"]) == ("yolo11n-cls.yaml", False, 2, 32)
    assert ours["parameters"] == p["model"]["parameters"] and ours["recorded_by"] == "fmnist-yolo"
    assert plain["recorded_by"] == "ultralytics" and pd.isna(plain["test_top1"]) and plain["imgsz"] == 32
    assert (ours["loader"], plain["loader"]) == ("fast", "stock")  # the default loader; Ultralytics' own
    assert plain["best_val_top1"] == ours["best_val_top1"] and plain["epochs_completed"] == 2
    assert table["name"].iloc[0] == "classify/ours"  # runs with a test score rank first

    code, out, _ = run_cli(["compare", str(runs)], capsys)
    assert code == 0 and "2 runs; table written to" in out
    written = pd.read_csv(runs / "compare.csv")
    assert list(written.columns) == list(table.columns) and list(written["name"]) == list(table["name"])


def test_plain_ultralytics_run_compares_with_the_epoch_ultralytics_kept(tmp_path):
    """A run made by Ultralytics alone (no fmnist-yolo code in it): compare reads its own files, and best_epoch is
    the epoch Ultralytics saved as best.pt (the first with the highest mean of val top-1 and top-5)."""
    from ultralytics import YOLO

    from fmnist_yolo import prepare
    from tests.conftest import learnable_arrays, write_source

    write_source(tmp_path / "src", learnable_arrays())
    tree = prepare(source=tmp_path / "src", out=tmp_path / "tree", val_size=50, verify=False, workers=1, progress=False)
    saved = []  # the epoch of each best.pt write, as the trainer decides it
    model = YOLO("yolo11n-cls.yaml")
    model.add_callback("on_model_save", lambda t: t.best_fitness == t.fitness and saved.append(t.epoch + 1))
    # AdamW: SGD at lr0=0.01 stayed at chance for 6 epochs on one machine (torch 2.11, 16 cores)
    model.train(data=str(tree), epochs=6, imgsz=28, batch=16, lr0=0.002, optimizer="AdamW", warmup_epochs=0, fliplr=0.0,
                plots=False, workers=0, device="cpu", project=str(tmp_path / "runs"), name="plain")  # fmt: skip
    history = fmnist_yolo.load_history(tmp_path / "runs" / "plain")
    assert history["val_top1"].nunique() > 1  # it learned: the rule has something to choose between
    row = fmnist_yolo.compare(tmp_path / "runs").iloc[0]
    assert row["recorded_by"] == "ultralytics" and row["epochs_completed"] == 6 and row["status"] == "finished"
    assert row["best_epoch"] == saved[-1]
    assert row["best_val_top1"] == history.loc[saved[-1], "val_top1"]
