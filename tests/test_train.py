"""Training, evaluation and prediction wrappers: arguments, weights, provenance, honest evaluation."""

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import fmnist_yolo
from fmnist_yolo import config, prepare
from fmnist_yolo.data.tree import manifest_checksum
from fmnist_yolo.errors import ConfigError, FmnistWarning
from fmnist_yolo.rundir import TEST_PREDICTIONS
from fmnist_yolo.training.args import resolve_args
from tests.conftest import run_cli

HISTORY = ["epoch", "time", "train_loss", "val_top1", "val_top5", "val_loss", "lr_pg0", "lr_pg1", "lr_pg2"]

FAST = {"model": "yolo11n-cls.yaml", "epochs": 1, "batch": 32, "plots": False, "workers": 0}


# --- arguments ---------------------------------------------------------------------------


def test_defaults_and_precedence(tmp_path):
    args = resolve_args({})
    assert (args["model"], args["epochs"], args["imgsz"]) == ("yolo11n-cls.pt", 100, 28)
    cfg = tmp_path / "my.yaml"
    cfg.write_text("epochs: 7\nbatch: 64\n")
    args = resolve_args({"cfg": str(cfg), "batch": 8})
    assert (args["epochs"], args["batch"]) == (7, 8)  # file over defaults, explicit over file


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "epocs=3"], "unknown argument 'epocs'; did you mean 'epochs'?"),
        (["train", "model=nope/missing.pt"], "nope/missing.pt: model file not found"),
        (["train", "epochs=abc"], "'epochs' must be an int"),
        (["train", "justaword"], "expected key=value, found 'justaword'"),
        (
            ["train", "fast=False", "fused_bn=True"],
            "fused_bn=True changes how fast=True normalises its fused chunks; it needs fast",
        ),
        (["train", "fast=True", "fused_bn=maybe"], "fused_bn='maybe': expected True or False"),
        (["train", "cfg=/does/not/exist.yaml"], "/does/not/exist.yaml: argument file not found"),
        (["val"], "val needs model=RUN_DIR|WEIGHTS.pt"),
        (["val", "model=/no/such/run"], "/no/such/run: model file not found"),
        (["predict", "model=x.pt"], "predict needs source=IMAGE_OR_DIR"),
    ],
)
def test_cli_argument_errors(argv, message, capsys):
    code, _, err = run_cli(argv, capsys)
    assert code == 1 and err.startswith("Error: ") and message in err and err.count("\n") == 1, err


