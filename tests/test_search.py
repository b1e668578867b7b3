"""Scale-out: Ray Tune search (tiny, local, CPU) and multi-GPU argument handling (no GPU needed)."""

import builtins
import importlib
import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

import fmnist_yolo
from fmnist_yolo import prepare
from fmnist_yolo.errors import ConfigError
from fmnist_yolo.training.trainer import Trainer
from tests.conftest import require, run_cli

args_module = importlib.import_module("fmnist_yolo.training.args")
train_module = importlib.import_module("fmnist_yolo.training.train")
tune_module = importlib.import_module("fmnist_yolo.search")
CLASSIFICATION_KEYS = {"lr0", "lrf", "momentum", "weight_decay", "warmup_epochs", "dropout", "fliplr", "erasing",
                       "scale", "auto_augment"}  # fmt: skip


@pytest.fixture
def tree(source, tmp_path):
    return prepare(source=source, out=tmp_path / "tree", val_size=20, verify=False, workers=1, progress=False)


def test_without_ray_says_how_to_install(monkeypatch, capsys):
    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    code, _, err = run_cli(["tune", "iterations=2"], capsys)
    assert code == 1 and err.count("\n") == 1 and "pip install 'fmnist-yolo[tune]'" in err


def test_search_space_is_for_classification():
    require("ray.tune")
    space = tune_module.search_space()
    assert set(space) == CLASSIFICATION_KEYS
    assert set(space) <= args_module.valid_keys()  # all Ultralytics train arguments
    assert not set(space) & {"box", "dfl", "cls", "mosaic", "mixup", "hsv_h", "hsv_s", "flipud", "degrees"}


def test_unknown_key_and_space_file(tmp_path):
    require("ray.tune")
    with pytest.raises(ConfigError, match="unknown argument 'iteration'; did you mean 'iterations'"):
        fmnist_yolo.tune(iteration=2)
    f = tmp_path / "space.yaml"
    f.write_text("lr0: [loguniform, 0.001, 0.1]\nauto_augment: [choice, [randaugment, augmix]]\n")
    assert set(tune_module.search_space(f)) == {"lr0", "auto_augment"}
    f.write_text("lr0: [gaussian, 0, 1]\n")
    with pytest.raises(ConfigError, match="search space 'lr0': unknown kind 'gaussian'"):
        tune_module.search_space(f)


def test_space_file_numbers_are_numbers(tmp_path):
    """The README's example: PyYAML reads 1e-4 (no dot) as a string; Ray would raise a TypeError on it."""
    require("ray.tune")
    f = tmp_path / "space.yaml"
    f.write_text("lr0: [loguniform, 1e-4, 1e-1]\nbatch: [randint, 16, 64]\nlrf: [choice, [1e-2, 0.1]]\n")
    space = tune_module.search_space(f)
    assert (space["lr0"].lower, space["lr0"].upper) == (1e-4, 1e-1)
    assert (space["batch"].lower, space["batch"].upper) == (16, 64)
    assert space["lrf"].categories == [0.01, 0.1]


@pytest.mark.parametrize(
    "entry, problem",
    [
        ("[loguniform, 1e-4]", "expected [loguniform, low, high] with two numbers"),
        ("[uniform, low, 0.5]", "expected [uniform, low, high] with two numbers"),
        ("[loguniform, 0, 1e-1]", "loguniform needs 0 < low < high"),
        ("[uniform, 0.5, 0.1]", "uniform needs low < high"),
        ("[randint, 1.5, 4]", "randint needs whole numbers"),
        ("[choice, []]", "expected [choice, [values]] with at least one value"),
        ("0.01", "expected [uniform|loguniform|randint, low, high]"),
    ],
)
def test_bad_space_entry_is_one_line_naming_the_key(entry, problem, tmp_path, monkeypatch, capsys):
    require("ray.tune")
    monkeypatch.setattr("fmnist_yolo.data.prepare.ensure_tree", lambda *a: pytest.fail("searched with a bad space"))
    f = tmp_path / "space.yaml"
    f.write_text(f"lr0: {entry}\n")
    code, _, err = run_cli(["tune", f"space={f}", "iterations=1"], capsys)
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"Error: {f}: search space 'lr0': {problem}"), err


