"""Run history, run comparison and the report, from a tiny real run made in the test session."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import fmnist_yolo
from fmnist_yolo import config
from fmnist_yolo.analysis.published import place_in_benchmark
from fmnist_yolo.rundir import PROVENANCE, TEST_PREDICTIONS
from tests.conftest import ROOT, one_error, run_cli

HISTORY = ["epoch", "time", "train_loss", "val_top1", "val_top5", "val_loss", "lr_pg0", "lr_pg1", "lr_pg2"]


def plain_ultralytics_copy(run: Path, dest: Path) -> Path:
    """The run as a plain `yolo classify train` would leave it: Ultralytics' files only."""
    shutil.copytree(run, dest)
    for name in (PROVENANCE, TEST_PREDICTIONS, "report.md", "report"):
        p = dest / name
        shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    return dest


# --- without a run ------------------------------------------------------------------------


def test_benchmark_figures_carried_from_shared():
    """Every accuracy of the shared zalando-benchmark.md (a copy ships in tests/data) is in the packaged table."""
    shared = ROOT / "tests" / "data" / "zalando-benchmark.md"
    figures = [float(m) for m in re.findall(r"(?<![\d.])0\.\d{3}(?!\d)", shared.read_text())]
    assert len(figures) >= 10
    table = fmnist_yolo.benchmark_table()
    assert len(figures) == len(table) and sorted(figures) == sorted(table["test_top1"])
    assert table["test_top1"].is_monotonic_decreasing


def test_place_in_benchmark_ranks():
    table = fmnist_yolo.benchmark_table()
    top1 = (table["test_top1"].iloc[2] + table["test_top1"].iloc[3]) / 2  # between the 3rd and 4th
    placed = place_in_benchmark(top1, "ours", 1_500_000)
    ours = placed[placed["source"] == "this run"].iloc[0]
    assert ours["rank"] == 4 and len(placed) == len(table) + 1 and ours["parameters"] == 1_500_000
    assert place_in_benchmark(1.0, "perfect")["rank"].iloc[0] == 1
    assert place_in_benchmark(0.0, "worst")["rank"].iloc[-1] == len(table) + 1


@pytest.mark.parametrize(
    "argv, message",
    [
        (["compare", "/no/such/runs"], "/no/such/runs: runs directory not found"),
        (["report", "/no/such/run"], "/no/such/run: not a training run directory"),
        (["report", ".", "dat=x"], "unknown report argument 'dat'; did you mean 'data'?"),
    ],
)
def test_errors(argv, message, capsys):
    code, _, err = run_cli(argv, capsys)
    assert code == 1 and err.startswith(f"Error: {message}") and err.count("\n") == 1, err


def test_compare_empty_dir(tmp_path, capsys):
    code, _, err = run_cli(["compare", str(tmp_path)], capsys)
    assert code == 1 and err == f"Error: {tmp_path}: no training runs found\n"


# --- from the tiny run --------------------------------------------------------------------


@pytest.mark.slow
def test_history_columns_and_dtypes(tiny_run):
    h = fmnist_yolo.load_history(tiny_run.dir)
    assert list(h.columns) == HISTORY
    assert all(pd.api.types.is_numeric_dtype(t) for t in h.dtypes) and h["epoch"].dtype == np.int64
    assert list(h.index) == [1, 2] and h["time"].is_monotonic_increasing
    assert h[["val_top1", "val_top5"]].stack().between(0, 1).all()


@pytest.mark.slow
def test_stored_predictions_reload(tiny_run):
    run = fmnist_yolo.Run.load(tiny_run.dir)
    assert run.provenance == tiny_run.provenance
    assert abs(run.test.top1 - tiny_run.test.top1) < 1e-6 and abs(run.test.top5 - tiny_run.test.top5) < 1e-3
    pd.testing.assert_frame_equal(run.test.per_class, tiny_run.test.per_class)
    pd.testing.assert_frame_equal(run.test.predictions, tiny_run.test.predictions, check_dtype=False)


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
    model.train(data=str(tree), epochs=6, imgsz=28, batch=16, lr0=0.01, optimizer="SGD", warmup_epochs=0, fliplr=0.0,
                plots=False, workers=0, device="cpu", project=str(tmp_path / "runs"), name="plain")  # fmt: skip
    history = fmnist_yolo.load_history(tmp_path / "runs" / "plain")
    assert history["val_top1"].nunique() > 1  # it learned: the rule has something to choose between
    row = fmnist_yolo.compare(tmp_path / "runs").iloc[0]
    assert row["recorded_by"] == "ultralytics" and row["epochs_completed"] == 6 and row["status"] == "finished"
    assert row["best_epoch"] == saved[-1]
    assert row["best_val_top1"] == history.loc[saved[-1], "val_top1"]


