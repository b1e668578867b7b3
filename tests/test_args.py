"""Recipes: shipped YAML files of train arguments, selectable from every entry point."""

import dataclasses
import json
import subprocess

import pytest
import yaml

import fmnist_yolo
from fmnist_yolo import config, prepare
from fmnist_yolo.errors import ConfigError
from fmnist_yolo.training.args import choose_loader, recipe_path, recipes, resolve_args, settle_loader
from tests.conftest import ROOT, require, run_cli

FAST = {"model": "yolo11n-cls.yaml", "epochs": 1, "batch": 32, "plots": False, "workers": 0}


def test_the_default_recipe_is_the_one_source_of_the_training_defaults():
    shipped = yaml.safe_load(recipe_path("default").read_text())
    assert shipped == {"model": "yolo11n-cls.pt", "epochs": 100, "imgsz": 28}  # the Ultralytics recipe
    own = {f.name for f in dataclasses.fields(config.Config)}
    assert not {"model", "epochs", "imgsz"} & own  # no second copy to keep equal
    assert config.DEFAULTS.recipe == config.DEFAULT_RECIPE == "default"
    args = resolve_args({})
    assert {k: args[k] for k in shipped} == shipped


@pytest.mark.parametrize("name", sorted(recipes()))
def test_stock_ultralytics_accepts_every_recipe(name):
    """`yolo classify train cfg=RECIPE.yaml` must work: Ultralytics' own keys, valid types (`cpu` also sets `fast`,
    which only fmnist-yolo reads: its comment says so)."""
    from ultralytics.cfg import DEFAULT_CFG, get_cfg

    args = yaml.safe_load(recipe_path(name).read_text())
    own = {k: args.pop(k) for k in list(args) if k in config.OWN_TRAIN_KEYS}
    assert set(own) <= ({"fast", "fused_bn"} if name == "cpu" else set())
    assert set(args) <= set(DEFAULT_CFG.__dict__)
    cfg = get_cfg(DEFAULT_CFG, args)  # raises on unknown keys and bad types
    assert all(getattr(cfg, k) == v for k, v in args.items())


def test_strong_recipe_suits_grey_images():
    args = resolve_args({"recipe": "strong"})
    assert args["imgsz"] > 32 and args["cos_lr"] is True  # upscaled input, cosine schedule
    assert args["flipud"] == 0 and args["fliplr"] > 0  # a shoe upside down is not a Fashion-MNIST image
    assert args["hsv_h"] == 0 and args["hsv_s"] == 0  # no colour work on grey
    assert args["recipe"] == "strong"


def test_cpu_recipe_is_the_default_in_fewer_larger_steps():
    default, cpu = resolve_args({}), resolve_args({"recipe": "cpu"})
    assert {k: cpu[k] for k in ("model", "epochs", "imgsz")} == {k: default[k] for k in ("model", "epochs", "imgsz")}
    assert cpu["nbs"] == 4 * 64 and cpu.get("batch") is None and cpu["fast"] is True  # stock's batch 16, 16 of them
    assert cpu["amp"] == "bf16"  # where the CPU computes it natively
    same = set(default) - {"fast", "recipe"}
    assert set(cpu) - set(default) == {"nbs", "amp", "auto_augment", "hsv_v"}
    assert {k: cpu[k] for k in same - {"fused_bn"}} == {k: default[k] for k in same - {"fused_bn"}}
    assert cpu["fused_bn"] is True and default["fused_bn"] is False  # one BatchNorm over the 256 images: as measured
    # the augmentation it was measured with: no RandAugment, and so no colour jitter either (stock's rule)
    assert cpu["auto_augment"] is None and cpu["hsv_v"] == 0.0


def test_precedence_recipe_cfg_explicit(tmp_path):
    cfg = tmp_path / "mine.yaml"
    cfg.write_text("imgsz: 48\nepochs: 3\n")
    args = resolve_args({"recipe": "strong", "cfg": str(cfg), "epochs": 5})
    assert (args["imgsz"], args["epochs"], args["cos_lr"]) == (48, 5, True)
    assert resolve_args({"cfg": str(cfg)})["imgsz"] == 48
    custom = tmp_path / "custom.yaml"
    custom.write_text("imgsz: 96\n")
    assert resolve_args({"recipe": str(custom)})["imgsz"] == 96  # a recipe given by path


def test_unknown_recipe_and_bad_key(tmp_path, capsys):
    code, _, err = run_cli(["train", "recipe=strog"], capsys)
    assert code == 1 and err.count("\n") == 1 and "unknown recipe 'strog'" in err and "did you mean 'strong'" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("imgsz: 64\nflip_lr: 0.5\n")
    with pytest.raises(ConfigError, match=f"unknown argument in {bad} 'flip_lr'; did you mean 'fliplr'"):
        resolve_args({"recipe": str(bad)})