def test_tune_refuses_a_device_list(tree):
    require("ray.tune")
    with pytest.raises(ConfigError, match="one device per trial"):
        fmnist_yolo.tune(device="0,1", data=str(tree), iterations=1)


def test_trial_paths_are_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "my.yaml").write_text("lr0: 0.01\n")
    out = tune_module._absolute(
        {"data": "datasets/x", "project": "runs/t", "cfg": "my.yaml", "model": "yolo11n-cls.yaml"}
    )
    assert out["data"] == str(tmp_path / "datasets/x") and out["project"] == str(tmp_path / "runs/t")
    assert out["cfg"] == str(tmp_path / "my.yaml") and out["model"] == "yolo11n-cls.yaml"  # a name stays a name


@pytest.mark.slow
def test_tiny_search_writes_table_and_a_best_config_that_trains(tree, tmp_path, capsys):
    require("ray.tune")
    code, out, err = run_cli(["tune", "iterations=2", "epochs=1", "model=yolo11n-cls.yaml", f"data={tree}",
                              "imgsz=28", "batch=16", "plots=False", "workers=0", f"project={tmp_path}", "name=t"],
                             capsys)  # fmt: skip
    assert code == 0, err
    d = tmp_path / "t"
    table = pd.read_csv(d / "tune_results.csv")
    assert len(table) == 2 and (table["status"] == "completed").all() and table["best_val_top1"].between(0, 1).all()
    assert set(CLASSIFICATION_KEYS) <= set(table.columns) and (table["epochs_run"] == 1).all()
    assert table["best_val_top1"].is_monotonic_decreasing  # best first
    for run in table["run"]:
        p = json.loads((Path(run) / "fmnist_yolo.json").read_text())
        assert p["status"] == "finished" and p["metrics"]["test"] is None  # trials never touch test
    best = yaml.safe_load((d / "best_hyperparameters.yaml").read_text())
    assert best["lr0"] == pytest.approx(table["lr0"].iloc[0]) and best["model"] == "yolo11n-cls.yaml"
    run = fmnist_yolo.train(cfg=str(d / "best_hyperparameters.yaml"), data=str(tree), epochs=1, plots=False,
                            workers=0, project=str(tmp_path), name="from_best")  # fmt: skip
    assert run.provenance["args"]["lr0"] == pytest.approx(best["lr0"]) and run.weights.is_file()


@pytest.mark.slow
def test_asha_stops_the_weak_trial_and_ranks_the_rest(tmp_path):
    """A grid of three learning rates, run one after another: the hopeless one (lr0=1e-9) is below the others at
    ASHA's rung after epoch 1 and is stopped; its fmnist_yolo.json says so. The table is ordered by val top-1."""
    require("ray.tune")
    from tests.conftest import learnable_arrays, write_source

    write_source(tmp_path / "src", learnable_arrays(per_class_train=30))
    tree = prepare(source=tmp_path / "src", out=tmp_path / "tree", val_size=50, verify=False, workers=1, progress=False)
    table = fmnist_yolo.tune(iterations=1, epochs=3, grace_period=1, space={"lr0": ["grid", [0.02, 0.05, 1e-9]]},
                             optimizer="SGD", warmup_epochs=0, model="yolo11n-cls.yaml", data=str(tree), imgsz=28,
                             batch=16, nbs=16, fliplr=0.0, scale=0.0, erasing=0.0, plots=False, workers=0,
                             project=str(tmp_path), name="asha")  # fmt: skip
    assert len(table) == 3
    weak = table.set_index("lr0").loc[1e-9]
    assert weak["status"] == "stopped" and weak["epochs_run"] == 1
    assert json.loads((Path(weak["run"]) / "fmnist_yolo.json").read_text())["status"] == "stopped"
    kept = table[table["status"] == "completed"]
    assert len(kept) == 2 and (kept["epochs_run"] == 3).all()
    assert table["best_val_top1"].tolist() == sorted(table["best_val_top1"], reverse=True)  # best first
    assert table["best_val_top1"].iloc[0] > weak["best_val_top1"] + 0.1  # and the ranking is not a tie


# --- multi-GPU: argument handling without GPUs ----------------------------------------------


class Captured(Exception):
    pass


