"""Ultralytics' trainer with fmnist-yolo's seams: best.pt chosen by select_on, and every image of a split used."""

import json
from types import SimpleNamespace

import pytest

from fmnist_yolo.errors import DataError
from fmnist_yolo.training.stock_trainer import Top1Metrics, check_all_images_used


def test_top1_metrics_fitness_is_top1():
    m = Top1Metrics()
    m.top1, m.top5 = 0.8, 0.99
    assert m.fitness == 0.8 and m.results_dict["fitness"] == 0.8


def _dataset(listed: list[str], kept: list[str]):
    return SimpleNamespace(
        base=SimpleNamespace(samples=[(f, 0) for f in listed]), samples=[[f, 0, None, None] for f in kept]
    )


def test_every_listed_image_must_be_kept():
    files = [f"/t/train/0_a/{i}.png" for i in range(10)]
    check_all_images_used(_dataset(files, files), "/t/train", 1.0, "train")
    with pytest.raises(DataError, match="/t/train/0_a/3.png: cannot decode image \\(1 of 10"):
        check_all_images_used(_dataset(files, files[:3] + files[4:]), "/t/train", 1.0, "train")
    half = [files[i] for i in (0, 2, 4, 6, 9)]  # Ultralytics' half of 10: np.linspace(0, 9, 5), truncated
    check_all_images_used(_dataset(files, half), "/t/train", 0.5, "train")  # the rest was never asked for
    with pytest.raises(DataError, match="4.png"):
        check_all_images_used(_dataset(files, [f for f in half if not f.endswith("/4.png")]), "/t/train", 0.5, "train")


def test_best_pt_selected_on_val_top1(tiny):
    tree, run = tiny
    assert len(run.fitness) >= 3  # each epoch (and Ultralytics calls it once more after the final validation)
    for fitness, top1, top5 in run.fitness:  # what best.pt and early stopping maximise: val top-1 alone
        assert fitness == pytest.approx(top1) and (top1 == top5 or fitness != pytest.approx((top1 + top5) / 2))
    p = json.loads((run.dir / "fmnist_yolo.json").read_text())
    assert p["args"]["select_on"] == "top1" and p["data"]["model_selection_metric"] == "top1"


def test_selection_rule_is_checked(tmp_path):
    import fmnist_yolo
    from fmnist_yolo.errors import ConfigError

    with pytest.raises(ConfigError, match="select_on must be one of top1_top5, top1"):
        fmnist_yolo.train(select_on="top5", data=str(tmp_path))