def test_recipes_command(capsys):
    code, out, _ = run_cli(["recipes"], capsys)
    assert code == 0 and all(name in out for name in recipes())
    code, out, _ = run_cli(["recipes", "strong"], capsys)
    assert code == 0 and out.strip() == str(recipe_path("strong").resolve())


def test_make_train_recipe():
    require("make", program=True)
    r = subprocess.run(["make", "-n", "train", "RECIPE=strong", "FAST=True", "EPOCHS=2"], cwd=ROOT, capture_output=True,
                       text=True)  # fmt: skip
    line = next(x for x in r.stdout.splitlines() if "fmnist_yolo train" in x).split()
    assert r.returncode == 0 and line[line.index("train") + 1 :] == ["recipe=strong", "fast=True", "epochs=2"]


def test_run_records_recipe_and_skips_test(source, tmp_path):
    tree = prepare(source=source, out=tmp_path / "tree", val_size=20, verify=False, workers=1, progress=False)
    run = fmnist_yolo.train(**FAST, data=str(tree), project=str(tmp_path), name="r", evaluate_test=False)
    p = json.loads((run.dir / "fmnist_yolo.json").read_text())
    assert p["recipe"] == {"name": "default", "file": str(recipe_path("default").resolve())}
    assert p["args"]["evaluate_test"] is False and p["metrics"]["test"] is None and run.test is None
    assert not (run.dir / "test_predictions.csv").exists()


# --- each rule once: the same words from every entry point that checks it ------------------------------------------
@pytest.fixture
def tree(source, tmp_path):
    return prepare(source=source, out=tmp_path / "tree", val_size=10, verify=False, workers=1, progress=False)


def test_select_on_is_one_rule(tmp_path, capsys):
    """train's arguments (the CLI, the API) and the trainer itself refuse a selection rule in the same words."""
    from fmnist_yolo.training.args import check_select_on
    from fmnist_yolo.training.stock_trainer import Trainer

    says = "select_on must be one of top1_top5, top1, found 'top5'"
    code, _, err = run_cli(["train", "select_on=top5", f"data={tmp_path}"], capsys)
    assert code == 1 and err == f"Error: {says}\n"
    with pytest.raises(ConfigError) as api:
        fmnist_yolo.train(select_on="top5", data=str(tmp_path))
    with pytest.raises(ConfigError) as trainer:
        Trainer(select_on="top5")  # refused before Ultralytics' trainer reads anything
    assert str(api.value) == str(trainer.value) == says
    for good in ("top1_top5", "top1"):
        check_select_on(good)


@pytest.mark.parametrize("word, says", [
    ("device=0,1", "fast=True: the fast path trains on one device, found device=0,1 (multi-GPU DDP); drop fast=True "
                   "for the stock loader"),
    ("time=1", "fast=True: the fast path plans its optimizer steps by epoch: give epochs=, not time=; drop "
               "fast=True for the stock loader"),
])  # fmt: skip
def test_fast_preconditions_are_one_rule(word, says, tree, tmp_path, capsys, monkeypatch):
    """`train fast=True` refuses several devices and time= in the words the fast trainer uses when it is reached
    without train's argument check (a resume, the Python API)."""
    import torch
    from ultralytics.engine import trainer as engine

    from fmnist_yolo.training.fast import MemoryTrainer

    code, _, err = run_cli(["train", "fast=True", word, f"data={tree}", f"project={tmp_path / 'cli'}"], capsys)
    assert code == 1 and err == f"Error: {says}\n" and not (tmp_path / "cli").exists()
    monkeypatch.setattr(engine, "select_device", lambda *a, **k: torch.device("cpu"))  # no GPUs here: 0,1 as named
    key, value = word.split("=")
    with pytest.raises(ConfigError) as e:
        MemoryTrainer(
            overrides={**FAST, "data": str(tree), "project": str(tmp_path / "api"), key: yaml.safe_load(value)}
        )
    assert str(e.value) == says


