"""Scale-out: Ray Tune search (tiny, local, CPU) and multi-GPU argument handling (no GPU needed)."""

import builtins
import importlib
import json
import os
import warnings
from pathlib import Path

import pandas as pd
import pytest
import yaml

import fmnist_yolo
from fmnist_yolo import prepare
from fmnist_yolo.errors import ConfigError
from fmnist_yolo.training.stock_trainer import Trainer
from tests.conftest import require, run_cli, synthetic_arrays, write_source

args_module = importlib.import_module("fmnist_yolo.training.args")
train_module = importlib.import_module("fmnist_yolo.training.train")
tune_module = importlib.import_module("fmnist_yolo.training.tune")
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


def test_a_space_sampling_what_the_fast_path_skips_chooses_stock(tmp_path):
    """fast= unset: the fast path, unless the given space samples auto_augment; then stock, with one line. fast=True
    with such a space is an error; a space without it keeps the fast path."""
    import warnings

    require("ray.tune")
    f = tmp_path / "space.yaml"
    f.write_text("lr0: [loguniform, 0.001, 0.1]\nauto_augment: [choice, [randaugment, augmix]]\n")
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        fast, space = tune_module.loader_and_space(f, {"fast": None})
    assert fast is False and set(space) == {"lr0", "auto_augment"}
    assert [str(w.message) for w in said] == [
        "training with the stock loader: the search space samples auto_augment, which the fast path does not apply "
        "(fast=False chooses it without this line)"]  # fmt: skip
    for asked in ({"fast": True}, {"fast": None, "fused_bn": True}):  # set anywhere: a recipe, cfg=, or the call
        with pytest.raises(ConfigError, match="'auto_augment': not searchable with fast=True"):
            tune_module.loader_and_space(f, asked)
    fast, space = tune_module.loader_and_space(None, {"fast": None})
    assert fast is True and set(space) == CLASSIFICATION_KEYS - {"auto_augment"}


def test_a_recipe_that_sets_fast_is_kept_with_a_space_it_cannot_train(tree, tmp_path):
    """recipe=cpu sets fast: true and fused_bn: true: a space sampling auto_augment is refused up front, not turned
    into trials that each fail."""
    require("ray.tune")
    f = tmp_path / "space.yaml"
    f.write_text("auto_augment: [choice, [randaugment, augmix]]\n")
    with pytest.raises(ConfigError, match="'auto_augment': not searchable with fast=True"):
        fmnist_yolo.tune(recipe="cpu", space=str(f), data=str(tree), iterations=1, project=str(tmp_path))


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
    with warnings.catch_warnings():  # refused before anything warns that DDP would train with the stock loader
        warnings.simplefilter("error")
        with pytest.raises(ConfigError, match="one device per trial"):
            fmnist_yolo.tune(device="0,1", data=str(tree), iterations=1)


