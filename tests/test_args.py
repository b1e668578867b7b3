"""Recipes: shipped YAML files of train arguments, selectable from every entry point."""

import dataclasses
import json
import subprocess

import pytest
import yaml

import fmnist_yolo
from fmnist_yolo import config, prepare
from fmnist_yolo.errors import ConfigError
from fmnist_yolo.training.args import recipe_path, recipes, resolve_args
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


def test_recipes_that_only_fmnist_yolo_reads_inherit_the_default_recipe():
    """A recipe read by fmnist-yolo alone (it sets fmnist-yolo's own keys) starts from default.yaml's values and
    repeats none of them: model, epochs and imgsz are declared once."""
    default = yaml.safe_load(recipe_path("default").read_text())
    for name, path in recipes().items():
        args = yaml.safe_load(path.read_text())
        if set(args) & set(config.OWN_TRAIN_KEYS):
            assert not set(args) & set(default), (name, set(args) & set(default))
            assert {k: resolve_args({"recipe": name})[k] for k in default} == default