def test_unknown_key_in_cfg_file(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("lr0: 0.01\nwarmup_epoch: 2\n")
    with pytest.raises(ConfigError, match=f"unknown argument in {cfg} 'warmup_epoch'; did you mean 'warmup_epochs'"):
        resolve_args({"cfg": str(cfg)})


# --- real runs ---------------------------------------------------------------------------


@pytest.mark.slow
def test_tiny_run_provenance(tiny_run, real_tree):
    p = json.loads((tiny_run.dir / "fmnist_yolo.json").read_text())
    assert p["imgsz"] == {"requested": 28, "effective": 32, "note": p["imgsz"]["note"]}
    assert p["model"]["pretrained"] is False and p["model"]["used"] == "yolo11n-cls.yaml"
    assert p["data"]["manifest_sha256"] == manifest_checksum(real_tree)
    assert p["data"]["model_selection_split"] == "val"
    assert set(p["versions"]) == {"fmnist_yolo", "ultralytics", "torch", "pandas", "python"}
    assert p["device"] == "cpu" and p["wall_time_s"] > 0 and p["epochs_completed"] == 2
    assert p["metrics"]["test"]["images"] == 10000
    assert 0 <= p["metrics"]["val"]["top1"] <= 1 and p["metrics"]["test"]["top1"] == tiny_run.test.top1
    assert (tiny_run.dir / "weights" / "best.pt").is_file() and (tiny_run.dir / "results.csv").is_file()


@pytest.mark.slow
def test_evaluate_agrees_with_ultralytics(tiny_run, real_tree):
    from ultralytics import YOLO

    ours = tiny_run.test
    stock = YOLO(str(tiny_run.weights)).val(data=str(real_tree), split="test", plots=False, batch=32)
    assert abs(ours.top1 - stock.top1) < 1e-6 and abs(ours.top5 - stock.top5) < 1e-6
    assert abs(ours.predictions["correct"].mean() - stock.top1) < 1e-3
    assert ours.confusion.to_numpy().sum() == 10000
    # Ultralytics' own matrix is [predicted, true]; ours is true x predicted, from the same predictions
    np.testing.assert_array_equal(ours.confusion.to_numpy(), stock.confusion_matrix.matrix.T)
    assert ours.per_class["support"].sum() == 10000
    m = ours.confusion.to_numpy()
    np.testing.assert_allclose(ours.per_class["recall"], np.diag(m) / m.sum(axis=1))
    assert list(ours.per_class.index) == list(config.CLASS_DIRS)
    files = ours.predictions["file"]
    assert files.is_unique and all(Path(f).parent.name == t for f, t in zip(files, ours.predictions["true"]))


@pytest.mark.slow
def test_val_command_and_predict(tiny_run, real_tree, tmp_path, capsys):
    code, out, _ = run_cli(["val", f"model={tiny_run.dir}", "split=val", "batch=64", f"csv={tmp_path}"], capsys)
    assert code == 0 and "val: top-1" in out and "5000 images" in out
    per_class = pd.read_csv(tmp_path / "per_class.csv", index_col="class")
    assert list(per_class.index) == list(config.CLASS_DIRS) and per_class["support"].sum() == 5000
    assert pd.read_csv(tmp_path / "confusion.csv", index_col=0).to_numpy().sum() == 5000
    assert len(pd.read_csv(tmp_path / "predictions.csv")) == 5000
    table = fmnist_yolo.predict(tiny_run.dir, real_tree / "test" / "8_bag")
    assert len(table) == 1000 and set(table["class"]) <= set(config.CLASS_DIRS)
    assert table["confidence"].between(0, 1).all()
    code, _, _ = run_cli(["predict", f"model={tiny_run.dir}", f"source={real_tree / 'test' / '8_bag'}",
                          f"csv={tmp_path / 'pred.csv'}"], capsys)  # fmt: skip
    assert code == 0 and pd.read_csv(tmp_path / "pred.csv").equals(table)


@pytest.mark.slow
def test_cli_train_default_model_falls_back(real_tree, tmp_path, monkeypatch, capsys):
    """`fmnist-yolo train epochs=1 fraction=...` with the default yolo11n-cls.pt, offline."""
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(
        [
            "train",
            "epochs=1",
            "fraction=0.005",
            f"data={real_tree}",
            "batch=32",
            "plots=False",
            f"project={tmp_path}",
            "name=cli",
        ],
        capsys,
    )
    assert code == 0
    assert "WARNING: pretrained yolo11n-cls.pt is not available" in err
    assert f"Run {tmp_path / 'cli'}: val top-1 " in out.splitlines()[-1] and "test top-1" in out
    assert f"Run {tmp_path / 'cli'}: val top-1 " not in err  # the result once: on stdout, not again in the log
    p = json.loads((tmp_path / "cli" / "fmnist_yolo.json").read_text())
    assert p["model"]["requested"] == "yolo11n-cls.pt" and p["model"]["pretrained"] is False


def test_tree_without_val_warns_test_selects(source, tmp_path):
    tree = prepare(source=source, out=tmp_path / "noval", val_size=0, verify=False, workers=1, progress=False)
    with pytest.warns(FmnistWarning, match="selects best.pt on test/"):
        run = fmnist_yolo.train(**FAST, data=str(tree), imgsz=28, project=str(tmp_path), name="noval")
    assert run.provenance["data"]["model_selection_split"] == "test"
    assert len(run.history) == 1 and {"train_loss", "val_top1", "val_top5"} <= set(run.history.columns)


# --- callbacks and the AMP check, in a real (tiny, synthetic) run ----------------------------


@pytest.fixture
def small_tree(source, tmp_path):
    return prepare(source=source, out=tmp_path / "tree", val_size=20, verify=False, workers=1, progress=False)


def test_callbacks_reach_ultralytics_and_bad_ones_are_refused(small_tree, tmp_path):
    seen = []
    fmnist_yolo.train(**FAST, data=str(small_tree), project=str(tmp_path), name="cb", evaluate_test=False,
                      callbacks={"on_train_epoch_end": lambda t: seen.append(t.epoch)})  # fmt: skip
    assert seen == [0]
    for bad in ({"on_train_epoch_end": "not callable"}, [print], print):
        with pytest.raises(ConfigError, match="callbacks must map Ultralytics event names to functions"):
            fmnist_yolo.train(callbacks=bad, data=str(small_tree))


def test_training_uses_the_offline_amp_check(small_tree, tmp_path, monkeypatch):
    """On an accelerator without yolo26n.pt, training asks our check about the model it trains, and obeys it."""
    import importlib

    ft = importlib.import_module("fmnist_yolo.compat")  # the module holding the patch
    asked = []
    monkeypatch.setattr(ft, "_on_accelerator", lambda model: True)  # the device, mocked: the tests run on CPU
    monkeypatch.setattr(ft, "AMP_CHECK_WEIGHTS", "absent-for-this-test.pt")
    monkeypatch.setattr(ft, "amp_agrees", lambda model: asked.append(model) or False)
    run = fmnist_yolo.train(**FAST, data=str(small_tree), project=str(tmp_path), name="amp", evaluate_test=False)
    assert len(asked) == 1 and sum(p.numel() for p in asked[0].parameters()) == run.provenance["model"]["parameters"]
    assert run.provenance["amp"] is False


def test_runs_land_in_this_projects_runs_whatever_ultralytics_settings_say(small_tree, tmp_path, monkeypatch, capsys):
    """Ultralytics' per-user runs_dir may be another checkout's: ours go to ./runs, and compare finds them there.
    The user's settings are read, never rewritten."""
    from ultralytics.utils import SETTINGS

    other = tmp_path / "other-checkout" / "runs"
    monkeypatch.setitem(SETTINGS, "runs_dir", str(other))
    settings_file = SETTINGS.file.read_bytes() if SETTINGS.file.is_file() else None
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    code, out, err = run_cli(["train", *[f"{k}={v}" for k, v in FAST.items()], f"data={small_tree}",
                              "evaluate_test=False"], capsys)  # fmt: skip
    assert code == 0, err[-2000:]
    assert f"Run {project / 'runs' / 'classify' / 'train'}:" in out and not other.exists()
    code, out, _ = run_cli(["compare"], capsys)
    assert code == 0 and "classify/train" in out and "1 runs" in out
    assert (SETTINGS.file.read_bytes() if SETTINGS.file.is_file() else None) == settings_file


# --- runs read back -------------------------------------------------------------------------


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


def test_run_load_evaluates_a_run_trained_without_test(source, tmp_path):
    from fmnist_yolo import prepare

    tree = prepare(source=source, out=tmp_path / "tree", val_size=20, verify=False, workers=1, progress=False)
    run = fmnist_yolo.train(model="yolo11n-cls.yaml", epochs=1, batch=16, plots=False, workers=0, data=str(tree),
                            project=str(tmp_path / "runs"), name="r", evaluate_test=False)  # fmt: skip
    assert run.test is None and not (run.dir / TEST_PREDICTIONS).exists()
    loaded = fmnist_yolo.Run.load(run.dir)
    assert len(loaded.test.per_class) == 10 and len(loaded.test.predictions) == 30


def test_the_expected_end_is_said_after_the_first_epoch_and_recorded(small_tree, tmp_path, caplog):
    """Ultralytics shows each epoch's progress, never the whole run's: one line after the first epoch, again after
    the first past warm-up, and the record's `eta` kept current every epoch."""
    import logging

    with caplog.at_level(logging.INFO, logger="fmnist_yolo"):
        run = fmnist_yolo.train(**{**FAST, "epochs": 3}, warmup_epochs=1, data=str(small_tree), project=str(tmp_path),
                                name="eta", evaluate_test=False)  # fmt: skip
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Expected end of the run")]
    assert len(said) == 2 and said[0].startswith("Expected end of the run: 2 epochs left at ")
    assert "revised after epoch 2" in said[0] and said[1].startswith("Expected end of the run after warm-up: 1 epoch ")
    eta = run.record.eta
    assert eta["after_epoch"] == 3 and eta["remaining_s"] == 0 and eta["epoch_s"] > 0


def test_expected_end_arithmetic_and_the_cpu_hint():
    from fmnist_yolo.training.train import expected_end

    now = time.mktime((2026, 11, 30, 10, 0, 0, 0, 0, -1))
    eta, line = expected_end(1, 100, [(0, 200.0)], "cpu", None, now=now)  # 99 epochs at 200 s: 5.5 h, lands 15:30
    assert eta["remaining_s"] == 19800 and eta["epoch_s"] == 200.0 and eta["ends_at"].startswith("2026-11-30T15:30")
    assert "99 epochs left at 200 s each, 5 h 30 min more, at about 15:30" in line and "recipe=cpu" in line
    paces = [(0, 900.0), (1, 60.0), (2, 60.0), (3, 30.0)]
    eta, line = expected_end(4, 100, paces, "cpu", "cpu", now=now)  # the last 3: 50 s
    assert eta["epoch_s"] == 50.0 and line is None  # said after the first epoch only (no warm-up)
    assert "recipe=cpu" not in expected_end(1, 100, [(0, 200.0)], "cpu", "cpu", now=now)[1]  # already the cpu recipe
    assert "recipe=cpu" not in expected_end(1, 100, [(0, 200.0)], "cuda:0", None, now=now)[1]  # a GPU: no hint
    assert "at about Wed 17:00" in expected_end(1, 100, [(0, 2000.0)], "cuda:0", None, now=now)[1]  # another day
    assert expected_end(100, 100, [(99, 50.0)], "cpu", None, now=now)[1] is None  # nothing left to announce


def test_the_expected_end_is_revised_once_warm_up_ends():
    """The cpu recipe's first (warm-up) epoch took 176 s against 46 s for its fourth: the first line says so, and the
    line is said again, at the steady pace, after the first epoch past warm-up."""
    from fmnist_yolo.training.train import expected_end

    now = time.mktime((2026, 11, 30, 10, 0, 0, 0, 0, -1))
    paces = [(0, 176.0)]
    _, line = expected_end(1, 100, paces, "cpu", "cpu", warm=3, now=now)
    assert line.startswith("Expected end of the run: 99 epochs left at 176 s each") and "revised after epoch 4" in line
    paces += [(1, 71.0), (2, 56.0)]
    eta, line = expected_end(3, 100, paces, "cpu", "cpu", warm=3, now=now)
    assert line is None and eta["epoch_s"] == round((176 + 71 + 56) / 3, 1)  # warm-up only: its pace, unsaid
    paces.append((3, 46.0))
    eta, line = expected_end(4, 100, paces, "cpu", "cpu", warm=3, now=now)
    assert eta["epoch_s"] == 46.0 and eta["remaining_s"] == 96 * 46  # the steady epochs alone
    assert line.startswith("Expected end of the run after warm-up: 96 epochs left at 46 s each, 1 h 14 min more")
    paces.append((4, 48.0))
    eta, line = expected_end(5, 100, paces, "cpu", "cpu", warm=3, now=now)
    assert line is None and eta["epoch_s"] == 47.0  # said twice at most
    # a resume past warm-up: one line, at the steady pace, without the warm-up note
    _, line = expected_end(51, 100, [(50, 46.0)], "cpu", "cpu", warm=3, now=now)
    assert "49 epochs left at 46 s each" in line and "warm-up" not in line
    # warm-up reaching the last epoch: no promise of a revision that never comes
    assert "revised" not in expected_end(1, 3, [(0, 10.0)], "cpu", "cpu", warm=2, now=now)[1]


def test_warmup_epochs_follows_stocks_cap():
    from types import SimpleNamespace

    from fmnist_yolo.training.train import warmup_epochs

    def trainer(w, epochs):
        return SimpleNamespace(args=SimpleNamespace(warmup_epochs=w), epochs=epochs)

    assert warmup_epochs(trainer(3.0, 100)) == 3 and warmup_epochs(trainer(0.5, 100)) == 1
    assert warmup_epochs(trainer(0, 100)) == 0 and warmup_epochs(trainer(3.0, 2)) == 1  # capped at epochs - 1
    assert warmup_epochs(trainer(3.0, 1)) == 0