def test_stale_or_missing_stored_predictions_are_rebuilt(source, tmp_path, caplog):
    """test_predictions.csv is derived from best.pt: one older than best.pt (or none) is evaluated anew, stored, and
    said so; Run.load and report never show predictions of other weights."""
    import os

    from fmnist_yolo import prepare

    tree = prepare(source=source, out=tmp_path / "tree", val_size=20, verify=False, workers=1, progress=False)
    run = fmnist_yolo.train(model="yolo11n-cls.yaml", epochs=1, batch=16, plots=False, workers=0, data=str(tree),
                            project=str(tmp_path / "runs"), name="r")  # fmt: skip
    preds, best = run.dir / TEST_PREDICTIONS, run.dir / "weights" / "best.pt"
    table = pd.read_csv(preds)
    table["confidence"] = 0.123  # a marker: stale predictions must not be shown
    table.to_csv(preds, index=False)
    earlier = best.stat().st_mtime - 10
    os.utime(preds, (earlier, earlier))  # best.pt newer than the predictions, as after training on
    caplog.set_level("INFO", logger="fmnist_yolo")
    caplog.clear()
    loaded = fmnist_yolo.Run.load(run.dir)
    assert "is older than best.pt: evaluated" in caplog.text
    assert (loaded.test.predictions["confidence"] != 0.123).all() and preds.stat().st_mtime >= best.stat().st_mtime
    assert loaded.test.top1 == pytest.approx(run.test.top1)
    assert (pd.read_csv(preds)["confidence"] != 0.123).all()  # stored again
    preds.unlink()
    caplog.clear()
    fmnist_yolo.report(run.dir)
    assert "is missing: evaluated" in caplog.text and preds.is_file()


def test_run_load_evaluates_a_run_trained_without_test(source, tmp_path):
    from fmnist_yolo import prepare

    tree = prepare(source=source, out=tmp_path / "tree", val_size=20, verify=False, workers=1, progress=False)
    run = fmnist_yolo.train(model="yolo11n-cls.yaml", epochs=1, batch=16, plots=False, workers=0, data=str(tree),
                            project=str(tmp_path / "runs"), name="r", evaluate_test=False)  # fmt: skip
    assert run.test is None and not (run.dir / TEST_PREDICTIONS).exists()
    loaded = fmnist_yolo.Run.load(run.dir)
    assert len(loaded.test.per_class) == 10 and len(loaded.test.predictions) == 30


def _referenced_images(md: str) -> list[str]:
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)


@pytest.mark.slow
def test_report_files(tiny_run, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run.dir, run)
    # Offline: drawing must not reach for Ultralytics' font (or anything else) download
    monkeypatch.setattr("ultralytics.utils.downloads.safe_download", lambda *a, **k: pytest.fail("download"))
    code, out, _ = run_cli(["report", str(run), "csv=True", "top=12"], capsys)
    assert code == 0 and f"Report written to {run / 'report.md'}" in out
    md = (run / "report.md").read_text()
    images = _referenced_images(md)
    assert len(images) == 4
    for rel in images:
        with Image.open(run / rel) as im:
            assert im.format == "PNG" and min(im.size) > 200, rel
    for section in ("## Summary", "## Learning curves", "## Confusion matrix", "## Per-class metrics",
                    "## Calibration", "most confidently misclassified",
                    "## Place in the Fashion-MNIST benchmark"):  # fmt: skip
        assert section in md
    assert "Not pretrained" in md and "32 trained" in md
    assert md.count("\n| " + config.CLASS_DIRS[0]) >= 1  # per-class rows are a Markdown table
    tables = {p.stem: p for p in (run / "report").glob("*.csv")}
    assert set(tables) == {"summary", "history", "per_class", "confusion", "confusion_normalized", "top_confusions",
                           "misclassified", "calibration", "benchmark"}  # fmt: skip
    wrong = pd.read_csv(tables["misclassified"])
    stored = pd.read_csv(run / TEST_PREDICTIONS)
    expected = stored[~stored["correct"]].sort_values("confidence", ascending=False, kind="stable").head(12)
    assert wrong["file"].tolist() == expected["file"].tolist()  # the 12 most confident errors of all 10,000
    calibration = pd.read_csv(tables["calibration"])
    assert calibration["count"].sum() == 10000 and f"**{tiny_run.test.ece:.4f}**" in md
    assert pd.read_csv(tables["per_class"])["support"].sum() == 10000
    bench = pd.read_csv(tables["benchmark"])
    ours = bench[bench["source"] == "this run"]
    assert len(ours) == 1 and ours["test_top1"].iloc[0] == pytest.approx(tiny_run.test.top1)
    assert f"ranks **{ours['rank'].iloc[0]} of {len(bench)}**" in md


@pytest.mark.slow
def test_report_of_plain_ultralytics_run(tiny_run, real_tree, tmp_path):
    """No provenance, no stored predictions: the report evaluates best.pt on the run's data and stores them."""
    run = plain_ultralytics_copy(tiny_run.dir, tmp_path / "runs" / "plain")
    path = fmnist_yolo.report(run)
    assert all((run / rel).is_file() for rel in _referenced_images(path.read_text()))
    assert "plain Ultralytics run" in path.read_text()
    stored = pd.read_csv(run / TEST_PREDICTIONS)
    assert len(stored) == 10000 and abs(stored["correct"].mean() - tiny_run.test.top1) < 1e-3
    row = fmnist_yolo.compare(tmp_path / "runs").iloc[0]
    assert abs(row["test_top1"] - tiny_run.test.top1) < 1e-3  # compare now has its test score too


@pytest.mark.slow
def test_report_refuses_missing_images(tiny_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_run.dir, run)
    table = pd.read_csv(run / TEST_PREDICTIONS)
    table["file"] = "/gone/" + table["file"].str.rsplit("/", n=1).str[1]
    table.to_csv(run / TEST_PREDICTIONS, index=False)
    code, _, err = run_cli(["report", str(run)], capsys)
    last = one_error(err)  # (after the warning about loading a checkpoint from outside runs/)
    assert code == 1 and last.startswith("Error: /gone/") and "test image not found" in last
    assert not (run / "report.md").exists()
    json.loads((run / PROVENANCE).read_text())  # untouched
