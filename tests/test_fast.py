"""The fast data path: in-memory split, batched augmentation, and the trainer subclass around them."""

import contextlib
import json
import math
import os

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from ultralytics.utils.torch_utils import unwrap_model

from fmnist_yolo import config, prepare
from fmnist_yolo.training.fast import (
    Augment,
    Chunk,
    ChunkLoss,
    DeviceStep,
    MemoryDataset,
    MemoryLoader,
    MemoryTrainer,
    MicroBatchNorm,
    load_split,
    resize_like_validation,  # fmt: skip
    step_plan,
)
from tests.conftest import cpu_flags_say_bf16
from tests.stepprobe import first_epoch_update, probe_args, stock_class

FAST = {"model": "yolo11n-cls.yaml", "epochs": 1, "plots": False, "workers": 0, "imgsz": 28}


@pytest.fixture
def tree(source, tmp_path):
    return prepare(source=source, out=tmp_path / "tree", val_size=20, verify=False, workers=1, progress=False)


def stock_samples(tree, split, fraction=1.0):
    from ultralytics.cfg import get_cfg
    from ultralytics.data.dataset import ClassificationDataset

    args = get_cfg(overrides={"imgsz": 32, "fraction": fraction})
    names = dict(enumerate(config.CLASS_DIRS))
    return [(s[0], s[1]) for s in ClassificationDataset(str(tree / split), args, augment=False, prefix=split,
                                                        names=names).samples]  # fmt: skip


@pytest.mark.parametrize("split, fraction", [("train", 1.0), ("train", 0.5), ("val", 1.0), ("val", 0.5)])
def test_split_in_memory_matches_the_tree(tree, split, fraction):
    from ultralytics.cfg import get_cfg

    args = get_cfg(overrides={"imgsz": 32, "fraction": fraction, "split": "val"})
    data = load_split(tree / split, args, dict(enumerate(config.CLASS_DIRS)), split, torch.device("cpu"))
    stock = stock_samples(tree, split, fraction)
    assert list(zip(data.files, data.labels.tolist())) == stock  # same images, same class indices as Ultralytics
    # and what that is, from the tree itself: class folders in order, their files sorted, `fraction` of them
    # evenly spaced over the listing (Ultralytics 8.4: np.linspace over the samples); a scalar fraction is the
    # train split's only, so validation loads every image
    listing = [(str(f), c) for c, d in enumerate(config.CLASS_DIRS) for f in sorted((tree / split / d).glob("*.png"))]
    share = fraction if split == "train" else 1.0
    keep = np.linspace(0, len(listing) - 1, round(len(listing) * share), dtype=int)
    assert list(zip(data.files, data.labels.tolist())) == [listing[i] for i in keep]
    assert data.images.dtype == torch.uint8 and data.images.shape == (len(data.files), 28, 28)
    on_disk = np.stack([cv2.imread(f, cv2.IMREAD_GRAYSCALE) for f in data.files])
    np.testing.assert_array_equal(data.images.numpy(), on_disk)  # every image, pixel for pixel


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


@pytest.mark.parametrize("size", [32, 64])  # imgsz=28 trains at 32; the strong recipe at 64
def test_crops_are_torchvisions_random_resized_crop(size):
    """The boxes follow torchvision's sampler (first of 10 that fits, else the whole image), and the image is that
    box resized as torchvision resizes it, to the size trained at."""
    from torchvision.transforms import RandomResizedCrop
    from torchvision.transforms import functional as TF

    n = 20000
    r = Augment(size, scale=0.5).draw(n, torch.Generator().manual_seed(0), torch.device("cpu"))
    top, left, h, w = Augment.crop_boxes(r, 28, 28)
    torch.manual_seed(0)
    ref = torch.tensor([RandomResizedCrop.get_params(torch.zeros(1, 28, 28), (0.5, 1.0), (3 / 4, 4 / 3))
                        for _ in range(n)], dtype=torch.float32)  # fmt: skip
    ours = torch.stack([top, left, h, w], 1)
    assert torch.equal(ours, ours.round()) and (top + h <= 28).all() and (left + w <= 28).all() and (ours >= 0).all()
    # the same distributions of area, full-height boxes, position (top and left) and sides (h and w) as torchvision's
    stats = {
        "area": lambda b: b[:, 2] * b[:, 3] / 784,
        "full height": lambda b: (b[:, 2] == 28).float(),
        "top": lambda b: b[:, 0],
        "left": lambda b: b[:, 1],
        "h": lambda b: b[:, 2],
        "w": lambda b: b[:, 3],
    }
    for name, stat in stats.items():
        assert abs(float(stat(ours).mean() - stat(ref).mean())) < 0.01 * max(1.0, float(stat(ref).mean())), name
        assert abs(float(stat(ours).std() - stat(ref).std())) < 0.02 * max(1.0, float(stat(ref).std())), name
    # the first box that fits, else the whole image (a square's ratio is within [3/4, 4/3])
    area = torch.tensor([[1.0] + [0.6] * 9, [1.0] * 10])  # of the image; 1.0 at ratio 1.32 is 32 px wide: no fit
    log_ratio = torch.tensor([[0.28] + [0.0] * 9, [0.28] * 10])
    pick = {"area": area, "log_ratio": log_ratio, "cx": torch.tensor([0.99, 0.5]), "cy": torch.tensor([0.0, 0.5])}
    top, left, h, w = Augment.crop_boxes(pick, 28, 28)
    assert (h.tolist(), w.tolist(), top.tolist(), left.tolist()) == ([22.0, 28.0], [22.0, 28.0], [0.0, 0.0], [6.0, 0.0])
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (64, 28, 28), dtype=np.uint8))
    still = Augment(size, scale=0.5, fliplr=0.0, erasing=0.0)
    r = still.draw(64, torch.Generator().manual_seed(1), torch.device("cpu"))
    out = still.apply(x, r)
    boxes = torch.stack(Augment.crop_boxes(r, 28, 28), 1).long().tolist()
    ref = torch.stack([TF.resized_crop(im[None].float() / 255, *box, [size, size]) for im, box in zip(x, boxes)])
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


def test_erasing_boxes_are_torchvisions():
    from torchvision.transforms import RandomErasing

    n = 20000
    r = Augment(32).draw(n, torch.Generator().manual_seed(0), torch.device("cpu"))
    ours = torch.stack(Augment.erase_boxes(r, 32), 1)
    torch.manual_seed(0)
    ref = torch.tensor([RandomErasing.get_params(torch.zeros(1, 32, 32), (0.02, 0.33), (0.3, 3.3), [0])[:4]
                        for _ in range(n)], dtype=torch.float32)  # fmt: skip
    assert torch.equal(ours, ours.round()) and (ours[:, 0] + ours[:, 2] <= 32).all() and (ours[:, 2] < 32).all()
    for col in range(4):  # top, left, h, w: the same distributions
        assert abs(float(ours[:, col].mean() - ref[:, col].mean())) < 0.2, col


def _quadrants(x: torch.Tensor) -> list[float]:
    """Mean brightness of the top-left, top-right, bottom-left, bottom-right quadrants of (B, 1, S, S)."""
    q = x.shape[-1] // 2
    return [float(x[..., r : r + q, c : c + q].mean()) for r in (0, q) for c in (0, q)]


def test_each_flip_flips_its_own_axis():
    x = torch.zeros(8, 28, 28, dtype=torch.uint8)
    x[:, :14, :14] = 255  # bright top-left quadrant only
    g = torch.Generator().manual_seed(0)
    still = dict(scale=0.0, fliplr=0.0, flipud=0.0, hsv_v=0.0, erasing=0.0)
    plain = _quadrants(Augment(28, **still)(x, g))
    lr = _quadrants(Augment(28, **{**still, "fliplr": 1.0})(x, g))
    ud = _quadrants(Augment(28, **{**still, "flipud": 1.0})(x, g))
    bright = lambda qs: [round(v) for v in qs]  # noqa: E731 (crops keep >= 3/4 of a side: quadrants stay mostly)
    assert bright(plain) == [1, 0, 0, 0]
    assert bright(lr) == [0, 1, 0, 0]  # left-right: to the top-right
    assert bright(ud) == [0, 0, 1, 0]  # up-down: to the bottom-left


@pytest.mark.parametrize("axis, size", [("fliplr", 32), ("flipud", 32), ("fliplr", 64)])
def test_flips_at_a_probability_flip_that_share_of_images(axis, size):
    """fliplr=0.5 (stock's default): each image mirrored or not as its own draw says, about half of them."""
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (400, 28, 28), dtype=np.uint8))
    still = dict(scale=0.0, fliplr=0.0, flipud=0.0, hsv_v=0.0, erasing=0.0)
    flipping = Augment(size, **{**still, axis: 0.5})
    r = flipping.draw(len(x), torch.Generator().manual_seed(0), torch.device("cpu"))
    out, plain = flipping.apply(x, r), Augment(size, **still).apply(x, r)
    mirrored = plain.flip(-1 if axis == "fliplr" else -2)
    flipped = r[axis] < 0.5
    torch.testing.assert_close(out[flipped], mirrored[flipped], atol=1e-6, rtol=0)
    torch.testing.assert_close(out[~flipped], plain[~flipped], atol=1e-6, rtol=0)
    assert 0.4 <= flipped.float().mean() <= 0.6


def test_erasing_boxes():
    g = torch.Generator().manual_seed(0)
    white = torch.full((16, 28, 28), 255, dtype=torch.uint8)
    erased = Augment(28, scale=0.0, fliplr=0.0, hsv_v=0.0, erasing=1.0)(white, g)
    zero = (erased == 0).float().mean((1, 2, 3))
    assert ((zero >= 0.01) & (zero <= 0.4)).all()  # every image loses one 2-33 % box
    kept = Augment(28, scale=0.0, fliplr=0.0, hsv_v=0.0, erasing=0.0)(white, g)
    assert (kept > 0.99).all()


