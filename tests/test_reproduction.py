"""reproduce(): a run trained again from its record alone, the tree checked by content, versions compared, the
verdict written to reproduction.json; tiny synthetic runs on CPU."""

import json
import shutil

import pandas as pd
import pytest

import fmnist_yolo
from fmnist_yolo.errors import ConfigError, DataError, FmnistWarning, RunError
from fmnist_yolo.reproduction import compare_runs, recorded_tree, reproduce, version_differences
from fmnist_yolo.rundir import SCHEMA, read_provenance, read_reproduction
from fmnist_yolo.training import train as train_module
from fmnist_yolo.training.environment import git_state
from tests.conftest import SYNTHETIC_RUN, one_error, run_cli, synthetic_arrays, write_source


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("reproduce")
    write_source(root / "src", synthetic_arrays())
    return fmnist_yolo.prepare(source=root / "src", out=root / "tree", val_size=20, verify=False, workers=1,
                               progress=False)  # fmt: skip


def _train(tree, name, **kw):
    return fmnist_yolo.train(**{**SYNTHETIC_RUN, "epochs": 1, **kw}, data=str(tree), project=str(tree.parent / "runs"),
                             name=name)  # fmt: skip


@pytest.fixture(scope="module")
def stock(tree):
    return _train(tree, "stock", fast=False)


@pytest.fixture(scope="module")
def three(tree):
    return _train(tree, "three", epochs=3)


def test_record_holds_what_reproduction_needs(stock, tree):
    record = stock.record
    manifest = json.loads((tree / "manifest.json").read_text())
    assert record.schema == SCHEMA == 3
    env = record.environment
    assert (env["commit"], env["dirty"]) == tuple(git_state()[k] for k in ("commit", "dirty"))  # None off a checkout
    assert (env["seed"], env["init_seed"], env["deterministic"], env["gpu"]) == (0, 0, True, None)
    assert env["torch_threads"] >= 1
    prepared = record.data["prepared"]
    assert prepared["files_sha256"] == manifest["files_sha256"] and prepared["options"] == {"val": 20, "seed": 0}
    assert (
        prepared["sources"]["train_images"]["payload_sha256"] == manifest["sources"]["train_images"]["payload_sha256"]
    )
    assert record.model["sha256"] is None  # from the YAML: no weights file to pin


def test_stock_run_reproduced_identical(stock):
    result = fmnist_yolo.reproduce(stock.dir)  # the public function, also once its module is imported
    assert result.dir == stock.dir.parent / "stock-reproduce" and result.verdict == "identical"
    report = read_reproduction(result.dir)
    assert report == result.report and report["reproduces"] == str(stock.dir) and report["parts_at_epoch"] is None
    assert report["epochs"] == report["epochs_recorded"] == 1 and report["version_differences"] == []
    assert set(report["history"]["largest"]) >= {"train_loss", "val_loss", "val_top1", "val_top5", "lr_pg0"}
    assert all(v == 0 for v in report["history"]["largest"].values())
    assert report["test_predictions"] == {"images": 30, "identical_labels": 1.0, "max_probability_difference": 0.0}
    assert report["val_top1"]["original"] == report["val_top1"]["reproduction"] == stock.val["top1"]
    assert report["test_top1"]["original"] == report["test_top1"]["reproduction"] == stock.test.top1
    assert read_provenance(result.dir).status == "finished"

    table = fmnist_yolo.compare(stock.dir.parent).set_index("name")
    assert table.loc["stock-reproduce", "reproduces"] == "stock"
    assert table.loc["stock-reproduce", "verdict"] == "identical" and pd.isna(table.loc["stock", "verdict"])


def test_fast_run_reproduced_identical_with_a_changed_version_warned(tree, monkeypatch, capsys):
    run = _train(tree, "fast", fast=True)
    real = train_module.versions
    monkeypatch.setattr(train_module, "versions", lambda: {**real(), "torch": "9.9.9"})
    code, out, err = run_cli(["reproduce", str(run.dir), "name=again"], capsys)
    assert code == 0, err[-3000:]
    warning = [line for line in err.splitlines() if line.startswith("WARNING") and "recorded with other" in line]
    assert len(warning) == 1 and f"torch 9.9.9 (recorded {real()['torch']})" in warning[0]
    assert f"{run.dir.parent / 'again'} reproduces {run.dir}: identical" in out
    report = read_reproduction(run.dir.parent / "again")
    assert report["verdict"] == "identical" and report["version_differences"][0].startswith("torch 9.9.9")
    assert report["environment"]["versions.torch"] == {"original": real()["torch"], "reproduction": "9.9.9"}


def test_strict_refuses_another_version_before_training(stock, monkeypatch):
    real = train_module.versions
    monkeypatch.setattr(train_module, "versions", lambda: {**real(), "ultralytics": "0.0.1"})
    with pytest.raises(RunError, match=r"ultralytics 0\.0\.1 \(recorded .*\) \(strict=True refuses"):
        reproduce(stock.dir, name="refused", strict=True)
    assert not (stock.dir.parent / "refused").exists()


