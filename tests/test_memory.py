"""The fast data path: in-memory split, batched augmentation, and the trainer subclass around them."""

import json
import os

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from fmnist_yolo import config, prepare
from fmnist_yolo.memory import Augment, MemoryDataset, MemoryLoader, load_split, resize_like_validation

FAST = {"model": "yolo11n-cls.yaml", "epochs": 1, "plots": False, "workers": 0, "imgsz": 28}


@pytest.fixture
def tree(source, tmp_path):
    return prepare(source=source, out=tmp_path / "tree", val=20, verify=False, workers=1, progress=False)


def stock_samples(tree, split, fraction=1.0):
    from ultralytics.cfg import get_cfg
    from ultralytics.data.dataset import ClassificationDataset

    args = get_cfg(overrides={"imgsz": 32, "fraction": fraction})
    names = dict(enumerate(config.CLASS_DIRS))
    return [(s[0], s[1]) for s in ClassificationDataset(str(tree / split), args, augment=False, prefix=split,
                                                        names=names).samples]  # fmt: skip


@pytest.mark.parametrize("split, fraction", [("train", 1.0), ("train", 0.5), ("val", 1.0)])
def test_split_in_memory_matches_the_tree(tree, split, fraction):
    from ultralytics.cfg import get_cfg

    args = get_cfg(overrides={"imgsz": 32, "fraction": fraction, "split": "val"})
    data = load_split(tree / split, args, dict(enumerate(config.CLASS_DIRS)), split, torch.device("cpu"))
    stock = stock_samples(tree, split, fraction)
    assert list(zip(data.files, data.labels.tolist())) == stock  # same images, same class indices as Ultralytics
    assert all(config.CLASS_DIRS[label] == os.path.basename(os.path.dirname(f)) for f, label in stock)
    assert data.images.dtype == torch.uint8 and data.images.shape[1:] == (28, 28)
    for i in (0, len(data) - 1):
        np.testing.assert_array_equal(data.images[i].numpy(), cv2.imread(data.files[i], cv2.IMREAD_GRAYSCALE))


def test_each_image_once_per_epoch_in_a_seeded_order():
    n = 100
    data = MemoryDataset(torch.zeros(n, 28, 28, dtype=torch.uint8), torch.arange(n), [])
    loader = MemoryLoader(data, 16, 32, Augment(32), seed=0)
    assert len(loader) == 7
    first = torch.cat([b["cls"] for b in loader])
    assert sorted(first.tolist()) == list(range(n)) and loader.epoch == 1
    second = torch.cat([b["cls"] for b in loader])
    assert sorted(second.tolist()) == list(range(n)) and not torch.equal(first, second)  # reshuffled each epoch
    loader.epoch = 0  # as the trainer sets it (also after a resume)
    assert torch.equal(torch.cat([b["cls"] for b in loader]), first)
    val = MemoryLoader(data, 16, 32, None)
    assert torch.cat([b["cls"] for b in val]).tolist() == list(range(n))  # validation: fixed order


def test_augmentation_shapes_range_determinism():
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.integers(0, 256, (32, 28, 28), dtype=np.uint8))
    data = MemoryDataset(x, torch.zeros(32, dtype=torch.int64), [])
    a = [b["img"] for b in MemoryLoader(data, 32, 64, Augment(64), seed=3)][0]
    b = [b["img"] for b in MemoryLoader(data, 32, 64, Augment(64), seed=3)][0]
    c = [b["img"] for b in MemoryLoader(data, 32, 64, Augment(64), seed=4)][0]
    assert a.shape == (32, 3, 64, 64) and a.dtype == torch.float32
    assert 0 <= a.min() and a.max() <= 1
    assert torch.equal(a[:, 0], a[:, 1]) and torch.equal(a[:, 0], a[:, 2])  # grey to three equal channels
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_flips_and_erasing_do_what_they_say():
    x = torch.zeros(8, 28, 28, dtype=torch.uint8)
    x[:, :, :14] = 255  # bright left half, dark bottom... (top/bottom equal)
    x[:, 14:, :] = 0  # bright top-left quadrant only
    g = torch.Generator().manual_seed(0)
    plain = Augment(28, scale=0.0, fliplr=0.0, flipud=0.0, hsv_v=0.0, erasing=0.0)(x, g)
    mirrored = Augment(28, scale=0.0, fliplr=1.0, flipud=1.0, hsv_v=0.0, erasing=0.0)(x, g)
    q = 14
    assert (plain[:, 0, :q, :q].mean() > 0.8) and (plain[:, 0, q:, q:].mean() < 0.2)
    assert (mirrored[:, 0, q:, q:].mean() > 0.8) and (mirrored[:, 0, :q, :q].mean() < 0.2)  # both flips
    white = torch.full((16, 28, 28), 255, dtype=torch.uint8)
    erased = Augment(28, scale=0.0, fliplr=0.0, hsv_v=0.0, erasing=1.0)(white, g)
    zero = (erased == 0).float().mean((1, 2, 3))
    assert ((zero >= 0.01) & (zero <= 0.4)).all()  # every image loses one 2-33 % box


def test_validation_resize_matches_ultralytics_transforms():
    from PIL import Image
    from ultralytics.data.augment import classify_transforms

    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (6, 28, 28), dtype=np.uint8)
    ours = resize_like_validation(torch.from_numpy(x), 32)[:, 0]
    stock = torch.stack([classify_transforms(32)(Image.fromarray(im).convert("RGB"))[0] for im in x])
    assert ours.shape == stock.shape == (6, 32, 32)
    assert (ours - stock).abs().max() <= 1 / 255 + 1e-6  # at most one grey level (PIL's fixed-point rounding)
    assert (ours - stock).abs().mean() < 0.3 / 255  # and most pixels equal (random noise is the worst case)


def test_fast_run_is_an_ultralytics_run(tree, tmp_path):
    from ultralytics import YOLO
    from ultralytics.models.yolo.classify import ClassificationValidator

    import fmnist_yolo
    from fmnist_yolo.memory import MemoryTrainer

    run = fmnist_yolo.train(**FAST, data=str(tree), fast=True, project=str(tmp_path), name="fast")
    p = json.loads((run.dir / "fmnist_yolo.json").read_text())
    assert p["args"]["fast"] is True and p["args"]["batch"] == config.FAST_BATCH and p["status"] == "finished"
    assert len(pd.read_csv(run.dir / "results.csv")) == 1 and run.weights.is_file() and run.test is not None
    model = YOLO("yolo11n-cls.yaml")
    threads = []
    model.add_callback("on_train_batch_end", lambda t: threads.append(torch.get_num_threads()))
    model.train(data=str(tree), epochs=1, imgsz=28, batch=16, plots=False, project=str(tmp_path), name="direct",
                trainer=MemoryTrainer)  # fmt: skip
    t = model.trainer
    assert isinstance(t.validator, ClassificationValidator) and isinstance(t.train_loader, MemoryLoader)
    assert len(t.train_loader.dataset) == len(stock_samples(tree, "train"))
    assert threads and set(threads) == {os.cpu_count()}  # every core computes; no loader workers to leave one for