def test_brightness_contrast_only_where_stock_applies_colour_jitter():
    from ultralytics.cfg import get_cfg

    x = torch.full((64, 28, 28), 100, dtype=torch.uint8)
    x[:, 10:18, 10:18] = 140  # a mid-grey image with a brighter square: nothing clips at +-40 %
    still = dict(scale=0.0, fliplr=0.0, erasing=0.0)
    jitter = Augment(28, hsv_v=0.4, **still)
    r = jitter.draw(64, torch.Generator().manual_seed(0), torch.device("cpu"))
    out = jitter.apply(x, r).flatten(1).double()
    before = x.flatten(1).double() / 255
    b, c = r["brightness"].double(), r["contrast"].double()
    assert b.min() >= 0.6 and b.max() <= 1.4 and b.std() > 0.15 and c.min() >= 0.6 and c.max() <= 1.4 and c.std() > 0.15
    # brightness scales the mean; contrast scales the spread about the mean, and then brightness scales that too
    torch.testing.assert_close(out.mean(1) / before.mean(1), b, atol=1e-5, rtol=0)
    torch.testing.assert_close(out.std(1) / before.std(1), c * b, atol=1e-5, rtol=0)
    plain = Augment(28, hsv_v=0.0, **still)(x, torch.Generator().manual_seed(0))
    torch.testing.assert_close(plain.flatten(1).double(), before, atol=1e-6, rtol=0)  # hsv_v=0: untouched
    # stock turns its ColorJitter off under an auto_augment policy: so does the fast loader
    assert Augment.from_args(get_cfg(overrides={"imgsz": 32, "hsv_v": 0.4, "auto_augment": None})).hsv_v == 0.4
    assert Augment.from_args(get_cfg(overrides={"imgsz": 32, "hsv_v": 0.4})).hsv_v == 0.0  # randaugment, default
    assert not hasattr(Augment(28), "translate")  # stock's classification transforms have no shift either


def test_resumed_epoch_sees_the_same_images_whatever_the_chunking():
    """A resume replans the steps from its epoch (as stock restarts accumulation); the epoch's images are the same."""
    n = 100
    rng = np.random.default_rng(0)
    data = MemoryDataset(torch.from_numpy(rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)), torch.arange(n), [])

    whole = MemoryLoader(data, 8, 32, Augment(32), seed=1)
    whole.schedule(warmup=30, accumulate=4, epochs=4)
    whole.chunks(0)  # planned from epoch 0: epoch 2's chunks straddle from epoch 1
    resumed = MemoryLoader(data, 8, 32, Augment(32), seed=1)
    resumed.epoch = 2
    resumed.schedule(warmup=30, accumulate=4, epochs=4)
    assert [c.stop - c.start for c in whole.chunks(2)] != [c.stop - c.start for c in resumed.chunks(2)]
    whole.epoch = resumed.epoch = 2
    a, b = list(whole), list(resumed)
    assert torch.equal(torch.cat([x["img"] for x in a]), torch.cat([x["img"] for x in b]))
    assert torch.equal(torch.cat([x["cls"] for x in a]), torch.cat([x["cls"] for x in b]))


@pytest.mark.parametrize("side", [28, 64])  # up to 32 px (Fashion-MNIST's 28 px), and down (antialiased, as PIL)
def test_validation_resize_matches_ultralytics_transforms(side):
    from PIL import Image
    from ultralytics.data.augment import classify_transforms

    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (6, side, side), dtype=np.uint8)
    ours = resize_like_validation(torch.from_numpy(x), 32)[:, 0]
    stock = torch.stack([classify_transforms(32)(Image.fromarray(im).convert("RGB"))[0] for im in x])
    assert ours.shape == stock.shape == (6, 32, 32)
    assert (ours - stock).abs().max() <= 1 / 255 + 1e-6  # at most one grey level (PIL's fixed-point rounding)
    assert (ours - stock).abs().mean() < 0.3 / 255  # and most pixels equal (random noise is the worst case)


def test_fast_run_is_an_ultralytics_run(tree, tmp_path):
    from ultralytics import YOLO

    import fmnist_yolo
    from fmnist_yolo.training.fast import DeviceValidator, MemoryTrainer

    norms = lambda m: [b for b in m.modules() if isinstance(b, torch.nn.BatchNorm2d)]  # noqa: E731
    per_micro = []
    watch = {"on_train_start": lambda t: per_micro.append(any("forward" in vars(b) for b in norms(t.model)))}
    run = fmnist_yolo.train(**FAST, data=str(tree), fast=True, fused_bn=True, project=str(tmp_path), name="fast",
                            callbacks=watch)  # fmt: skip
    p = json.loads((run.dir / "fmnist_yolo.json").read_text())
    assert p["args"]["fast"] is True and p["args"]["fused_bn"] is True and p["status"] == "finished"
    assert per_micro == [False]  # fused_bn=True: plain BatchNorm over each fused chunk
    assert len(pd.read_csv(run.dir / "results.csv")) == 1 and run.weights.is_file() and run.test is not None
    model = YOLO("yolo11n-cls.yaml")
    threads, layouts = [], []
    model.add_callback("on_train_batch_end", lambda t: threads.append(torch.get_num_threads()))
    model.add_callback("on_train_batch_end", lambda t: layouts.append(not next(t.model.parameters()).is_contiguous()))
    model.train(data=str(tree), epochs=1, imgsz=28, batch=16, plots=False, project=str(tmp_path), name="direct",
                trainer=MemoryTrainer)  # fmt: skip
    t = model.trainer
    assert isinstance(t.validator, DeviceValidator) and isinstance(t.train_loader, MemoryLoader)
    assert len(t.train_loader.dataset) == len(stock_samples(tree, "train"))
    assert layouts and all(layouts) and t.args.channels_last is None  # trained channels_last; the argument as given
    saved = torch.load(t.best, weights_only=False)["model"]
    assert all(p.is_contiguous() for p in saved.parameters())  # checkpoints are NCHW, as Ultralytics writes them
    assert all("forward" in vars(b) for b in norms(unwrap_model(t.model)))  # the training model: per micro-batch
    assert not any("forward" in vars(b) for b in norms(t.ema.ema) + norms(saved))  # EMA and checkpoint: plain
    if t.device.type == "cpu":  # every core computes; no loader workers to leave one for
        assert threads and set(threads) == {os.cpu_count()}
    else:  # the split and its batches live on the training device
        assert t.train_loader.dataset.images.device.type == t.device.type


@pytest.mark.parametrize("asked, nhwc", [(None, True), (True, True), (False, False)])
def test_channels_last_on_cpu_unless_refused(tree, tmp_path, asked, nhwc):
    """Ultralytics applies channels_last on CUDA only; the fast path on CPU too, and channels_last=False refuses."""
    overrides = {**FAST, "data": str(tree), "device": "cpu", "channels_last": asked, "project": str(tmp_path)}
    t = MemoryTrainer(overrides=overrides)
    t.setup_model()
    t.model = t.model.to(t.device)
    first_conv = next(p for p in t.model.parameters() if p.ndim == 4)
    assert (not first_conv.is_contiguous()) is nhwc


def test_bf16_trains_on_a_cpu_that_has_it(tree, tmp_path, monkeypatch):
    """amp=bf16 on CPU: Ultralytics alone refuses it; through fmnist-yolo forward and backward run in bf16 (where
    the start's measurement finds bf16 faster: made so here)."""
    import fmnist_yolo
    from fmnist_yolo import compat
    from fmnist_yolo.training.fast import loop

    monkeypatch.setattr(loop, "cpu_precision_probe", lambda model, size, images: {"fp32": 2.0, "bf16": 1.0})

    native = cpu_flags_say_bf16()  # from the CPU's flags: a cpu_has_bf16 that says False here fails, not skips
    assert compat.cpu_has_bf16() is native
    if not native:
        pytest.skip("this CPU has no native bf16 (its flags say so)")
    dtypes = []

    def watch(trainer):  # the training model's classifier (validation runs the EMA copy, in fp32)
        trainer.model.model[-1].linear.register_forward_hook(lambda m, i, out: dtypes.append(out.dtype))

    run = fmnist_yolo.train(**FAST, data=str(tree), fast=True, amp="bf16", device="cpu", project=str(tmp_path),
                            callbacks={"on_train_start": watch})  # fmt: skip
    assert dtypes and set(dtypes) == {torch.bfloat16}
    assert run.provenance["amp"] is True and run.provenance["status"] == "finished"


# --- fast=True trains stock's recipe: one step agrees, and every step's schedule is stock's -------------------------


@pytest.mark.parametrize("optimizer", ["SGD", "MuSGD"])
def test_one_fast_step_updates_the_weights_as_stock(tree, tmp_path, optimizer):
    """batch=16, nbs=64: stock adds 4 micro-batch gradients, fast=True fuses them; the update must be the same.

    The micro-batches hold different images (in brightness too), so BatchNorm over the fused 64 would differ from
    stock's over each 16: MicroBatchNorm normalises each on its own, and the gradient's scale and the step agree.
    """
    from ultralytics.models.yolo.classify import ClassificationTrainer

    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 256, (64, 32, 32), dtype=np.uint8))
    images = (images.float() * torch.tensor([0.2, 0.5, 0.8, 1.0]).repeat_interleave(16).view(-1, 1, 1)).to(torch.uint8)
    labels = torch.arange(64) % 10
    kw = {"optimizer": optimizer, "lr0": 0.01, "momentum": 0.9}
    stock = first_epoch_update(ClassificationTrainer, tree, tmp_path, images, labels, **kw)
    fast = first_epoch_update(MemoryTrainer, tree, tmp_path, images, labels, **kw)
    assert stock["optimizer"] == fast["optimizer"] == optimizer
    for g_stock, g_fast in zip(stock["grad"], fast["grad"], strict=True):  # the gradient stepped on, before clipping
        # fp32 summation order differs; a 4x scale (the old fast=True) is a relative difference of 0.75
        assert (g_fast - g_stock).norm() <= 1e-4 * g_stock.norm() + 1e-6
    # MuSGD orthogonalises in bfloat16 (8 bits of mantissa), so its updates agree to bf16 rounding; SGD's to fp32's.
    tolerance = 5e-2 if optimizer == "MuSGD" else 1e-3
    moved, worst = 0, 0.0
    for name, before in stock["before"].items():
        torch.testing.assert_close(fast["before"][name], before)  # the same initial weights
        stock_update = stock["after"][name] - before
        fast_update = fast["after"][name] - fast["before"][name]
        if stock_update.norm() > 1e-9:
            moved += 1
            worst = max(worst, float((fast_update - stock_update).norm() / stock_update.norm()))
        else:
            assert fast_update.norm() < 1e-9, name
    assert moved > len(stock["before"]) // 2  # a real step: most tensors changed
    assert worst < tolerance  # a 4x gradient (the old fast=True) is off by 300 % on every SGD-updated tensor