def test_tune_refuses_a_device_list_from_a_cfg_file(tree, tmp_path):
    require("ray.tune")
    (tmp_path / "ddp.yaml").write_text("device: 0,1\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ConfigError, match="one device per trial"):
            fmnist_yolo.tune(cfg=str(tmp_path / "ddp.yaml"), data=str(tree), iterations=1)


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
    # the fast path by default, so the space leaves out what it does not apply (auto_augment)
    assert (
        set(CLASSIFICATION_KEYS) - set(tune_module.FAST_NO_OP) <= set(table.columns)
        and (table["epochs_run"] == 1).all()
    )
    assert not set(tune_module.FAST_NO_OP) & set(table.columns)
    assert table["best_val_top1"].is_monotonic_decreasing  # best first
    for run in table["run"]:
        p = json.loads((Path(run) / "fmnist_yolo.json").read_text())
        assert p["status"] == "finished" and p["metrics"]["test"] is None  # trials never touch test
        assert p["args"]["fast"] is True
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


def test_cpu_per_trial_defaults_to_the_smallest_node_and_what_no_node_holds_is_refused():
    nodes = [{"Alive": True, "Resources": {"CPU": 4.0, "GPU": 1.0}}, {"Alive": True, "Resources": {"CPU": 1.0}},
             {"Alive": True, "Resources": {"memory": 1.0}}, {"Alive": False, "Resources": {"CPU": 0.5}}]  # fmt: skip
    assert tune_module._resources(nodes, 0, 0) == (1.0, 0)  # the 1-CPU node takes trials too; dead ones don't count
    assert tune_module._resources(nodes, 2, 1) == (2, 1)
    with pytest.raises(
        ConfigError, match=r"cpu_per_trial=8 gpu_per_trial=0: no node .* \(its nodes: 4 CPU, 1 GPU; 1 CPU"
    ):
        tune_module._resources(nodes, 8, 0)
    with pytest.raises(ConfigError, match="cpu_per_trial=1 gpu_per_trial=1: no node"):
        tune_module._resources(nodes[1:], 1, 1)


def _want(tree: Path, workers: int = 1) -> dict:
    from fmnist_yolo.data.tree import content_checksum

    return {"checksum": content_checksum(tree), "val_size": 20, "split_seed": 0, "verify": False, "workers": workers}


def test_a_node_without_the_tree_prepares_it_under_its_data_root(tree, source, tmp_path, monkeypatch):
    from fmnist_yolo.data.tree import content_checksum

    monkeypatch.setenv(tune_module.DATA_ENV, str(tmp_path / "node"))
    monkeypatch.setenv("FMNIST_SOURCE", str(source))
    local = tune_module.node_tree(str(tree), _want(tree))
    assert local == str(tmp_path / "node" / "tree") and content_checksum(local) == content_checksum(tree)
    monkeypatch.delenv(tune_module.DATA_ENV)
    assert tune_module.node_tree(str(tree), _want(tree)) == str(tree)  # unset: the driver's own path


def test_a_node_whose_tree_differs_refuses_in_one_line(tree, source, tmp_path, monkeypatch):
    from fmnist_yolo.data.tree import content_checksum
    from fmnist_yolo.errors import DataError

    theirs = prepare(source=source, out=tmp_path / "node" / "tree", val_size=30, verify=False, workers=1,
                     progress=False)  # fmt: skip
    monkeypatch.setenv(tune_module.DATA_ENV, str(tmp_path / "node"))
    with pytest.raises(DataError) as e:
        tune_module.node_tree(str(tree), _want(tree))
    line = str(e.value)
    assert "\n" not in line and line.startswith("node ") and str(theirs) in line
    assert f"holds tree {content_checksum(theirs)[:16]}, the search's is {content_checksum(tree)[:16]}" in line
    other = tmp_path / "other-source"  # a node whose own sources hold other images: it says where it prepared from
    write_source(other, synthetic_arrays(seed=1))
    monkeypatch.setenv(tune_module.DATA_ENV, str(tmp_path / "fresh"))
    monkeypatch.setenv("FMNIST_SOURCE", str(other))
    with pytest.raises(DataError, match=rf"tree \(prepared here from {other}, \$FMNIST_SOURCE\) holds tree "):
        tune_module.node_tree(str(tree), _want(tree))
    (tmp_path / "mine" / "tree").mkdir(parents=True)  # something else under the tree's name: not replaced
    monkeypatch.setenv(tune_module.DATA_ENV, str(tmp_path / "mine"))
    with pytest.raises(DataError, match="is not a prepared tree"):
        tune_module.node_tree(str(tree), _want(tree))


def test_trial_logs_to_the_drivers_store_trains_on_its_nodes_tree_and_reports_a_summary(tree, tmp_path, monkeypatch):
    """_trial in a worker, at its boundaries (Ray's context and report, train): the driver's MLflow store and parent
    run win over the node's environment; every epoch but the last is reported, then a summary with the last."""
    from types import SimpleNamespace

    import ultralytics.utils.callbacks.raytune as stock_reporter
    from ray import tune as ray_tune

    from fmnist_yolo.tracking import PARENT_ENV

    for key in (PARENT_ENV, "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.setenv(key, "")  # restored after the test: _trial sets them for its worker process
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////on/the/node.db")  # what the node's environment says
    monkeypatch.setattr(stock_reporter, "callbacks", stock_reporter.callbacks)
    reports, seen = [], {}
    monkeypatch.setattr(ray_tune, "get_context", lambda: SimpleNamespace(get_trial_id=lambda: "x_00000"))
    monkeypatch.setattr(ray_tune, "report", reports.append)

    def train(callbacks, **kwargs):
        seen.update(kwargs, uri=os.environ["MLFLOW_TRACKING_URI"], experiment=os.environ["MLFLOW_EXPERIMENT_NAME"],
                    parent=os.environ[PARENT_ENV])  # fmt: skip
        for epoch, top1 in enumerate((0.3, 0.5)):
            callbacks["on_fit_epoch_end"](SimpleNamespace(epoch=epoch, epochs=2, metrics={tune_module.METRIC: top1}))
        run = tmp_path / "run"
        run.mkdir()
        (run / "results.csv").write_text("epoch,metrics/accuracy_top1,metrics/accuracy_top5\n1,0.3,0.8\n2,0.5,0.9\n")
        return SimpleNamespace(dir=run)

    monkeypatch.setattr(train_module, "train", train)
    tracking = {"MLFLOW_TRACKING_URI": "http://driver:5000", "MLFLOW_EXPERIMENT_NAME": "search"}
    tune_module._trial({"lr0": 0.01}, base={"data": str(tree), "epochs": 2}, parent="run123", tree=_want(tree),
                       tracking=tracking)  # fmt: skip
    assert (seen["uri"], seen["experiment"], seen["parent"]) == ("http://driver:5000", "search", "run123")
    assert seen["data"] == str(tree) and seen["lr0"] == 0.01 and seen["name"] == "trial_x_00000"
    assert [r["epoch"] for r in reports] == [1, 2] and reports[0]["best_val_top1"] == 0.3
    assert reports[-1] == {tune_module.METRIC: 0.5, "best_val_top1": 0.5, "epoch": 2, "finished": 1}


def test_table_from_what_trials_reported_when_their_runs_are_on_other_nodes(tmp_path):
    """Without shared storage a trial's run directory stays on its node: the row comes from its reports to Ray."""
    from types import SimpleNamespace

    class RayTaskError(Exception):  # as Ray wraps a trial's exception: a traceback, the cause kept
        cause = ConfigError("node x: refused")

    def result(trial, metrics, error=None):
        return SimpleNamespace(metrics={"trial_id": trial, **metrics}, config={"lr0": 0.01}, error=error,
                               path=str(tmp_path / "ray" / trial))  # fmt: skip

    grid = [result("a", {"best_val_top1": 0.5, tune_module.METRIC: 0.4, "epoch": 2, "node_ip": "10.0.0.2"}),
            result("b", {"best_val_top1": 0.7, tune_module.METRIC: 0.6, "epoch": 3, "finished": 1,
                         "node_ip": "10.0.0.3"}),
            result("c", {}, RayTaskError("ray::ImplicitFunc.train()\n  File x\nConfigError: refused"))]  # fmt: skip
    table = tune_module._table(grid, ["lr0"], tmp_path / "trials", epochs=3).set_index("trial")
    assert table.index.tolist() == ["b", "a", "c"]  # best first
    assert table.loc["b", ["status", "best_val_top1", "epochs_run", "node"]].tolist() == [
        "completed",
        0.7,
        3,
        "10.0.0.3",
    ]
    assert table.loc["a", ["status", "best_val_top1", "epochs_run"]].tolist() == ["stopped", 0.5, 2]  # by ASHA
    assert table.loc["c", "status"] == "error" and table.loc["c", "error"] == "ConfigError: node x: refused"


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
    assert code == 1 and "fast=True: the fast path trains on one device" in err and err.count("\n") == 1


def test_provenance_records_world_size():
    from types import SimpleNamespace

    import torch

    trainer = SimpleNamespace(args=SimpleNamespace(imgsz=32, seed=0, deterministic=True), model=torch.nn.Linear(2, 2),
                              device="cuda:0",
                              world_size=2, epochs=3, save_dir="runs/x", amp=torch.tensor(True))  # fmt: skip
    from fmnist_yolo.rundir import Provenance

    record = Provenance()
    fields = train_module._trainer_fields(record, trainer)
    assert fields["world_size"] == 2 and fields["amp"] is True and fields["model"]["parameters"] == 6
    assert record == Provenance()  # only the recorder changes the record


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

    real_run = engine.subprocess.run  # the subprocess module's: the run's own git calls go through it

    def launch(cmd, check=False, **kw):  # the DDP workers' output, as they would leave it in the parent's save_dir
        if cmd != ["workers"]:
            return real_run(cmd, check=check, **kw)
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