def test_first_epochs_of_a_longer_run_on_its_schedule(three):
    result = reproduce(three.dir, epochs=2)
    report = result.report
    assert report["verdict"] == "identical" and (report["epochs"], report["epochs_recorded"]) == (2, 3)
    assert [row["epoch"] for row in report["history"]["per_epoch"]] == [1, 2]
    history = fmnist_yolo.load_history(result.dir)
    assert list(history["epoch"]) == [1, 2]
    # the learning rates of a 3-epoch schedule, not a 2-epoch one: the same as the original's first two epochs
    assert (history["lr_pg0"] == three.history["lr_pg0"].iloc[:2].to_numpy()).all()
    record = read_provenance(result.dir)
    assert record.status == "stopped" and record.epochs_planned == 3 and "epochs=2" in record.stopped_by
    assert report["best_epoch"]["original"] == report["best_epoch"]["reproduction"]


def test_a_changed_tree_is_rebuilt_from_the_recorded_source(stock, tree, tmp_path):
    record = stock.record
    moved = tmp_path / "tree"
    fmnist_yolo.prepare(source=tree.parent / "src", out=moved, val_size=20, split_seed=1, verify=False, workers=1,
                        progress=False)  # fmt: skip
    assert recorded_tree(record, moved) == (moved, True)  # another split: rebuilt with the recorded options
    assert json.loads((moved / "manifest.json").read_text())["options"] == {"val": 20, "seed": 0}
    assert recorded_tree(record, moved) == (moved, False)  # now the recorded one


def test_a_changed_tree_without_its_source_is_refused(stock, tree, tmp_path, capsys):
    copy = tmp_path / "runs" / "copy"
    shutil.copytree(stock.dir, copy)
    changed = tmp_path / "tree"
    fmnist_yolo.prepare(source=tree.parent / "src", out=changed, val_size=10, verify=False, workers=1, progress=False)
    record = json.loads((copy / "fmnist_yolo.json").read_text())
    for s in record["data"]["prepared"]["sources"].values():
        s["path"] = str(tmp_path / "gone" / "file.gz")
    record["data"]["tree"] = record["args"]["data"] = str(changed)
    (copy / "fmnist_yolo.json").write_text(json.dumps(record))
    code, _, err = run_cli(["reproduce", str(copy)], capsys)
    assert code == 1
    line = one_error(err)
    assert f"{changed}: not the tree the run was trained on: split options val_size=10 split_seed=0 (recorded " in line
    assert "other images" in line and "the recorded source files are not at hand, so nothing was trained" in line
    assert sorted(p.name for p in copy.parent.iterdir()) == ["copy"]  # no run started


def test_resumed_run_reproduced_as_the_same_run(tree):
    def interrupt(trainer):
        if trainer.epoch == 1:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _train(tree, "resumed", epochs=2, callbacks={"on_train_epoch_start": interrupt})
    run = fmnist_yolo.train(resume=str(tree.parent / "runs" / "resumed"))
    assert [r["completed_epochs"] for r in run.record.resumed] == [1]
    result = reproduce(run.dir)
    assert result.verdict == "identical", result.report
    again = read_provenance(result.dir)
    assert [r["completed_epochs"] for r in again.resumed] == [1] and again.status == "finished"


def _copy(run, tmp_path, name="copy"):
    shutil.copytree(run.dir, tmp_path / name)
    return tmp_path / name


def _edit_csv(path, column, row, change):
    table = pd.read_csv(path)
    table.loc[row, column] = change(table.loc[row, column])
    table.to_csv(path, index=False)


@pytest.mark.parametrize("edit, verdict, parts, beyond", [
    (None, "identical", None, None),
    (("results.csv", "train/loss", 1, lambda v: v * (1 + 1e-6)), "equal within rounding", 2, None),
    (("results.csv", "metrics/accuracy_top1", 1, lambda v: v + 0.05), "different", 2, 2),
    (("test_predictions.csv", "p_1_trouser", 0, lambda v: v + 1e-6), "equal within rounding", None, None),
    (("test_predictions.csv", "p_1_trouser", 0, lambda v: v + 1e-2), "different", None, None),
    (("test_predictions.csv", "pred_id", 0, lambda v: (v + 1) % 10), "different", None, None),
])  # fmt: skip
def test_verdict(three, tmp_path, edit, verdict, parts, beyond):
    """A run against a copy of itself, one figure changed: bit-equal, within rounding, or not."""
    copy = _copy(three, tmp_path)
    if edit:
        name, column, row, change = edit
        _edit_csv(copy / name, column, row, change)
    report = compare_runs(three.dir, copy)
    assert (report["verdict"], report["parts_at_epoch"], report["beyond_rounding_at_epoch"]) == (verdict, parts, beyond)