def _steps(trainer_cls, tree, tmp_path, **kw):
    """(epoch, lr per group, momentum per group) at every optimizer step of a real run."""
    steps = []

    def record(t):
        opt, step = t.optimizer, t.optimizer.step

        def recorded(*a, **k):
            steps.append((t.epoch, [round(g["lr"], 12) for g in opt.param_groups],
                          [round(g.get("momentum", 0.0), 12) for g in opt.param_groups]))  # fmt: skip
            return step(*a, **k)

        opt.step = recorded

    trainer = trainer_cls(overrides={"data": str(tree), **probe_args(tmp_path, name=trainer_cls.__name__, **kw)})
    trainer.add_callback("on_train_start", record)
    trainer.train()
    return steps, trainer


@pytest.mark.parametrize("optimizer", ["SGD", "MuSGD"])  # MuSGD: every 100-epoch run's, 8 parameter groups
def test_fast_takes_stock_steps_through_warm_up_and_epoch_boundaries(tree, tmp_path, optimizer):
    """60 images, batch 8, nbs 32: 8 micro-batches an epoch (the last of 4 images), accumulate 4 after a warm-up of
    one epoch that ramps it from 1; a step's micro-batches straddle epoch boundaries. Every step must be stock's."""
    from ultralytics.models.yolo.classify import ClassificationTrainer

    kw = {"epochs": 3, "batch": 8, "nbs": 32, "warmup_epochs": 1, "optimizer": optimizer, "lr0": 0.02}
    stock, _ = _steps(ClassificationTrainer, tree, tmp_path, **kw)
    fast, trainer = _steps(MemoryTrainer, tree, tmp_path, **kw)
    assert len(stock) > 3 * 2  # more steps than 3 epochs x 2 full groups: the warm-up's small steps are there
    assert fast == stock  # the same number of steps, in the same epochs, with the same lr and momentum
    assert trainer.stock_accumulate == 4 and trainer.args.batch == 8  # the user's batch, not a fused one
    logged = [pd.read_csv(tmp_path / c.__name__ / "results.csv").filter(like="lr/") for c in (ClassificationTrainer,
                                                                                           MemoryTrainer)]  # fmt: skip
    pd.testing.assert_frame_equal(logged[1], logged[0])  # results.csv's lr: where each epoch left it, as stock


def test_step_plan_replays_ultralytics_accumulation():
    plan = step_plan(micro_batches=5, start_epoch=0, epochs=2, warmup=0, accumulate=2)
    # last_step starts at -1: ni 1 steps (1 - -1 >= 2), then every 2nd; ni 4's gradient carries into epoch 1
    assert [(c.start, c.stop, c.steps, c.ni) for c in plan[0]] == [(0, 2, True, 1), (2, 4, True, 3), (4, 5, False, 4)]
    assert [(c.start, c.stop, c.steps, c.ni) for c in plan[1]] == [(0, 1, True, 5), (1, 3, True, 7), (3, 5, True, 9)]
    warm = step_plan(micro_batches=8, start_epoch=0, epochs=1, warmup=8, accumulate=4)[0]
    # accumulate ramps 1, 1, 2, 2, 2, 3, 3, 4 (numpy rounds half to even); steps after ni 0, 1, 3 and 6
    assert [(c.stop - c.start, c.steps) for c in warm] == [(1, True), (1, True), (2, True), (3, True), (1, False)]
    resumed = step_plan(micro_batches=5, start_epoch=1, epochs=2, warmup=0, accumulate=2)[1]
    assert resumed[0] == Chunk(0, 1, True, 5)  # a resume restarts last_step at -1, as stock does


def _blank_loader(n: int, batch: int, accumulate: int | None = None, **kw) -> MemoryLoader:
    """A loader of n blank images in micro-batches of `batch`, scheduled at `accumulate` (no warm-up) when given."""
    data = MemoryDataset(torch.zeros(n, 28, 28, dtype=torch.uint8), torch.arange(n) % 10, [])
    loader = MemoryLoader(data, batch, 32, Augment(32), seed=0, **kw)
    if accumulate:
        loader.schedule(warmup=0, accumulate=accumulate, epochs=1)
    return loader


def test_fused_chunks_weigh_each_image_by_its_micro_batch():
    """The epoch's short last micro-batch weighs its images 1/4, the others 1/8: the sum of micro-batch means."""
    batches = list(_blank_loader(20, 8, accumulate=3))
    assert len(batches) == 1 and batches[0]["chunk"] == Chunk(0, 3, True, 2)
    w = batches[0]["weight"]
    assert w.tolist() == [1 / 8] * 16 + [1 / 4] * 4 and torch.isclose(w.sum(), torch.tensor(3.0))
    assert batches[0]["micro"] == (8, 8, 4)  # the micro-batches MicroBatchNorm normalises one by one


def _small_net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                               torch.nn.Conv2d(4, 4, 3), torch.nn.BatchNorm2d(4, momentum=0.03), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 3))  # fmt: skip


@pytest.mark.parametrize("mode", ["grouped", "split"])  # a GPU's and a compiled model's way, a CPU's
@pytest.mark.parametrize("layout", [torch.contiguous_format, torch.channels_last])
def test_micro_batch_norm_computes_what_separate_micro_batches_do(layout, mode):
    """One fused forward with MicroBatchNorm = stock's forward per micro-batch: outputs, gradients, running stats."""
    import copy

    fused, stock = _small_net().to(memory_format=layout), _small_net().to(memory_format=layout)
    x = torch.rand(20, 3, 8, 8) * torch.linspace(0.2, 2.0, 20).view(-1, 1, 1, 1)  # micro-batches differ in level
    x = x.to(memory_format=layout)
    plain = copy.deepcopy(fused)
    MicroBatchNorm(fused, mode).use([8, 8, 4])
    out = fused(x)
    ref = torch.cat([stock(part) for part in x.split([8, 8, 4])])
    torch.testing.assert_close(out, ref)
    assert not torch.allclose(plain(x), ref, atol=1e-3)  # BatchNorm over all 20 at once is another computation
    out.square().sum().backward()
    ref.square().sum().backward()
    for a, b in zip(fused.parameters(), stock.parameters(), strict=True):
        # atol: a convolution's bias before BatchNorm has a gradient of exactly 0 in theory, rounding noise in both
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5)
    for (k, a), b in zip(fused.state_dict().items(), stock.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=k)  # running mean/var updated once per micro-batch, in order; counts too


def test_micro_batch_norm_is_plain_without_sizes_and_in_eval():
    net, plain = _small_net(), _small_net()
    norm = MicroBatchNorm(net)
    x = torch.rand(12, 3, 8, 8) * torch.linspace(0.2, 2.0, 12).view(-1, 1, 1, 1)
    for sizes in (None, [12]):  # no chunk (validation loaders, warm-up's single micro-batches): one normalisation
        norm.use(sizes)
        torch.testing.assert_close(net(x), plain(x))
    norm.use([6, 6])
    net.eval(), plain.eval()
    torch.testing.assert_close(net(x), plain(x))  # eval mode normalises by the running statistics
    assert all(type(m) is torch.nn.BatchNorm2d for m in net.modules() if "BatchNorm" in type(m).__name__)


def test_validation_moves_results_to_the_host_once(monkeypatch):
    """Stock copies every batch's results to the host (a GPU sync each); DeviceValidator once, with stock's metrics."""
    from types import SimpleNamespace

    from ultralytics.models.yolo.classify import ClassificationValidator

    from fmnist_yolo.training.fast import DeviceValidator

    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(8, 10, generator=g), torch.randint(0, 10, (8,), generator=g)) for _ in range(3)]
    results = {}
    for cls in (ClassificationValidator, DeviceValidator):
        v = cls()
        v.init_metrics(SimpleNamespace(names={i: str(i) for i in range(10)}))
        moved, real = [], torch.Tensor.cpu
        monkeypatch.setattr(torch.Tensor, "cpu", lambda t, *a, m=moved, r=real, **k: m.append(1) or r(t, *a, **k))
        for preds, labels in batches:
            v.update_metrics(preds, {"cls": labels})
        during = len(moved)
        results[cls] = v.get_stats()
        monkeypatch.undo()
        if cls is DeviceValidator:
            assert during == 0 and len(moved) == 2  # predictions and labels, once each
        else:
            assert during == 2 * len(batches)  # what DeviceValidator avoids
    assert results[DeviceValidator] == results[ClassificationValidator]
    top1 = (torch.cat([p for p, _ in batches]).argmax(1) == torch.cat([y for _, y in batches])).float().mean()
    assert results[DeviceValidator]["metrics/accuracy_top1"] == pytest.approx(float(top1))


