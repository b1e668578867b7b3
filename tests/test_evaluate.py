"""evaluate(): test-time augmentation really mirrors and averages; best.pt selection on val top-1."""

import shutil

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from fmnist_yolo.evaluation.evaluate import evaluate, tta_views
from fmnist_yolo.rundir import best_epoch

RUN = {"model": "yolo11n-cls.yaml", "imgsz": 28, "batch": 16, "plots": False, "workers": 0, "device": "cpu"}


def test_tta_views_mirror_and_shift():
    img = torch.zeros(1, 3, 8, 8)
    img[..., 3, 1] = 1.0  # one bright pixel at row 3, column 1
    flip = tta_views(img, "flip")
    assert len(flip) == 2 and flip[0] is img and flip[1][0, 0, 3, 6] == 1.0  # column 1 -> 8 - 1 - 1
    views = tta_views(img, "flip+shift")
    assert len(views) == 10 and all(v.shape == img.shape for v in views)
    where = [tuple(int(i) for i in hit[0]) if len(hit := (v[0, 0] == 1).nonzero()) else None for v in views[2:6]]
    assert where == [(3, 3), None, (5, 1), (1, 1)]  # the original shifted 2 px right, left (off the edge), down, up
    assert float(views[7][0, 0, 3, 4]) == 1.0  # then the mirror (pixel at column 6) shifted: left, to column 4


@pytest.mark.slow
def test_tta_averages_the_probabilities_of_image_and_mirror(tiny_run, real_tree, tmp_path):
    """A model trained on real images (its outputs depend on the input) on 200 real test images and their mirrors."""
    small, mirrored = tmp_path / "small", tmp_path / "mirrored"
    for png in sorted((real_tree / "test").rglob("*.png"))[::50]:
        for root, flip in ((small, False), (mirrored, True)):
            for split in ("train", "test"):  # Ultralytics takes the class names from train/
                out = root / split / png.parent.name / png.name
                out.parent.mkdir(parents=True, exist_ok=True)
                im = cv2.imread(str(png), cv2.IMREAD_GRAYSCALE)
                cv2.imwrite(str(out), cv2.flip(im, 1) if flip else im)
    # the tiny run's logits are near-uniform: scale its classifier so that image and mirror get clearly apart
    ckpt = torch.load(tiny_run.dir / "weights" / "best.pt", map_location="cpu", weights_only=False)
    head = ckpt["model"].model[-1].linear
    head.weight.data *= 30
    head.bias.data *= 30
    sharp = tmp_path / "weights" / "sharp.pt"
    sharp.parent.mkdir()
    torch.save(ckpt, sharp)
    plain = evaluate(sharp, "test", small)
    mirror = evaluate(sharp, "test", mirrored)
    tta = evaluate(sharp, "test", small, tta=True)
    cols = [c for c in plain.predictions.columns if c.startswith("p_")]
    expected = (plain.predictions[cols].to_numpy() + mirror.predictions[cols].to_numpy()) / 2
    got = tta.predictions[cols].to_numpy()
    assert len(got) == 200 and tta.tta == "flip" and plain.tta is None and tta.headline_figures()["tta"] == "flip"
    gap = np.abs(plain.predictions[cols].to_numpy() - expected).mean()  # how far the plain pass is from the mean
    error = np.abs(got - expected).mean()  # PIL's 8-bit resize rounds a mirror image its own way: not quite 0
    assert gap > 0.005 and error < gap / 10, (gap, error)
    assert (tta.predictions["pred_id"].to_numpy() == expected.argmax(1)).mean() > 0.95
    assert tta.top1 == pytest.approx(tta.predictions["correct"].mean())


def test_tta_value_checked(tiny):
    from fmnist_yolo.errors import ConfigError

    with pytest.raises(ConfigError, match="tta must be"):
        evaluate(tiny[1].dir, "test", tiny[0], tta="rotate")


def test_best_epoch_follows_the_rule():
    history = pd.DataFrame({"val_top1": [0.80, 0.82, 0.81, 0.82], "val_top5": [0.99, 0.95, 0.999, 0.93]},
                           index=[1, 2, 3, 4])  # fmt: skip
    assert best_epoch(history, "top1") == 4  # a tie: Ultralytics rewrites best.pt on an equal fitness, so the last
    assert best_epoch(history) == 3  # Ultralytics: mean(0.81, 0.999) = 0.9045 > mean(0.82, 0.95) = 0.885


def test_tree_without_train_is_refused(tiny, tmp_path):
    """Ultralytics would silently re-split a directory without train/ into a new one (and call it test)."""
    from fmnist_yolo.errors import ConfigError

    shutil.copytree(tiny[0] / "test", tmp_path / "only" / "test")
    with pytest.raises(ConfigError, match="only: no train/ class folders"):
        evaluate(tiny[1].dir, "test", tmp_path / "only")