@pytest.mark.parametrize("given, fast, why", [
    ({}, True, None),
    ({"fast": False}, False, None),
    ({"fast": True, "auto_augment": "augmix"}, True, None),  # as given: the fast trainer warns of augmix itself
    ({"device": "0,1"}, False, "trains on one device, found device=0,1"),
    ({"time": 1}, False, "give epochs=, not time="),
    ({"auto_augment": "augmix"}, False, "does not apply auto_augment=augmix"),
    ({"auto_augment": "autoaugment"}, False, "does not apply auto_augment=autoaugment"),
])  # fmt: skip
def test_the_fast_path_is_the_default_where_it_serves(given, fast, why):
    """fast= unset trains the fast path unless it cannot serve (several devices, time=) or would train something else
    (an auto_augment policy it does not apply): then the stock loader, with one line that says why."""
    import warnings

    from fmnist_yolo.errors import FmnistWarning
    from fmnist_yolo.training.args import resolve_args

    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        args = resolve_args(given)
        assert args["fast"] is given.get("fast")  # unset stays None: decided once the tree is known
        settle_loader(args)
    lines = [str(w.message) for w in said if issubclass(w.category, FmnistWarning)]
    assert args["fast"] is fast
    assert lines == ([] if why is None else [lines[0]]) and (why is None or why in lines[0]), lines
    assert all(line.startswith("training with the stock loader: ") for line in lines)
    again = resolve_args({**given, "fast": args["fast"]})  # a record's args resolve to themselves
    settle_loader(again)
    assert again["fast"] is fast


def test_a_tree_of_the_users_own_trains_with_stock(tree, tmp_path):
    """The fast path holds Fashion-MNIST's 28x28 greyscale images: a tree without prepare's manifest (any size, any
    colours) trains with the stock loader unless fast=True says otherwise."""
    import shutil

    from fmnist_yolo.data.tree import MANIFEST

    assert choose_loader({"fast": None}, tree) == (True, None)  # prepare's tree
    own = tmp_path / "own"
    shutil.copytree(tree, own)
    (own / MANIFEST).unlink()
    fast, why = choose_loader({"fast": None}, own)
    assert fast is False and why.startswith(f"{own} has no {MANIFEST} from `fmnist-yolo prepare`")
    assert choose_loader({"fast": True}, own) == (True, None)  # asked for: kept


def test_fused_bn_asks_for_the_fast_path():
    args = resolve_args({"fused_bn": True})
    settle_loader(args)
    assert args["fast"] is True
    with pytest.raises(ConfigError, match="fused_bn=True needs the fast path, and the fast path plans its optimizer"):
        settle_loader(resolve_args({"fused_bn": True, "time": 1}))
    with pytest.raises(ConfigError, match="fused_bn=True .* needs fast=True"):
        resolve_args({"fused_bn": True, "fast": False})


def test_fast_warns_of_the_augmentation_it_does_not_apply(tree, tmp_path, monkeypatch):
    from fmnist_yolo.training.args import check_fast
    from fmnist_yolo.training.fast import MemoryTrainer, loop

    said = []
    monkeypatch.setattr(loop.LOGGER, "warning", said.append)
    MemoryTrainer(overrides={**FAST, "data": str(tree), "project": str(tmp_path), "auto_augment": "augmix"})
    assert said == [check_fast("cpu", None, "augmix")] and "auto_augment=augmix" in said[0]
    assert check_fast("cpu", None, "randaugment") is None and check_fast(None, 0, None) is None


def test_device_strings_are_read_once():
    """device= as Ultralytics takes it, in every form, read by one function: the fast check, tune's one device per
    trial, the final test evaluation's device and reproduce's recorded device all count and name devices through it."""
    from types import SimpleNamespace

    from fmnist_yolo import reproduction
    from fmnist_yolo.training.args import device_count, devices
    from fmnist_yolo.training.train import _evaluation_device

    two = ("0,1", "0, 1", [0, 1], (0, 1), "(0, 1)", "[0,1]", "cuda:0,1", "CUDA:0,1")
    assert all(devices(d) == ["0", "1"] and device_count(d) == 2 for d in two)
    assert devices("cpu") == ["cpu"] and devices(0) == devices("cuda:0") == ["0"] and devices("mps") == ["mps"]
    assert devices(None) == devices("") == [] and device_count(None) == device_count("") == device_count("cpu") == 1
    assert _evaluation_device("0,1") == _evaluation_device([0, 1]) == _evaluation_device("cuda:0,1") == "0"
    assert _evaluation_device(None) is None and _evaluation_device("cpu") == "cpu" and _evaluation_device(1) == "1"
    recorded = [SimpleNamespace(world_size=1, device=d, args={}) for d in ("cuda:1", "cpu", "mps")]
    assert [reproduction._device(r) for r in recorded] == ["1", "cpu", "mps"]  # reproduce's device: torch's name read


def test_recipes_that_only_fmnist_yolo_reads_inherit_the_default_recipe():
    """A recipe read by fmnist-yolo alone (it sets fmnist-yolo's own keys) starts from default.yaml's values and
    repeats none of them: model, epochs and imgsz are declared once."""
    default = yaml.safe_load(recipe_path("default").read_text())
    for name, path in recipes().items():
        args = yaml.safe_load(path.read_text())
        if set(args) & set(config.OWN_TRAIN_KEYS):
            assert not set(args) & set(default), (name, set(args) & set(default))
            assert {k: resolve_args({"recipe": name})[k] for k in default} == default