def test_nan_recovery_rebuilds_a_plain_ema():
    """Review finding 7: after a NaN, Ultralytics rebuilds the EMA as a deep copy of the training model, which carries
    MicroBatchNorm's forwards; every later checkpoint then pickled fmnist-yolo objects."""
    import copy
    import pickle

    from ultralytics.nn.tasks import ClassificationModel
    from ultralytics.utils.torch_utils import EarlyStopping, ModelEMA

    from fmnist_yolo.training.fast import MemoryTrainer

    model = ClassificationModel("yolo11n-cls.yaml", nc=10, verbose=False)
    trainer = MemoryTrainer.__new__(MemoryTrainer)  # only what _load_checkpoint_state reads
    trainer.model, trainer.ema, trainer.stopper = model, ModelEMA(model), EarlyStopping()
    trainer._micro_bn = MicroBatchNorm(model)
    trainer.device = torch.device("cpu")
    trainer._step = DeviceStep(trainer, capture=False)  # the model's loss is the whole step
    trainer._step._seen.add("a chunk shape")
    copied = copy.deepcopy(model)  # what a copy of the training model would carry
    assert "loss" in vars(copied) and any("forward" in vars(m) for m in copied.modules())
    trainer._load_checkpoint_state({"ema": copy.deepcopy(trainer.ema.ema), "updates": 5, "best_fitness": 0.5})
    assert trainer.ema.updates == 5 and b"fmnist_yolo" not in pickle.dumps(trainer.ema.ema)
    assert "loss" not in vars(trainer.ema.ema)
    assert all("forward" in vars(m) for m in trainer._micro_bn._layers)  # the training model's stays installed
    assert vars(model)["loss"] == trainer._step.loss and not trainer._step._seen  # installed, its graphs forgotten


