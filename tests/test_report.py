"""report(): report.md and its figures, for fmnist-yolo runs and plain Ultralytics ones; stored predictions."""

import json
import re
import shutil

import pandas as pd
import pytest
from PIL import Image

import fmnist_yolo
from fmnist_yolo import config
from fmnist_yolo.rundir import PROVENANCE, TEST_PREDICTIONS
from tests.conftest import one_error, plain_ultralytics_copy, run_cli


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


def _copy_run(tiny, tmp_path):
    """A copy of the session's tiny synthetic run (its stored predictions still point into its tree)."""
    tree, run = tiny
    copy = tmp_path / "runs" / "r"
    shutil.copytree(run.dir, copy)
    return tree, copy


def test_stored_predictions_name_their_weights(tiny):
    stored = pd.read_csv(tiny[1].dir / TEST_PREDICTIONS)
    assert set(stored["weights"]) == {"weights/best.pt"}  # relative: the run directory may move
    assert fmnist_yolo.Run.load(tiny[1].dir).test.weights == str(tiny[1].dir / "weights" / "best.pt")


def test_report_on_another_tree_keeps_the_runs_own(tiny, tmp_path):
    """data=OTHER never replaces the run's test result: the other tree's evaluation and report are kept apart,
    labelled with the tree and its manifest checksum. The run's own data moved elsewhere is still its own."""
    from fmnist_yolo import prepare
    from fmnist_yolo.data.tree import manifest_checksum
    from tests.conftest import synthetic_arrays, write_source

    tree, run = _copy_run(tiny, tmp_path)
    write_source(tmp_path / "src", synthetic_arrays(seed=1))
    other = prepare(source=tmp_path / "src", out=tmp_path / "other", val_size=20, verify=False, workers=1,
                    progress=False)  # fmt: skip
    checksum = manifest_checksum(other)
    before = (run / TEST_PREDICTIONS).read_bytes()
    own_top1 = fmnist_yolo.Run.load(run).test.top1

    path = fmnist_yolo.report(run, data=other)
    label = f"other-{checksum[:12]}"
    assert path == run / f"report.{label}.md" and not (run / "report.md").exists() and not (run / "report").exists()
    assert (run / TEST_PREDICTIONS).read_bytes() == before  # the run's own, untouched
    apart = pd.read_csv(run / f"test_predictions.{label}.csv")
    assert set(apart["weights"]) == {"weights/best.pt"} and apart["file"].str.startswith(str(other)).all()
    md = path.read_text()
    assert f"best.pt on {other} (manifest sha256 {checksum[:12]}...)" in md and "another tree" in md
    assert all((run / rel).is_file() and rel.startswith(f"report.{label}/") for rel in _referenced_images(md))
    assert fmnist_yolo.Run.load(run).test.top1 == own_top1
    assert fmnist_yolo.compare(run.parent).iloc[0]["test_top1"] == pytest.approx(own_top1)

    moved = shutil.copytree(tree, tmp_path / "moved")  # the same data elsewhere (same manifest): the run's own
    fmnist_yolo.report(run, data=moved)
    stored = pd.read_csv(run / TEST_PREDICTIONS)
    assert stored["file"].str.startswith(str(moved)).all() and (run / "report.md").is_file()
    assert "the run's own test split" in (run / "report.md").read_text()

    record = json.loads((run / PROVENANCE).read_text())  # the run's own tree, then rebuilt from other data
    record["data"]["tree"] = str(moved)
    (run / PROVENANCE).write_text(json.dumps(record))
    prepare(source=tmp_path / "src", out=moved, val_size=20, verify=False, workers=1, progress=False, force=True)
    (run / TEST_PREDICTIONS).unlink()
    path = fmnist_yolo.report(run)
    assert path.name == f"report.moved-{manifest_checksum(moved)[:12]}.md" and not (run / TEST_PREDICTIONS).exists()


def test_pruned_weights_are_not_loaded_for_a_report(tiny, tmp_path, monkeypatch):
    """Current stored predictions need no model: report and Run.load load no checkpoint, and work without one."""
    _, run = _copy_run(tiny, tmp_path)
    monkeypatch.setattr("fmnist_yolo.evaluation.evaluate.trained_model_file", lambda *a: pytest.fail("loaded"))
    monkeypatch.setattr("fmnist_yolo.evaluation.evaluate.evaluate", lambda *a, **k: pytest.fail("evaluated"))
    top1 = fmnist_yolo.Run.load(run).test.top1
    fmnist_yolo.report(run)
    shutil.rmtree(run / "weights")  # pruned
    loaded = fmnist_yolo.Run.load(run)
    assert loaded.test is not None and loaded.test.top1 == top1
    md = fmnist_yolo.report(run).read_text()
    assert "best.pt on the run's own test split" in md and f"top-1 {top1:.4f}" in md


def test_a_run_without_best_pt_is_not_reported_as_if_it_had_one(tiny, tmp_path):
    """No best.pt: the report evaluates last.pt and says so; its figures are never stored as best.pt's."""
    _, run = _copy_run(tiny, tmp_path)
    (run / "weights" / "best.pt").unlink()
    (run / TEST_PREDICTIONS).unlink()
    md = fmnist_yolo.report(run).read_text()
    assert "| best.pt" in md and "none in this run" in md and "| last.pt" in md and "(this run, last.pt)" in md
    assert "no weights/best.pt" in md and "last.pt on the run's own test split" in md
    assert not (run / TEST_PREDICTIONS).exists()
    assert fmnist_yolo.Run.load(run).test is None  # best.pt's test evaluation: there is none
    (run / "weights" / "last.pt").unlink()
    with pytest.raises(fmnist_yolo.errors.RunError, match="no current test_predictions.csv and no weights/best.pt"):
        fmnist_yolo.report(run)