def test_device_list_passes_through_to_ultralytics(tree, tmp_path, monkeypatch, capsys):
    from ultralytics.engine.model import Model

    seen = {}

    def capture(self, **kwargs):
        seen.update(kwargs)
        raise Captured

    monkeypatch.setattr(Model, "train", capture)
    with pytest.raises(Captured):
        run_cli(["train", "device=0,1", "batch=128", "model=yolo11n-cls.yaml", f"data={tree}", f"project={tmp_path}"],
                capsys)  # fmt: skip
    assert seen["device"] in ("0,1", (0, 1)) and seen["batch"] == 128
    assert seen["trainer"].func is Trainer  # Ultralytics' own trainer (with our selection rule): DDP as stock
    assert (
        args_module.device_count(seen["device"]) == 2
        and args_module.device_count("0") == 1
        and args_module.device_count([0, 1, 2]) == 3
    )


def test_fast_refuses_several_devices(tree, capsys):
    code, _, err = run_cli(["train", "fast=True", "device=0,1", f"data={tree}", "model=yolo11n-cls.yaml"], capsys)
    assert code == 1 and "fast=True trains on one device" in err and err.count("\n") == 1


def test_provenance_records_world_size():
    from types import SimpleNamespace

    import torch

    trainer = SimpleNamespace(args=SimpleNamespace(imgsz=32), model=torch.nn.Linear(2, 2), device="cuda:0",
                              world_size=2, epochs=3, save_dir="runs/x", amp=torch.tensor(True))  # fmt: skip
    from fmnist_yolo.rundir import Provenance

    record = Provenance()
    train_module._record_trainer(record, trainer)
    assert record.world_size == 2 and record.amp is True and record.model["parameters"] == 6


def test_ddp_parent_finishes_the_run_from_what_the_workers_wrote(tree, tmp_path, monkeypatch, capsys):
    """device=0,1: Ultralytics' parent process only launches the workers (mocked here at the process boundary:
    they "write" a finished run's results.csv and weights); everything after, in the parent, runs for real."""
    import shutil

    import torch
    import ultralytics.engine.trainer as engine

    import fmnist_yolo

    workers = fmnist_yolo.train(model="yolo11n-cls.yaml", epochs=2, batch=16, imgsz=28, plots=False, workers=0,
                                data=str(tree), project=str(tmp_path / "single"), name="w",
                                evaluate_test=False)  # fmt: skip

    def launch(cmd, check):  # the DDP workers' output, as they would leave it in the parent's save_dir
        save_dir = Path(launched["trainer"].save_dir)
        shutil.copyfile(workers.dir / "results.csv", save_dir / "results.csv")
        for name in ("best.pt", "last.pt"):
            shutil.copyfile(workers.dir / "weights" / name, save_dir / "weights" / name)

    launched = {}
    real_generate = engine.generate_ddp_command
    monkeypatch.setattr(engine, "parse_device", lambda device, *a, **k: "0,1")
    monkeypatch.setattr(engine, "select_device", lambda *a, **k: torch.device("cuda", 0))
    monkeypatch.setattr(engine, "generate_ddp_command", lambda t: launched.update(trainer=t) or (["workers"], None))
    monkeypatch.setattr(engine.subprocess, "run", launch)
    monkeypatch.setattr(train_module, "_evaluation_device", lambda device: "cpu")  # no GPU here to evaluate on
    argv = ["train", "device=0,1", "batch=32", "model=yolo11n-cls.yaml", "epochs=2", "imgsz=28", "plots=False",
            f"data={tree}", f"project={tmp_path / 'ddp'}", "name=r"]  # fmt: skip
    code, out, err = run_cli(argv, capsys)
    assert real_generate is not None and launched, err[-2000:]
    assert code == 0, err[-2000:]
    record = json.loads((tmp_path / "ddp" / "r" / "fmnist_yolo.json").read_text())
    from fmnist_yolo.rundir import best_epoch, load_history

    history = load_history(workers.dir)
    best = best_epoch(history)  # the epoch the workers kept as best.pt (Ultralytics' rule)
    assert record["status"] == "finished" and record["world_size"] == 2 and record["epochs_completed"] == 2
    assert record["metrics"]["val"]["top1"] == pytest.approx(history.loc[best, "val_top1"])
    assert record["metrics"]["test"]["images"] == 30 and record["imgsz"]["effective"] == 32
    assert record["model"]["parameters"] == workers.provenance["model"]["parameters"]
    assert f"Run {tmp_path / 'ddp' / 'r'}: val top-1" in out