@pytest.mark.parametrize("n, dropped", [(20, True), (16, False), (6, False)])
def test_compiled_runs_drop_the_short_last_micro_batch_as_stock(n, dropped):
    """Review finding 6: under compile, stock's train loader drops the short last micro-batch (one shape for the
    compiled graph, another step plan); Ultralytics' build_dataloader keeps it when it is the only one or none is
    short."""
    data = MemoryDataset(torch.zeros(n, 28, 28, dtype=torch.uint8), torch.arange(n) % 10, [])
    loader = MemoryLoader(data, 8, 32, Augment(32), seed=0, drop_last=True)
    assert loader.drop_last is dropped
    sizes = [len(b["cls"]) for b in loader]
    assert sizes == ([8] * (n // 8) if dropped else [8] * (n // 8) + ([n % 8] if n % 8 else []))
    loader.schedule(warmup=0, accumulate=2, epochs=1)
    chunks = list(loader)
    assert sum(len(b["cls"]) for b in chunks) == sum(sizes)
    assert all(b["weight"].eq(1 / 8).all() for b in chunks) if dropped else True


def test_the_progress_bar_never_waits_for_the_device(monkeypatch):
    """Review finding 4: Ultralytics prints the running loss with %g every iteration, a host sync per step on a GPU.
    DeviceLoss answers the newest value already copied to the host; only the run's first print waits."""
    from fmnist_yolo.training.fast import DeviceLoss

    events = []

    class Event:  # a CUDA event whose completion the test decides
        def __init__(self):
            self.done = False
            events.append(self)

        def record(self):
            pass

        def query(self):
            return self.done

        def synchronize(self):
            self.done = True

    copies, copy = [], torch.Tensor.copy_

    def recording_copy(t, src, non_blocking=False):
        copies.append(non_blocking)
        return copy(t, src, non_blocking)

    monkeypatch.setattr(torch.Tensor, "copy_", recording_copy)
    monkeypatch.setattr(torch.cuda, "Event", Event)
    monkeypatch.setattr(DeviceLoss, "_on_accelerator", lambda self: True)
    monkeypatch.setattr(DeviceLoss, "exact", lambda self: pytest.fail("the progress bar waited for the device"))
    first = DeviceLoss(torch.tensor(2.0))
    assert float(first) == 2.0 and events[0].done  # nothing landed yet: the one wait
    assert first._box["pending"] == []  # which settled every copy made until then
    tloss = (first * 1 + DeviceLoss(torch.tensor(4.0))) / (1 + 1)  # Ultralytics' running mean, on the device
    assert torch.equal(tloss.value, torch.tensor(3.0))
    assert ("%11.4g" % tloss).strip() == "2" and not events[-1].done  # noqa: UP031 (as Ultralytics prints it)
    events[-1].done = True
    assert f"{tloss * 1:.4g}" == "3"  # now the mean's copy has landed
    assert copies and all(copies)  # each copy to the host is started without waiting for it
    zero = torch.zeros_like(tloss)  # Ultralytics' validator shapes its loss sums from the training loss items
    assert type(zero) is torch.Tensor and zero.shape == () and float(zero) == 0


def test_results_read_the_loss_exactly(monkeypatch):
    from fmnist_yolo.training.fast import DeviceLoss, MemoryTrainer

    trainer = MemoryTrainer.__new__(MemoryTrainer)
    trainer.loss_names = ("loss",)
    assert trainer.label_loss_items({"loss": DeviceLoss(torch.tensor(0.123456789))}) == {"train/loss": 0.12346}
    assert trainer.label_loss_items(None, prefix="val") == ["val/loss"]


def test_micro_batch_norm_compiles_once_per_chunk_shape():
    """Review finding 5: micro-batch sizes as a Python list inside the model made Dynamo compile once per distinct
    list (6 compositions in a 100-epoch plan, near its limit of 8, past which it silently runs eagerly). As a tensor,
    one graph serves every composition of a chunk shape."""
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    net = _small_net()
    norm, counter = MicroBatchNorm(net), CompileCounter()
    compiled = torch.compile(net, backend=counter)
    x = torch.rand(20, 3, 8, 8)
    for sizes in ([8, 8, 4], [4, 8, 8], [8, 4, 8]):
        norm.use(sizes)
        compiled(x)
    assert counter.frame_count == 1
    torch._dynamo.reset()


def test_weights_that_see_1x1_maps_train_in_nchw():
    """Review finding 8: channels_last weights over 1x1 maps get NCHW gradients from cuDNN, and Inductor's stride
    assertion fails (the GPU proof replays it); at 32 px model.8 on see 1x1 maps, earlier layers larger ones."""
    from ultralytics.nn.tasks import ClassificationModel

    from fmnist_yolo.training.fast import nchw_where_degenerate

    model = ClassificationModel("yolo11n-cls.yaml", nc=10, verbose=False).to(memory_format=torch.channels_last)
    model.train()
    params = {n: p for n, p in model.named_parameters()}
    changed = nchw_where_degenerate(model, 32)
    assert changed and all(n.startswith(("model.8.", "model.9.", "model.10.")) for n in changed)
    assert "model.8.m.0.m.0.cv1.conv" in changed and model.training  # left in the mode it was given in
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.Conv2d) and min(m.weight.shape[1], m.weight.shape[-1]) > 1:  # else both layouts
            assert m.weight.is_contiguous() == (name in changed), name
    assert all(p is params[n] for n, p in model.named_parameters())  # the optimizer's parameters, in place
    assert nchw_where_degenerate(model, 64) == []  # at 64 px the smallest map is 2x2


@pytest.mark.parametrize("optimizer", ["MuSGD", "AdamW", "SGD"])  # a 100-epoch run's, a short run's, a recipe's
def test_a_fast_step_never_reads_the_device(tree, tmp_path, monkeypatch, optimizer):
    """Nothing inside a step waits on the device: augmenting the chunk, forward, ChunkLoss, backward, clip, the
    optimizer and the EMA. Every way a tensor's value reaches the host raises while the step runs."""
    import ultralytics.engine.trainer as engine

    from fmnist_yolo import compat
    from fmnist_yolo.training.fast import MemoryTrainer

    args = probe_args(tmp_path, name="nosync", epochs=100, nbs=64, batch=16, optimizer=optimizer)
    with compat.training():
        trainer = MemoryTrainer(overrides={"data": str(tree), **args})
        trainer._setup_train()
        assert stock_class(trainer.optimizer).__name__ == optimizer

        def step():  # an epoch's first chunk: its order and augmentation draws are made here too
            batch = trainer.preprocess_batch(next(iter(trainer.train_loader)))
            with engine.autocast(trainer.amp, device=trainer.device.type):
                loss, items = trainer.model(batch)
            trainer.loss_items = items
            loss.sum().backward()
            trainer.optimizer_step()

        step()  # the optimizer's state is made on its first step
        before = [p.detach().clone() for p in trainer.model.parameters()]

        # torch keeps a non-fused Adam's step count on the host by design (its CUDA path too); reading it waits for
        # nothing, so those tensors may be read
        counters = {id(state["step"]) for state in trainer.optimizer.state.values() if "step" in state}

        def forbid(name):
            real = getattr(torch.Tensor, name)

            def read(t, *a, **k):
                if id(t) not in counters:
                    raise AssertionError(f"Tensor.{name}: a host read of a tensor inside a step")
                return real(t, *a, **k)

            return read

        for name in ("item", "cpu", "tolist", "__bool__", "__float__", "__int__", "numpy"):
            monkeypatch.setattr(torch.Tensor, name, forbid(name))
        step()
        monkeypatch.undo()
    assert any(not torch.equal(a, p) for a, p in zip(before, trainer.model.parameters()))  # it stepped


def test_the_progress_bar_counts_each_epochs_real_iterations(tree, tmp_path, monkeypatch):
    """Warm-up steps fuse fewer micro-batches, so warm-up epochs have more chunks than the length Ultralytics reads
    once before the first epoch: the bar ran past 100 % (266 % in the default recipe's first epoch)."""
    import ultralytics.engine.trainer as engine

    import fmnist_yolo

    bars = []

    class Recording(engine.TQDM):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            bars.append(self)

    monkeypatch.setattr(engine, "TQDM", Recording)
    fmnist_yolo.train(**{**FAST, "epochs": 2, "batch": 8, "nbs": 32, "warmup_epochs": 1}, fast=True, data=str(tree),
                      project=str(tmp_path), name="bar", evaluate_test=False, val=False)  # fmt: skip
    assert len(bars) == 2 and all(b.n == b.total for b in bars), [(b.n, b.total) for b in bars]
    assert bars[0].total > bars[1].total  # warm-up's epoch fuses fewer micro-batches a step


def test_an_epochs_training_loss_is_stocks_mean_over_micro_batches(tree, tmp_path, monkeypatch):
    """Stock's loop averages its iterations, micro-batches; this loop's are chunks of 1-4 of them during warm-up. The
    epoch's recorded loss must be the mean over micro-batches, not over chunks (which overweighs the small early
    chunks, where the loss is highest)."""
    import fmnist_yolo
    from fmnist_yolo.training.fast import loop

    chunks = []  # per training chunk: (its summed micro-batch means, its micro-batches, its image mean)

    class Recording(ChunkLoss):
        def __call__(self, preds, batch):
            loss, items = super().__call__(preds, batch)
            chunks.append((float(loss.detach()), round(float(batch["weight"].sum())), float(items["loss"].value)))
            return loss, items

    monkeypatch.setattr(loop, "ChunkLoss", Recording)
    ends, seen = [], []  # chunks at each epoch's end; the loss a user's (or a logger's) callback sees there

    def at_end(t):
        ends.append(len(chunks))
        seen.append(float(t.tloss["loss"].exact()))

    run = fmnist_yolo.train(**{**FAST, "epochs": 2, "batch": 8, "nbs": 32, "warmup_epochs": 1}, fast=True,
                            data=str(tree), project=str(tmp_path), name="loss", evaluate_test=False, val=False,
                            callbacks={"on_train_epoch_end": at_end})  # fmt: skip
    recorded = fmnist_yolo.load_history(run.dir)["train_loss"].tolist()
    for epoch, (start, stop) in enumerate(zip([0, *ends[:-1]], ends)):
        mine = chunks[start:stop]
        micro = sum(c[0] for c in mine) / sum(c[1] for c in mine)
        assert recorded[epoch] == pytest.approx(micro, rel=1e-4), epoch  # results.csv
        assert seen[epoch] == pytest.approx(micro, rel=1e-6), epoch  # the epoch-end callbacks (MLflow, TensorBoard)
    warm = chunks[: ends[0]]
    assert len({c[1] for c in warm}) > 1  # warm-up: chunks of different sizes, so the two means part
    assert abs(recorded[0] - sum(c[2] for c in warm) / len(warm)) > 1e-3  # not the mean over chunks


def test_bf16_on_a_cpu_where_it_is_slower_trains_fp32_and_says_why(tree, tmp_path, monkeypatch):
    """An Intel Xeon with AMX ran this model at 0.65-0.87x fp32's speed in bf16: amp=bf16 is kept only where the
    run's first seconds measure it faster, and the record keeps the figures."""
    import fmnist_yolo
    from fmnist_yolo.training.fast import loop

    monkeypatch.setattr(loop.compat, "cpu_has_bf16", lambda: True)
    monkeypatch.setattr(loop, "cpu_precision_probe", lambda model, size, images: {"fp32": 1.0, "bf16": 1.4})
    dtypes = []

    def watch(trainer):
        trainer.model.model[-1].linear.register_forward_hook(lambda m, i, out: dtypes.append(out.dtype))

    run = fmnist_yolo.train(**FAST, data=str(tree), fast=True, amp="bf16", device="cpu", project=str(tmp_path),
                            callbacks={"on_train_start": watch}, evaluate_test=False)  # fmt: skip
    assert dtypes and set(dtypes) == {torch.float32} and run.provenance["amp"] is False
    assert run.provenance["precision"] == {"asked": "bf16", "used": "fp32", "images": 64,
                                           "ms_per_pass": {"fp32": 1.0, "bf16": 1.4}}  # fmt: skip


def test_the_precision_probe_leaves_the_model_as_it_was():
    from ultralytics.nn.tasks import ClassificationModel

    from fmnist_yolo.training.fast import cpu_precision_probe

    model = ClassificationModel("yolo11n-cls.yaml", nc=10, verbose=False).to(memory_format=torch.channels_last)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ms = cpu_precision_probe(model, 32, images=4, probe=(1, 2))
    assert set(ms) == {"fp32", "bf16"} and all(v > 0 for v in ms.values())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # running statistics too
    assert all(p.grad is None for p in model.parameters())


def test_the_loaders_length_is_each_epochs_own():
    """len() is the number of batches the next epoch yields: with a warm-up, the first epochs fuse fewer micro-batches
    a step and have more chunks (what the progress bar counts to)."""
    n = 100
    data = MemoryDataset(torch.zeros(n, 28, 28, dtype=torch.uint8), torch.arange(n) % 10, [])
    loader = MemoryLoader(data, 8, 32, Augment(32), seed=0)
    loader.schedule(warmup=20, accumulate=4, epochs=3)
    lengths, yielded = [], []
    for _ in range(3):
        lengths.append(len(loader))
        yielded.append(len(list(loader)))
    assert lengths == yielded and lengths[0] > lengths[2]  # 13 micro-batches an epoch; warm-up's steps are smaller
    plain = MemoryLoader(data, 8, 32, None)
    assert len(plain) == len(list(plain)) == 13


def test_every_draw_in_its_range_and_seeded():
    """Each random choice of the augmentation in torchvision's range (crop area and aspect, erasing area and aspect,
    positions, flips, jitter, RandAugment's operations and signs), and the same generator state draws the same."""
    aug = Augment(32, scale=0.3, hsv_v=0.2, randaugment=True)
    r = aug.draw(20000, torch.Generator().manual_seed(0), torch.device("cpu"))
    ranges = {"area": (0.7, 1.0), "log_ratio": (math.log(3 / 4), math.log(4 / 3)), "cx": (0, 1), "cy": (0, 1),
              "fliplr": (0, 1), "flipud": (0, 1), "contrast": (0.8, 1.2), "brightness": (0.8, 1.2),
              "e_area": (0.02, 0.33), "e_log_ratio": (math.log(0.3), math.log(3.3)), "e_y": (0, 1), "e_x": (0, 1),
              "e_on": (0, 1)}  # fmt: skip
    for key, (lo, hi) in ranges.items():
        v = r[key]
        assert v.min() >= lo and v.max() <= hi, key
        assert v.min() < lo + 0.01 * (hi - lo) and v.max() > hi - 0.01 * (hi - lo), key  # spans the whole range
        assert abs(float(v.mean()) - (lo + hi) / 2) < 0.01 * (hi - lo), key  # uniform
    assert r["area"].shape == (20000, 10) and r["e_area"].shape == (20000, 10)  # torchvision's 10 tries each
    assert set(r["ra_op"].unique().tolist()) == set(range(14)) and r["ra_op"].shape == (20000, 2)
    assert set(r["ra_sign"].unique().tolist()) == {-1.0, 1.0} and abs(float(r["ra_sign"].mean())) < 0.02
    again = aug.draw(20000, torch.Generator().manual_seed(0), torch.device("cpu"))
    assert all(torch.equal(r[k], again[k]) for k in r)
    assert "ra_op" not in Augment(32).draw(4, torch.Generator().manual_seed(0), torch.device("cpu"))


def test_the_validation_resize_exactly():
    """Already at size: the pixels / 255, untouched; resized: 8-bit values, black stays black."""
    x = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    assert torch.equal(resize_like_validation(x, 32), x[:, None].float() / 255)
    black = resize_like_validation(torch.zeros(2, 28, 28, dtype=torch.uint8), 32)
    assert black.shape == (2, 1, 32, 32) and black.eq(0).all()
    white = resize_like_validation(torch.full((2, 28, 28), 255, dtype=torch.uint8), 32)
    assert white.eq(1).all()
    for h, w in ((32, 28), (28, 32)):  # one side at size, either one
        one = resize_like_validation(torch.randint(0, 256, (2, h, w), dtype=torch.uint8), 32)
        assert one.shape == (2, 1, 32, 32) and torch.equal(one * 255, (one * 255).round())
    small = resize_like_validation(torch.randint(0, 256, (2, 64, 64), dtype=torch.uint8), 32)  # down: antialiased
    assert torch.equal(small * 255, (small * 255).round())
    loader = MemoryLoader(MemoryDataset(x, torch.arange(3), []), 2, 32, None)
    batches = list(loader)
    assert [b["img"].shape for b in batches] == [(2, 3, 32, 32), (1, 3, 32, 32)]
    assert torch.equal(torch.cat([b["cls"] for b in batches]), torch.arange(3))


def test_device_loss_arithmetic_is_the_tensors():
    from fmnist_yolo.training.fast import DeviceLoss

    a, b = DeviceLoss(torch.tensor(3.0)), DeviceLoss(torch.tensor(5.0))
    for got, want in [(a + b, 8.0), (a + 1, 4.0), (1 + a, 4.0), (a * b, 15.0), (a * 2, 6.0), (2 * a, 6.0),
                      (a / b, 0.6), (a / 2, 1.5), ((a * 2 + b) / 2, 5.5)]:  # fmt: skip
        assert isinstance(got, DeviceLoss) and float(got) == pytest.approx(want)
    assert float(a) == 3.0 and f"{b:.2f}" == "5.00" and a.exact() == 3.0
    assert torch.equal(torch.add(a, b), torch.tensor(8.0)) and torch.equal(
        torch.add(a, other=b, alpha=2), torch.tensor(13.0)
    )
    zero = torch.zeros_like(a, dtype=torch.int64)  # keyword arguments reach torch too
    assert zero.dtype == torch.int64 and torch.equal(zero, torch.tensor(0))


def test_augment_takes_stocks_arguments():
    from types import SimpleNamespace

    args = SimpleNamespace(imgsz=48, scale=0.3, fliplr=0.25, flipud=0.125, hsv_v=0.4, erasing=0.2,
                           auto_augment="randaugment")  # fmt: skip
    assert Augment.from_args(args) == Augment(48, 0.3, 0.25, 0.125, 0.0, 0.2, True)  # no jitter under a policy
    args.auto_augment = None
    assert Augment.from_args(args) == Augment(48, 0.3, 0.25, 0.125, 0.4, 0.2, False)


def test_randaugment_is_applied_where_stock_applies_it():
    """After the crop and flips, before erasing: the same draws with and without it differ exactly by it."""
    from fmnist_yolo.training.randaugment import rand_augment

    x = torch.randint(0, 256, (16, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    on = Augment(32, erasing=0.0, randaugment=True)
    r = on.draw(16, torch.Generator().manual_seed(0), torch.device("cpu"))
    without = Augment(32, erasing=0.0).apply(x, r)
    torch.testing.assert_close(on.apply(x, r), rand_augment(without, r["ra_op"], r["ra_sign"]))
    assert not torch.allclose(on.apply(x, r), without)


def test_erasing_zeroes_exactly_its_box_and_jitter_stays_in_range():
    x = torch.full((1, 32, 32), 200, dtype=torch.uint8)
    aug = Augment(32, scale=0.0, fliplr=0.0, erasing=1.0)
    r = aug.draw(1, torch.Generator().manual_seed(0), torch.device("cpu"))
    r.update(e_area=torch.full((1, 10), 0.25), e_log_ratio=torch.zeros(1, 10), e_y=torch.tensor([0.5]),
             e_x=torch.tensor([0.0]), e_on=torch.tensor([0.0]))  # fmt: skip
    out = aug.apply(x, r)[0, 0]
    y0, x0, h, w = (int(v) for v in Augment.erase_boxes(r, 32))
    assert (h, w) == (16, 16) and x0 == 0 and y0 == 8  # a 16x16 box (a quarter), floor(0.5 * 17) down
    box = torch.zeros(32, 32, dtype=torch.bool)
    box[y0 : y0 + h, x0 : x0 + w] = True
    assert out[box].eq(0).all() and out[~box].gt(0.7).all()  # exactly the box, nothing beside it
    jitter = Augment(32, scale=0.0, fliplr=0.0, erasing=0.0, hsv_v=0.5)
    r = jitter.draw(2, torch.Generator().manual_seed(0), torch.device("cpu"))
    r.update(contrast=torch.tensor([1.5, 1.5]), brightness=torch.tensor([1.5, 0.5]))
    ramp = torch.linspace(0, 255, 32).round().to(torch.uint8).expand(2, 32, 32)
    y = jitter.apply(ramp, r)
    assert y.min() == 0 and y.max() == 1  # clamped to [0, 1] at both ends, as ColorJitter's image
    assert y[0].eq(1).any() and y[0].eq(0).any()


@pytest.mark.parametrize("optimizer, nesterov", [("SGD", True), ("SGD", False), ("MuSGD", True)])
def test_device_optimizers_step_as_stocks(optimizer, nesterov):
    """The device-tensor twins (lr and momentum read from device tensors) make stock's updates, step after step, with
    the lr and momentum changing between steps as warm-up changes them."""
    from ultralytics.optim.muon import MuSGD

    from fmnist_yolo import compat
    from fmnist_yolo.training.fast import device_optimizer

    gen = torch.Generator().manual_seed(0)
    shapes = [(16, 8, 3, 3), (16, 8, 3, 3), (32, 16), (7,)]
    init = [torch.randn(s, generator=gen) for s in shapes]

    def make(params):
        if optimizer == "SGD":
            groups = [{"params": params[:3], "weight_decay": 5e-4}, {"params": params[3:], "weight_decay": 0.0}]
            return torch.optim.SGD(groups, lr=0.01, momentum=0.9, nesterov=nesterov)
        groups = [{"params": params[:3], "use_muon": True, "weight_decay": 5e-4},
                  {"params": params[3:], "use_muon": False, "weight_decay": 0.0}]  # fmt: skip
        return MuSGD(groups, lr=0.01, momentum=0.9, nesterov=True, muon=0.5, sgd=0.5)

    a, b = [p.clone() for p in init], [p.clone() for p in init]
    stock, device = make(a), device_optimizer(make(b))
    assert type(device) is not type(stock) and isinstance(device, type(stock))
    for lr, momentum in [(0.01, 0.8), (0.03, 0.85), (0.005, 0.95), (0.02, 0.0)]:
        grads = [torch.randn(s, generator=gen) for s in shapes]
        for opt, params in ((stock, a), (device, b)):
            for p, g in zip(params, grads):
                p.grad = g.clone()
            for group in opt.param_groups:
                group["lr"], group["momentum"] = lr, momentum
        with compat.faster_muon():
            stock.step()
        device.load_hyper()
        device.step()
        for x, y, p in zip(a, b, init):  # Muon orthogonalises in bf16: its part agrees to bf16 rounding
            torch.testing.assert_close(y - p, x - p, rtol=2e-2 if optimizer == "MuSGD" else 1e-5, atol=1e-5)
    assert [sorted(device.state[p]) for p in b] == [sorted(stock.state[p]) for p in a]  # the same buffers

    meta = [torch.nn.Parameter(torch.empty(s, device="meta")) for s in shapes]  # a device that is not the host's
    on_meta = device_optimizer(make(meta))
    on_meta.load_hyper()
    assert {t.device.type for pair in on_meta._hyper for t in pair} == {"meta"}


@pytest.mark.parametrize("device", ["cpu", "cuda"])
@pytest.mark.parametrize("optimizer", ["SGD", "MuSGD", "AdamW"])
def test_the_device_step_trains_as_stocks_step(tree, tmp_path, optimizer, device):
    """Steps of the device step (step.py: on CUDA eager, then captured, then replayed) against today's fast=True
    (stock's optimizer_step), from the same weights and draws: the weights, BatchNorm statistics and EMA agree."""
    import ultralytics.engine.trainer as engine

    from fmnist_yolo import compat

    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    states = []
    for device_step in (False, True):
        args = probe_args(tmp_path, name=f"step{device_step}", epochs=100, nbs=64, batch=16, optimizer=optimizer,
                           device=0 if device == "cuda" else "cpu")  # fmt: skip
        with compat.training():
            t = MemoryTrainer(overrides={"data": str(tree), **args}, device_step=device_step)
            t._setup_train()
            assert isinstance(t._step, DeviceStep) is device_step
            for _ in range(4):
                batch = t.preprocess_batch(next(iter(t.train_loader)))  # one composition: captured on CUDA
                with engine.autocast(torch.bfloat16 if t.args.amp == "bf16" else t.amp, device=t.device.type):
                    loss, items = t.model(batch)  # as Ultralytics' loop calls it
                t.scaler.scale(loss.sum()).backward()
                t.optimizer_step()
            if device == "cuda" and device_step and optimizer != "AdamW":  # the GPU proof's gate: it was captured
                assert t._step._graphs and not t._step._broken, t._step._broken
        states.append((t.model.state_dict(), t.ema.ema.state_dict(), t.ema.updates, float(items["loss"])))
    (model0, ema0, n0, loss0), (model1, ema1, n1, loss1) = states
    assert n0 == n1 == 4 and loss1 == pytest.approx(loss0, rel=1e-3)
    tol = 1e-2 if optimizer == "MuSGD" else 1e-4  # MuSGD: bf16 rounding of the orthogonalised update, compounded
    for before, after in ((model0, model1), (ema0, ema1)):
        for k, v in before.items():
            if v.dtype.is_floating_point:
                torch.testing.assert_close(after[k], v, rtol=tol, atol=tol, msg=lambda m, k=k: f"{k}: {m}")
            else:
                assert torch.equal(after[k], v), k


def test_the_device_ema_blends_as_ultralytics():
    """The step's EMA update (decay from a device tensor) is ModelEMA.update's, at a decay where the blend shows."""
    import copy
    from types import SimpleNamespace

    from ultralytics.utils.torch_utils import ModelEMA

    model = _small_net()
    trainer = SimpleNamespace(model=model, device=torch.device("cpu"), optimizer=None, ema=ModelEMA(model, updates=700))
    step = DeviceStep(trainer, capture=False)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p))
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_var.mul_(3)
    stock = copy.deepcopy(trainer.ema)
    stock.update(model)
    step.prepare(steps=True)
    step._ema_update()
    assert trainer.ema.updates == stock.updates == 701
    for k, v in stock.ema.state_dict().items():
        torch.testing.assert_close(trainer.ema.ema.state_dict()[k], v, rtol=1e-6, atol=1e-7)


# --- each unit's behaviour at its edges (issue 29: what the mutation run found no test holding) ---------------------


@contextlib.contextmanager
def _fake_cuda():
    """A CUDA device without a GPU: under FakeTensorMode tensors carry their device, shape and dtype but no values,
    and an operation mixing devices raises as on a GPU, so where the fast path makes each tensor is checked on any
    machine (a CPU run cannot tell `device=x.device` from no device at all)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from fmnist_yolo.training import randaugment

    try:
        with FakeTensorMode(allow_non_fake_inputs=True):
            yield torch.device("cuda")
    finally:  # tables cached for "cuda" in here are fake: a real GPU later in the session must not get them
        randaugment._samples.cache_clear()


def _on_cuda(*tensors) -> bool:
    return all(t.device.type == "cuda" for t in tensors)


# augment.py


@pytest.mark.parametrize("height, width", [(40, 20), (20, 40)])  # taller and wider than any box of ratio 3/4-4/3
def test_crops_of_non_square_images_are_torchvisions(height, width):
    """No box of the whole area fits: torchvision's fallback, the centre crop at the nearest ratio in range; and the
    image is its box resized, whichever side is the longer."""
    from torchvision.transforms import RandomResizedCrop
    from torchvision.transforms import functional as TF

    whole = {"area": torch.ones(1, 10), "log_ratio": torch.zeros(1, 10), "cx": torch.rand(1), "cy": torch.rand(1)}
    ours = [int(v) for v in Augment.crop_boxes(whole, height, width)]
    assert ours == list(RandomResizedCrop.get_params(torch.zeros(1, height, width), (1.0, 1.0), (3 / 4, 4 / 3)))
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (16, height, width), dtype=np.uint8))
    still = Augment(32, scale=0.9, fliplr=0.0, erasing=0.0)
    r = still.draw(16, torch.Generator().manual_seed(0), torch.device("cpu"))
    r["area"][:4] = 1.0  # four fall back, the others fit a box
    boxes = torch.stack(Augment.crop_boxes(r, height, width), 1).long().tolist()
    ref = torch.stack([TF.resized_crop(im[None].float() / 255, *box, [32, 32]) for im, box in zip(x, boxes)])
    torch.testing.assert_close(still.apply(x, r), ref, atol=1e-5, rtol=0)


def test_a_crop_box_needs_sides_of_at_least_one_pixel():
    """torchvision's sampler takes the first box with 0 < w <= width and 0 < h <= height (scale=1.0 draws areas down
    to nothing): a box whose side rounds to 0 is skipped, a 1x1 box is taken."""
    px = torch.tensor([0.3, 1.0] + [100.0] * 8) / 784  # areas in pixels of a 28x28 image: try 1, try 2 (1x1), ...
    log_ratio = torch.tensor([[math.log(4 / 3)] + [0.0] * 9, [math.log(3 / 4)] + [0.0] * 9])
    r = {"area": px.expand(2, 10), "log_ratio": log_ratio, "cx": torch.zeros(2), "cy": torch.zeros(2)}
    # try 1: w 1, h 0 (aspect 4/3) and w 0, h 1 (3/4): skipped; try 2: 1x1
    top, left, h, w = Augment.crop_boxes(r, 28, 28)
    assert h.tolist() == w.tolist() == [1.0, 1.0]


def test_a_draw_equal_to_the_probability_does_not_fire():
    """torchvision flips and erases where its draw < p (RandomHorizontalFlip, RandomVerticalFlip, RandomErasing):
    a draw of exactly p leaves the image alone, one below p acts."""
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (2, 28, 28), dtype=np.uint8))
    aug = Augment(28, scale=0.0, fliplr=0.5, flipud=0.25, erasing=0.375)
    r = aug.draw(2, torch.Generator().manual_seed(0), torch.device("cpu"))
    r.update(fliplr=torch.tensor([0.5, 0.0]), flipud=torch.tensor([0.25, 1.0]), e_on=torch.tensor([0.375, 0.9]))
    plain = Augment(28, scale=0.0, fliplr=0.0, flipud=0.0, erasing=0.0).apply(x, r)
    out = aug.apply(x, r)
    torch.testing.assert_close(out[0], plain[0], atol=1e-6, rtol=0)  # each draw = its p: nothing
    torch.testing.assert_close(out[1], plain[1].flip(-1), atol=1e-6, rtol=0)  # fliplr's draw 0 < 0.5: mirrored


@pytest.mark.parametrize("randaugment", [False, True])
def test_an_images_augmentation_ignores_the_rest_of_its_batch(randaugment):
    """An image's result depends on its own draws only (the contrast pivots on the image's own mean, as torchvision's
    adjust_contrast does): a batch augments as its images one by one, and warns nothing (once a step would flood the
    log). The generator given decides every draw."""
    import warnings

    rng = np.random.default_rng(0)
    levels = np.linspace(0.2, 1.0, 8)[:, None, None]  # dark to bright images
    x = torch.from_numpy((rng.integers(0, 256, (8, 28, 28)) * levels).astype(np.uint8))
    aug = Augment(32, hsv_v=0.0 if randaugment else 0.4, erasing=0.5, randaugment=randaugment)
    r = aug.draw(8, torch.Generator().manual_seed(0), torch.device("cpu"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        whole = aug.apply(x, r)
    alone = torch.cat([aug.apply(x[i : i + 1], {k: v[i : i + 1] for k, v in r.items()}) for i in range(len(x))])
    torch.testing.assert_close(whole, alone, atol=1e-6, rtol=0)
    assert torch.equal(aug(x, torch.Generator().manual_seed(5)), aug(x, torch.Generator().manual_seed(5)))


def test_an_erasing_box_is_smaller_than_the_image_on_both_sides():
    """torchvision's RandomErasing takes the first box with h < size and w < size (one as wide as the image is
    skipped), and erases nothing (an empty box) when none of its 10 is."""
    area = torch.tensor([[320 / 1024, 64 / 1024] + [64 / 1024] * 8, [1.0] * 10])  # 10x32 (aspect 10/32), then 8x8
    log_ratio = torch.tensor([[math.log(10 / 32)] + [0.0] * 9, [0.0] * 10])  # second image: 32x32 ten times
    r = {"e_area": area, "e_log_ratio": log_ratio, "e_y": torch.zeros(2), "e_x": torch.zeros(2)}
    top, left, h, w = Augment.erase_boxes(r, 32)
    assert (h.tolist(), w.tolist()) == ([8.0, 0.0], [8.0, 0.0])


def test_augmentation_draws_and_applies_on_the_images_device():
    aug = Augment(32, hsv_v=0.2, randaugment=True)
    with _fake_cuda() as cuda:
        r = aug.draw(4, torch.Generator(), cuda)
        assert _on_cuda(*r.values())
        x = torch.empty(4, 28, 28, dtype=torch.uint8, device=cuda)
        assert _on_cuda(aug.apply(x, r), aug(x, torch.Generator()))


# plan.py


def test_step_plan_at_the_warm_ups_last_micro_batch_and_across_epochs():
    warm = step_plan(micro_batches=8, start_epoch=0, epochs=1, warmup=4, accumulate=4)[0]
    # accumulate 1, 2, 2, 3, then 4 at ni 4 = the warm-up's length (stock: while ni <= nw); steps after ni 0, 2, 6
    assert [(c.start, c.stop, c.steps, c.ni) for c in warm] == [(0, 1, True, 0), (1, 3, True, 2), (3, 7, True, 6),
                                                                (7, 8, False, 7)]  # fmt: skip
    plan = step_plan(micro_batches=5, start_epoch=0, epochs=2, warmup=0, accumulate=3)
    # each epoch ends on a chunk that carries its gradient over; its ni is the epoch's last global micro-batch
    assert [(c.start, c.stop, c.steps, c.ni) for c in plan[1]] == [(0, 1, True, 5), (1, 4, True, 8), (4, 5, False, 9)]


# norm.py


def _per_micro_batch(bn: torch.nn.Module, x: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """Stock's computation: BatchNorm's own forward on each micro-batch, in order."""
    return torch.cat([type(bn).forward(bn, part) for part in x.split(sizes)])


@pytest.mark.parametrize("case", ["square", "wide maps", "1x1 maps", "no affine", "no running statistics",
                                  "statistics switched off", "momentum 0.3"])  # fmt: skip
def test_grouped_batch_norm_is_batch_norm_per_micro_batch(case):
    """Outputs and running statistics, over two chunks (the statistics compound from where the first left them):
    maps that are not square, 1x1 maps (yolo11n-cls's last layers at 32 px; a micro-batch of 2 images has 2 values
    a channel, whose unbiased variance is twice the biased), no affine parameters, no running statistics, statistics
    switched off after construction (torch then leaves its buffers alone), another momentum."""
    import copy

    from fmnist_yolo.training.fast import grouped_batch_norm, micro_groups

    shape, sizes = {"wide maps": ((20, 4, 3, 7), [8, 8, 4]), "1x1 maps": ((5, 4, 1, 1), [2, 3])}.get(
        case, ((20, 4, 5, 5), [8, 8, 4]))  # fmt: skip
    bn = torch.nn.BatchNorm2d(4, affine=case != "no affine", track_running_stats=case != "no running statistics",
                              momentum=0.3 if case == "momentum 0.3" else 0.1)  # fmt: skip
    if bn.affine:
        with torch.no_grad():
            bn.weight.uniform_(0.5, 2.0), bn.bias.uniform_(-1.0, 1.0)
    if case == "statistics switched off":
        bn.track_running_stats = False
    ref = copy.deepcopy(bn)
    g = torch.Generator().manual_seed(0)
    for step in range(2):
        x = torch.rand(shape, generator=g) * torch.linspace(0.2, 3.0, shape[0]).view(-1, 1, 1, 1) + step
        torch.testing.assert_close(
            grouped_batch_norm(bn, x, micro_groups(sizes, "cpu")), _per_micro_batch(ref, x, sizes)
        )
        for (k, a), b in zip(bn.state_dict().items(), ref.state_dict().values(), strict=True):
            torch.testing.assert_close(a, b, msg=k)


def test_grouped_batch_norm_computes_in_fp32_and_answers_in_the_inputs_dtype():
    import copy

    from fmnist_yolo.training.fast import grouped_batch_norm, micro_groups

    bn = torch.nn.BatchNorm2d(4)
    ref = copy.deepcopy(bn)
    x = (torch.rand(12, 4, 5, 5, generator=torch.Generator().manual_seed(0)) * 3).to(torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # as a bf16 run calls it
        y = grouped_batch_norm(bn, x, micro_groups([6, 6], "cpu"))
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y, _per_micro_batch(ref, x.float(), [6, 6]).to(torch.bfloat16))
    torch.testing.assert_close(bn.running_var, ref.running_var)  # the statistics in fp32, as stock's


def test_grouped_batch_norm_stays_on_the_inputs_device():
    from fmnist_yolo.training.fast import grouped_batch_norm

    with _fake_cuda() as cuda:
        bn = torch.nn.BatchNorm2d(4, device=cuda)
        x = torch.empty(5, 4, 3, 3, device=cuda)
        assert _on_cuda(grouped_batch_norm(bn, x, torch.empty(5, 2, device=cuda)), bn.running_mean, bn.running_var)


def test_micro_batch_norm_takes_the_devices_way(monkeypatch):
    """ "grouped": one grouped normalisation a layer; "split": a BatchNorm call per micro-batch; "auto" (the default):
    split on a CPU, grouped on a GPU and while Dynamo compiles (one graph for every composition)."""
    from fmnist_yolo.training.fast import norm

    calls, grouped = [], norm.grouped_batch_norm
    monkeypatch.setattr(norm, "grouped_batch_norm", lambda *a: calls.append(1) or grouped(*a))
    x = torch.rand(12, 3, 8, 8)

    def grouped_layers(*mode) -> int:
        net = _small_net()  # two BatchNorm layers
        MicroBatchNorm(net, *mode).use([6, 6])
        calls.clear()
        net(x)
        return len(calls)

    assert (grouped_layers("grouped"), grouped_layers("split"), grouped_layers()) == (2, 0, 0)
    monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
    assert (grouped_layers("grouped"), grouped_layers("split"), grouped_layers()) == (2, 0, 2)


def test_micro_batch_norm_from_its_first_chunk():
    """Plain BatchNorm until told the micro-batches; two micro-batches are two normalisations; a composition's
    assignment is made once (a step copies nothing to the device); one BatchNorm layer is enough; a layer without
    momentum (a cumulative average) is refused in one line."""
    from fmnist_yolo.errors import ConfigError

    net, stock = _small_net(), _small_net()
    norm = MicroBatchNorm(net)
    x = torch.rand(12, 3, 8, 8) * torch.linspace(0.2, 2.0, 12).view(-1, 1, 1, 1)
    torch.testing.assert_close(net(x), stock(x))
    norm.use([6, 6])
    torch.testing.assert_close(net(x), torch.cat([stock(part) for part in x.split(6)]))
    first = norm.assign
    norm.use([12])
    norm.use((6, 6))
    assert norm.assign is first
    one = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    MicroBatchNorm(one).use([6, 6])
    assert one(x).shape == (12, 4, 6, 6)
    with pytest.raises(ConfigError) as e:
        MicroBatchNorm(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4, momentum=None)))
    assert str(e.value) == "fast=True per-micro-batch BatchNorm needs BatchNorm momentum; use fused_bn=True"


def test_micro_batch_assignment_is_made_on_the_models_device():
    from fmnist_yolo.training.fast import micro_groups

    assert micro_groups([2, 3], "cpu").tolist() == [[1, 0], [1, 0], [0, 1], [0, 1], [0, 1]]
    meta = torch.device("meta")
    assert micro_groups([2, 3], meta).device == meta
    norm = MicroBatchNorm(_small_net().to(meta))
    norm.use([2, 3])
    assert norm.assign.device == meta


def test_nchw_where_degenerate_probes_on_the_models_device_and_dtype():
    from fmnist_yolo.training.fast import nchw_where_degenerate

    def net():  # 5 px: the last convolution sees a 1x1 map
        torch.manual_seed(0)
        conv, bn = torch.nn.Conv2d, torch.nn.BatchNorm2d  # (the BatchNorm refuses a probe on another device)
        return torch.nn.Sequential(conv(3, 4, 3), bn(4), conv(4, 4, 3), conv(4, 4, 3, padding=1))

    for model in (net().double(), net().to("meta")):
        model = model.to(memory_format=torch.channels_last)
        assert nchw_where_degenerate(model, 5) == ["3"]
        assert model[3].weight.is_contiguous() and not model[2].weight.is_contiguous()


# data.py


def test_decode_names_the_file_it_cannot_read(tmp_path):
    from fmnist_yolo.data.tree import repair_hint
    from fmnist_yolo.errors import DataError
    from fmnist_yolo.training.fast import decode

    folder = tmp_path / "train" / "0_t-shirt"
    folder.mkdir(parents=True)
    files = [folder / f"{i}.png" for i in range(3)]
    for f, side in zip(files, (28, 28, 32)):
        cv2.imwrite(str(f), np.full((side, side), 7, dtype=np.uint8))
    assert decode([str(files[0])] * 3, workers=2).shape == (3, 28, 28)
    with pytest.raises(DataError) as e:  # two sizes among three images
        decode([str(f) for f in files], workers=1)
    assert str(e.value) == f"{tmp_path / 'train'}: images differ in size; the fast loader needs one size"
    files[1].write_bytes(b"not a png")
    with pytest.raises(DataError) as e:
        decode([str(f) for f in files[:2]])
    assert str(e.value) == f"{files[1]}: cannot decode image; {repair_hint(tmp_path)}"
    assert "\n" not in str(e.value)


def test_load_split_labels_by_the_models_class_names(tree):
    """Class folders map to the model's class indices by name (Ultralytics aligns them so), not by folder order."""
    from ultralytics.cfg import get_cfg

    args = get_cfg(overrides={"imgsz": 32})
    names = dict(enumerate(reversed(config.CLASS_DIRS)))
    data = load_split(tree / "val", args, names, "val", torch.device("cpu"))
    folder = {d: i for i, d in enumerate(config.CLASS_DIRS)}
    assert data.labels.tolist() == [9 - folder[os.path.basename(os.path.dirname(f))] for f in data.files]
    assert data.labels.dtype == torch.int64