@pytest.mark.parametrize("best", [1, 3])
def test_verdict_of_the_first_epoch(three, tmp_path, best):
    """best.pt of epoch 1 is compared on test; of a later epoch it is not there to compare: val from results.csv."""
    original = _copy(three, tmp_path, "original")
    _edit_csv(original / "results.csv", "metrics/accuracy_top1", best - 1, lambda v: 1.0)
    _edit_csv(original / "results.csv", "metrics/accuracy_top5", best - 1, lambda v: 1.0)
    report = compare_runs(original, _copy(three, tmp_path, "reproduction"), epochs=1)
    assert report["epochs"] == 1 and [r["epoch"] for r in report["history"]["per_epoch"]] == [1]
    if best == 1:  # the reproduction's epoch 1 is not the edited one: different, but test is compared
        assert report["verdict"] == "different" and report["parts_at_epoch"] == 1
        assert report["test_predictions"]["identical_labels"] == 1.0 and report["val_top1"]["from"] == "best.pt"
    else:
        assert report["verdict"] == "identical" and report["test_top1"] is None and report["test_predictions"] is None
        assert (
            report["val_top1"]["from"] == "results.csv" and "best.pt is epoch 3, after the 1 epochs" in report["note"]
        )


def test_arguments_and_records_refused(stock, tmp_path):
    with pytest.raises(ConfigError, match="epochs=2: .* completed 1 epochs"):
        reproduce(stock.dir, epochs=2)
    with pytest.raises(ConfigError, match="epochs=0 is out of range: epochs must be an integer >= 1"):
        reproduce(stock.dir, epochs=0)
    plain = _copy(stock, tmp_path, "plain")
    (plain / "fmnist_yolo.json").unlink()
    with pytest.raises(RunError, match="no fmnist_yolo.json .*nothing to reproduce it from"):
        reproduce(plain)


def test_an_older_record_is_read_and_its_unknowns_said(stock, tree, tmp_path):
    """A schema 2 record: no environment, no tree content. It loads; the commit is unknown (strict refuses), and the
    tree is checked by the manifest checksum it holds."""
    old = {k: v for k, v in stock.record.to_dict().items() if k != "environment"}
    old["schema"] = 2
    old["data"] = {k: v for k, v in old["data"].items() if k != "prepared"}
    copy = _copy(stock, tmp_path, "old")
    (copy / "fmnist_yolo.json").write_text(json.dumps(old))
    record = read_provenance(copy)
    assert record.schema == 2 and record.environment == {}
    assert any("commit unknown (a schema 2 record" in d for d in version_differences(record))
    assert recorded_tree(record) == (tree, False)
    moved = tmp_path / "tree"
    fmnist_yolo.prepare(source=tree.parent / "src", out=moved, val_size=10, verify=False, workers=1, progress=False)
    with pytest.raises(DataError, match="its manifest differs .* the record holds no options to rebuild it"):
        recorded_tree(record, moved)


def test_the_recorded_loader_is_reproduced(stock, tree):
    """A record's loader is the reproduction's, whatever today's default; one from before fast= trained stock's."""
    from dataclasses import replace

    from fmnist_yolo.reproduction import train_arguments

    assert stock.record.args["fast"] is False
    for args, fast in (({**stock.record.args, "fast": True}, True), (stock.record.args, False),
                       ({k: v for k, v in stock.record.args.items() if k != "fast"}, False)):  # fmt: skip
        assert train_arguments(replace(stock.record, args=args), tree, stock.dir, None, "cpu")["fast"] is fast


def test_warning_category(stock, monkeypatch):
    real = train_module.versions
    monkeypatch.setattr(train_module, "versions", lambda: {**real(), "python": "2.7"})
    monkeypatch.setattr("fmnist_yolo.reproduction.recorded_tree", lambda *a: (_ for _ in ()).throw(DataError("stop")))
    with pytest.warns(FmnistWarning, match=r"python 2\.7 \(recorded"), pytest.raises(DataError, match="stop"):
        reproduce(stock.dir)


def test_cli_exits_1_when_the_verdict_is_different(tmp_path, monkeypatch, capsys):
    from fmnist_yolo.reproduction import Reproduction

    report = {"reproduces": str(tmp_path / "a"), "run": str(tmp_path / "b"), "verdict": "different",
              "parts_at_epoch": 3, "epochs": 5, "epochs_recorded": 5, "best_epoch": {"original": 5, "reproduction": 4},
              "val_top1": {"original": 0.9, "reproduction": 0.8}}  # fmt: skip
    run = type("Run", (), {"dir": tmp_path / "b"})()
    monkeypatch.setattr(
        "fmnist_yolo.reproduction.reproduce", lambda run_dir, **kw: Reproduction(run, tmp_path / "a", report)
    )
    code, out, err = run_cli(["reproduce", str(tmp_path / "a"), "epochs=5"], capsys)
    assert code == 1 and f"{tmp_path / 'b'} reproduces {tmp_path / 'a'}: different, parting at epoch 3" in out
    assert one_error(err) == (f"Error: {tmp_path / 'b'} does not reproduce {tmp_path / 'a'}: they part at epoch 3; "
                              f"{tmp_path / 'b' / 'reproduction.json'} has every figure")  # fmt: skip
    code, _, err = run_cli(["reproduce", "epoch=5"], capsys)
    assert code == 1 and one_error(err) == "Error: unknown reproduce argument 'epoch'; did you mean 'epochs'?"