def test_load_split_refuses_an_empty_or_damaged_split(tree, tmp_path):
    """One line each: a split without images, and an image Ultralytics would silently skip (the split named)."""
    from ultralytics.cfg import get_cfg

    from fmnist_yolo.errors import DataError

    args, names = get_cfg(overrides={"imgsz": 32}), dict(enumerate(config.CLASS_DIRS))
    empty = tmp_path / "empty" / "val"
    for d in config.CLASS_DIRS:
        (empty / d).mkdir(parents=True)
    with pytest.raises(DataError) as e:
        load_split(empty, args, names, "val", torch.device("cpu"))
    assert str(e.value) == f"{empty}: no images in the val split"
    victim = sorted((tree / "val" / config.CLASS_DIRS[3]).glob("*.png"))[0]
    victim.write_bytes(b"damaged")
    with pytest.raises(DataError) as e:
        load_split(tree / "val", args, names, "val", torch.device("cpu"))
    assert str(e.value).startswith(f"{victim}: cannot decode image (1 of ") and f" in {tree / 'val'} skipped" in str(
        e.value)  # fmt: skip


def test_load_split_puts_the_split_on_the_training_device(tree):
    from ultralytics.cfg import get_cfg

    args = get_cfg(overrides={"imgsz": 32})
    with _fake_cuda() as cuda:
        data = load_split(tree / "val", args, dict(enumerate(config.CLASS_DIRS)), "val", cuda)
        assert _on_cuda(data.images, data.labels) and data.labels.dtype == torch.int64


def test_the_loader_speaks_ultralytics_format_and_counts_epochs():
    n = 20
    data = MemoryDataset(torch.zeros(n, 28, 28, dtype=torch.uint8), torch.arange(n), [])
    loader = MemoryLoader(data, 8, 32, Augment(32), seed=0)
    assert len(loader.sampler) == n  # Ultralytics reads len(loader.sampler)
    for epoch in range(3):
        assert loader.epoch == epoch
        assert all(set(b) == {"img", "cls"} for b in loader)  # without a schedule: Ultralytics' batches, no more
    assert loader.epoch == 3
    # without a schedule the chunks are stock's at accumulate 1: every micro-batch steps, numbered across epochs
    assert loader.chunks(2) == step_plan(3, 2, 3, warmup=0, accumulate=1)[2]
    assert MemoryLoader(data, 8, 32, None).chunks(0) == step_plan(3, 0, 1, warmup=0, accumulate=1)[0]


def test_every_chunk_carries_its_own_micro_batches():
    """22 images in micro-batches of 4 (the last of 2), 2 a step: each chunk's sizes and weights are its own."""
    loader = _blank_loader(22, 4, accumulate=2)
    batches = list(loader)
    assert [b["chunk"] for b in batches] == loader.chunks(0)
    assert [b["micro"] for b in batches] == [(4, 4), (4, 4), (4, 2)]
    assert [b["weight"].tolist() for b in batches] == [[1 / 4] * 8, [1 / 4] * 8, [1 / 4] * 4 + [1 / 2] * 2]
    fresh = _blank_loader(22, 4)
    fresh.schedule(warmup=3, accumulate=2, epochs=3)
    whole = step_plan(6, 0, 3, warmup=3, accumulate=2)
    assert fresh.chunks(2) == whole[2]  # planned from the loader's own epoch, where its run started: epoch 0


def test_the_loader_keeps_everything_on_the_datasets_device(monkeypatch):
    asked, generator = [], torch.Generator
    monkeypatch.setattr(torch, "Generator", lambda device=None: asked.append(device) or generator())  # CPU's: fakes
    with _fake_cuda() as cuda:
        data = MemoryDataset(torch.zeros(20, 28, 28, dtype=torch.uint8, device=cuda), torch.arange(20, device=cuda), [])
        loader = MemoryLoader(data, 8, 32, Augment(32), seed=0)
        loader.schedule(warmup=0, accumulate=2, epochs=1)
        batches = list(loader) + list(MemoryLoader(data, 8, 32, None))
    assert [torch.device(d).type for d in asked] == ["cuda"]  # the shuffle's generator is the device's
    assert _on_cuda(*[t for b in batches for t in (b["img"], b["cls"], *([b["weight"]] if "weight" in b else []))])


# loss.py


def test_chunk_loss_is_stocks_loss_summed_over_micro_batches():
    """Unfused (no weights): stock's mean cross-entropy, from the logits alone or the eval head's (probabilities,
    logits); fused: the sum of stock's losses of the micro-batches, gradient too. Logged: the chunk's mean."""
    from ultralytics.utils.loss import v8ClassificationLoss

    from fmnist_yolo.training.fast import ChunkLoss, DeviceLoss

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(20, 10, generator=g, requires_grad=True)
    cls = torch.randint(0, 10, (20,), generator=g)
    stock, mean = v8ClassificationLoss(), torch.nn.functional.cross_entropy(logits, cls).detach()
    for preds in (logits, (logits.softmax(1), logits)):
        loss, items = ChunkLoss()(preds, {"cls": cls})
        torch.testing.assert_close(loss, stock(preds, {"cls": cls})[0])
        assert list(items) == ["loss"] and isinstance(items["loss"], DeviceLoss)
        torch.testing.assert_close(items["loss"].value, mean)
    sizes = [8, 8, 4]
    weight = torch.cat([torch.full((s,), 1 / s) for s in sizes])
    loss, items = ChunkLoss()(logits, {"cls": cls, "weight": weight})
    stocks = sum(stock(p, {"cls": c})[0] for p, c in zip(logits.split(sizes), cls.split(sizes)))
    torch.testing.assert_close(loss, stocks)
    torch.testing.assert_close(torch.autograd.grad(loss, logits)[0], torch.autograd.grad(stocks, logits)[0])
    torch.testing.assert_close(items["loss"].value, mean)


def test_a_loss_on_a_gpu_takes_the_non_blocking_path():
    from fmnist_yolo.training.fast import DeviceLoss

    assert not DeviceLoss(torch.tensor(1.0))._on_accelerator()  # on the CPU float() reads it at once
    with _fake_cuda() as cuda:
        assert DeviceLoss(torch.zeros((), device=cuda))._on_accelerator()
