"""The fast data path: the split decoded once into one uint8 tensor, batches augmented in torch on the device.

`MemoryTrainer` is Ultralytics' ClassificationTrainer with the data loaders replaced: model, optimizer, schedule,
EMA, validator, checkpoints, results.csv and callbacks stay Ultralytics'. Selected by `fast=True`.

It trains the recipe it is given. Stock Ultralytics adds the gradients of `accumulate = nbs / batch` micro-batches
(each a mean over `batch` images) before each optimizer step, and ramps `accumulate` from 1 during warm-up. The fast
loader replays that schedule (`step_plan`) and fuses the micro-batches of one step into one forward pass whose loss
is their sum (`ChunkLoss`), so the optimizer, the number of steps, the gradient, the warm-up and the learning rate
of every step are stock's. BatchNorm normalises each micro-batch of the chunk on its own (`MicroBatchNorm`), as
stock's separate forward passes do. What differs: the augmentations are batched re-implementations on tensors
(RandAugment included, a policy drawn per image; stock's run on PIL images, so values differ by rounding), and the
AugMix and AutoAugment policies are not reproduced.

Device-agnostic: the split, the augmentation draws and the validator's results live on the training device, so the
GPU path runs the same functions the CPU tests cover. On CPU the model trains channels_last, as on CUDA.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from ultralytics.data.augment import classify_transforms
from ultralytics.data.dataset import ClassificationDataset
from ultralytics.models.yolo.classify import ClassificationValidator
from ultralytics.utils import LOGGER
from ultralytics.utils.torch_utils import unwrap_model

from ..errors import ConfigError, DataError
from .randaugment import NUM_OPS, OPS, rand_augment
from .trainer import Trainer, check_all_images_used

VAL_BATCH = 1024  # images per validation batch: eval-mode outputs do not depend on it; 157 -> 5 batches on 5k val
CROP_ATTEMPTS = 10  # torchvision's RandomResizedCrop tries 10 boxes before it falls back to a centre crop
CROP_RATIO = (3 / 4, 4 / 3)  # its aspect-ratio range, which Ultralytics keeps


def decode(files: list[str], workers: int | None = None) -> np.ndarray:
    """Read grey PNGs into one (N, H, W) uint8 array (OpenCV releases the GIL, so threads scale).

    Not Ultralytics' ClassificationDataset.cache_images: it decodes in colour on cpu_count - 1 threads, 7.4 s
    for the 55k training images on 2 cores against 3.5 s here.
    """
    import cv2

    def read(f: str) -> np.ndarray:
        im = cv2.imread(f, cv2.IMREAD_GRAYSCALE)
        if im is None:
            raise DataError(
                f"{f}: cannot decode image (run `fmnist-yolo check`; `fmnist-yolo prepare force=True` repairs the tree)"
            )
        return im

    with ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
        images = list(pool.map(read, files, chunksize=512))
    if len({im.shape for im in images}) > 1:
        raise DataError(f"{Path(files[0]).parent.parent}: images differ in size; the fast loader needs one size")
    return np.stack(images)


def _first_fit(area: torch.Tensor, log_ratio: torch.Tensor, fits) -> tuple[torch.Tensor, ...]:
    """torchvision's box sampling loop for every image at once. From (B, CROP_ATTEMPTS) draws of area (pixels) and
    log aspect ratio, the sides round(sqrt(area * ratio)) and round(sqrt(area / ratio)) of each image's first box that
    `fits`, and whether one did."""
    ratio = torch.exp(log_ratio)
    a, b = torch.round(torch.sqrt(area * ratio)), torch.round(torch.sqrt(area / ratio))  # half to even, as round()
    ok = fits(a, b)
    first = ok.float().argmax(1, keepdim=True)  # argmax finds the first True
    return a.gather(1, first)[:, 0], b.gather(1, first)[:, 0], ok.any(1)


@dataclass
class Augment:
    """Batched training augmentation: Ultralytics' classify_augmentations on grey images, as a tensor operation.

    In stock's order: RandomResizedCrop (torchvision's sampler: integer boxes of area in [1 - scale, 1] and aspect in
    [3/4, 4/3], the first of 10 that fits, else the centre crop), horizontal/vertical flips, RandAugment where
    `auto_augment=randaugment` (stock's default; see randaugment.py), brightness and contrast jitter of +-hsv_v only
    where stock applies ColorJitter (auto_augment off: stock disables it under RandAugment/AutoAugment/AugMix; hue and
    saturation are no-ops on grey), random erasing to 0 (area 2-33 %, aspect 0.3-3.3, torchvision's RandomErasing
    sampler). Not reproduced: the AugMix and AutoAugment policies. Like stock, `translate` does nothing here
    (classify_augmentations has no shift)."""

    size: int
    scale: float = 0.5
    fliplr: float = 0.5
    flipud: float = 0.0
    hsv_v: float = 0.0
    erasing: float = 0.4
    randaugment: bool = False

    @classmethod
    def from_args(cls, args) -> Augment:
        """The augmentation stock Ultralytics would apply for these train arguments (less AugMix and AutoAugment)."""
        jitter = 0.0 if args.auto_augment else float(args.hsv_v)  # stock: no ColorJitter with an auto_augment policy
        return cls(int(args.imgsz), float(args.scale), float(args.fliplr), float(args.flipud), jitter,
                   float(args.erasing), args.auto_augment == "randaugment")  # fmt: skip

    def draw(self, n: int, g: torch.Generator, device: torch.device) -> dict[str, torch.Tensor]:
        """Every random choice for `n` images, one row each: slices of it augment any batching of the same images
        identically (an epoch's images do not depend on how its micro-batches are fused)."""

        def uniform(lo: float, hi: float) -> torch.Tensor:
            return torch.rand(n, generator=g, device=device) * (hi - lo) + lo

        def tries(lo: float, hi: float) -> torch.Tensor:
            return torch.rand(n, CROP_ATTEMPTS, generator=g, device=device) * (hi - lo) + lo

        r = {
            "area": tries(1 - self.scale, 1.0), "log_ratio": tries(*map(math.log, CROP_RATIO)),
            "cx": uniform(0, 1), "cy": uniform(0, 1), "fliplr": uniform(0, 1), "flipud": uniform(0, 1),
            "contrast": uniform(1 - self.hsv_v, 1 + self.hsv_v), "brightness": uniform(1 - self.hsv_v, 1 + self.hsv_v),
            "e_area": tries(0.02, 0.33), "e_log_ratio": tries(math.log(0.3), math.log(3.3)),
            "e_y": uniform(0, 1), "e_x": uniform(0, 1), "e_on": uniform(0, 1),
        }  # fmt: skip
        if self.randaugment:  # drawn last and only when on: without it an epoch's draws are what they always were
            op = torch.rand(n, NUM_OPS, generator=g, device=device)
            r["ra_op"] = (op * len(OPS)).long().clamp(max=len(OPS) - 1)  # each of the 14 operations alike
            r["ra_sign"] = torch.where(torch.rand(n, NUM_OPS, generator=g, device=device) < 0.5, -1.0, 1.0)
        return r

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """(B, H, W) uint8 -> (B, 1, size, size) float in [0, 1], random choices drawn from `g`."""
        return self.apply(x, self.draw(len(x), g, x.device))

    @staticmethod
    def crop_boxes(r: dict[str, torch.Tensor], height: int, width: int) -> tuple[torch.Tensor, ...]:
        """torchvision's RandomResizedCrop.get_params for every image at once: (top, left, h, w) in pixels.

        Each image's first box (of CROP_ATTEMPTS) whose rounded sides fit, at a uniform integer position; none
        fits: the centre crop of the largest box within the ratio range.
        """
        w, h, found = _first_fit(r["area"] * (height * width), r["log_ratio"],
                                 lambda w, h: (w > 0) & (w <= width) & (h > 0) & (h <= height))  # fmt: skip
        if width / height < CROP_RATIO[0]:
            fw, fh = width, round(width / CROP_RATIO[0])
        elif width / height > CROP_RATIO[1]:
            fw, fh = round(height * CROP_RATIO[1]), height
        else:
            fw, fh = width, height
        w, h = torch.where(found, w, float(fw)), torch.where(found, h, float(fh))
        top = torch.where(found, torch.floor(r["cy"] * (height - h + 1)), float((height - fh) // 2))
        left = torch.where(found, torch.floor(r["cx"] * (width - w + 1)), float((width - fw) // 2))
        return top, left, h, w

    @staticmethod
    def erase_boxes(r: dict[str, torch.Tensor], size: int) -> tuple[torch.Tensor, ...]:
        """torchvision's RandomErasing.get_params for every image at once: (top, left, h, w) in pixels of the
        `size`-pixel output; the first of CROP_ATTEMPTS boxes (area 2-33 %, aspect 0.3-3.3) smaller than the image,
        an empty box when none is."""
        h, w, found = _first_fit(r["e_area"] * size**2, r["e_log_ratio"], lambda h, w: (h < size) & (w < size))
        h, w = torch.where(found, h, 0.0), torch.where(found, w, 0.0)
        return torch.floor(r["e_y"] * (size - h + 1)), torch.floor(r["e_x"] * (size - w + 1)), h, w

    def apply(self, x: torch.Tensor, r: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, H, W) uint8 -> (B, 1, size, size) float in [0, 1], with the random choices `r` (see draw)."""
        b, dev, height, width = len(x), x.device, x.shape[-2], x.shape[-1]
        x = x[:, None].float() / 255
        top, left, h, w = self.crop_boxes(r, height, width)

        def norm(px: torch.Tensor, side: int) -> torch.Tensor:  # pixel coordinate (0 = the first edge) -> [-1, 1]
            return 2 * px / side - 1

        sx = torch.where(r["fliplr"] < self.fliplr, -w / width, w / width)  # the box's half-sides in [-1, 1] units
        sy = torch.where(r["flipud"] < self.flipud, -h / height, h / height)
        cx, cy = norm(left + w / 2, width), norm(top + h / 2, height)  # and its centre
        zero = torch.zeros_like(w)
        theta = torch.stack([torch.stack([sx, zero, cx], 1), torch.stack([zero, sy, cy], 1)], 1)
        grid = F.affine_grid(theta, [b, 1, self.size, self.size], align_corners=False)
        # Crop, then resize: samples beyond the box's outer pixel centres take the edge pixel (stock resizes the
        # cropped image alone), not the neighbours outside the box or the zeros outside the image.
        lo = torch.stack([norm(left + 0.5, width), norm(top + 0.5, height)], 1).view(b, 1, 1, 2)
        hi = torch.stack([norm(left + w - 0.5, width), norm(top + h - 0.5, height)], 1).view(b, 1, 1, 2)
        grid = torch.maximum(torch.minimum(grid, hi), lo)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        if self.randaugment:
            x = rand_augment(x, r["ra_op"], r["ra_sign"])
        if self.hsv_v:
            mean = x.mean((1, 2, 3), keepdim=True)
            x = (((x - mean) * r["contrast"].view(b, 1, 1, 1) + mean) * r["brightness"].view(b, 1, 1, 1)).clamp(0, 1)
        if self.erasing:
            y0, x0, eh, ew = self.erase_boxes(r, self.size)
            on = r["e_on"] < self.erasing
            rows = torch.arange(self.size, device=dev).view(1, -1, 1)
            cols = torch.arange(self.size, device=dev).view(1, 1, -1)
            box = ((rows >= y0.view(-1, 1, 1)) & (rows < (y0 + eh).view(-1, 1, 1))
                   & (cols >= x0.view(-1, 1, 1)) & (cols < (x0 + ew).view(-1, 1, 1)) & on.view(-1, 1, 1))  # fmt: skip
            x = x.masked_fill(box[:, None], 0.0)
        return x


@dataclass(frozen=True)
class Chunk:
    """Consecutive micro-batches of one epoch, trained in one forward pass."""

    start: int  # first micro-batch (index within the epoch)
    stop: int  # one past the last
    steps: bool  # stock takes an optimizer step after the last one (False: the gradient carries into the next chunk)
    ni: int  # stock's global index of the last micro-batch: the warm-up's lr and momentum at the step are taken here


def step_plan(micro_batches: int, start_epoch: int, epochs: int, warmup: int, accumulate: int) -> dict[int, list]:
    """Stock Ultralytics' accumulation schedule as chunks: epoch -> [Chunk, ...].

    The logic of BaseTrainer._do_train (checked against Ultralytics 8.4.190): micro-batch `ni` (global index) sets
    `accumulate` to round(interp(ni, [0, warmup], [1, accumulate])) while ni <= warmup, and a step follows when
    ni - last_step >= accumulate. `last_step` starts at -1 (also on resume) and runs across epochs, so a step's
    micro-batches can straddle an epoch boundary.
    """
    plan, last, acc = {}, -1, accumulate
    for epoch in range(start_epoch, epochs):
        chunks, start = [], 0
        for i in range(micro_batches):
            ni = i + micro_batches * epoch
            if warmup and ni <= warmup:
                acc = max(1, int(np.interp(ni, [0, warmup], [1, accumulate]).round()))
            if ni - last >= acc:
                chunks.append(Chunk(start, i + 1, True, ni))
                start, last = i + 1, ni
        if start < micro_batches:
            chunks.append(Chunk(start, micro_batches, False, micro_batches * (epoch + 1) - 1))
        plan[epoch] = chunks
    return plan


class DeviceLoss:
    """A logged training loss that stays on the device: printing it never makes the host wait for the GPU.

    Ultralytics' loop averages the loss items every iteration ((tloss * i + v) / (i + 1)) and prints them with %g in
    the progress bar; on a CUDA tensor each print is a host sync, one per step. Arithmetic on DeviceLoss stays on the
    device; `float()` (the progress bar) starts a non-blocking copy to the host and answers the newest copy that has
    already landed (the first of a run waits once). `exact()` waits, for results.csv and the loggers.
    """

    def __init__(self, value: torch.Tensor, box: dict | None = None):
        self.value = value.detach()
        self._box = box if box is not None else {"landed": None, "pending": []}  # shared by derived values

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        """torch functions see the tensor (Ultralytics' validator shapes its loss sums with zeros_like)."""
        from torch.utils._pytree import tree_map

        def unwrap(a):
            return a.value if isinstance(a, DeviceLoss) else a

        return func(*tree_map(unwrap, args), **tree_map(unwrap, kwargs or {}))

    def _derive(self, value: torch.Tensor) -> DeviceLoss:
        return DeviceLoss(value, self._box)

    def __add__(self, other):
        return self._derive(self.value + (other.value if isinstance(other, DeviceLoss) else other))

    __radd__ = __add__

    def __mul__(self, other):
        return self._derive(self.value * (other.value if isinstance(other, DeviceLoss) else other))

    __rmul__ = __mul__

    def __truediv__(self, other):
        return self._derive(self.value / (other.value if isinstance(other, DeviceLoss) else other))

    def exact(self) -> float:
        """The value, waiting for the device if it must."""
        return self.value.float().item()

    def _on_accelerator(self) -> bool:
        return self.value.device.type == "cuda"

    def __float__(self) -> float:
        if not self._on_accelerator():
            return self.exact()  # on the CPU the value is already here
        box = self._box
        host = torch.empty((), dtype=torch.float32, pin_memory=self.value.is_cuda)
        host.copy_(self.value.float(), non_blocking=True)
        done = torch.cuda.Event()
        done.record()
        box["pending"].append((done, host))
        while box["pending"] and box["pending"][0][0].query():  # copies land in order
            box["landed"] = float(box["pending"].pop(0)[1])
        if box["landed"] is None:  # nothing landed yet this run: wait once
            done.synchronize()
            box["landed"], box["pending"] = float(host), []
        return box["landed"]

    def __format__(self, spec: str) -> str:
        return format(float(self), spec)


class ChunkLoss:
    """Stock's classification loss summed over the micro-batches of a chunk.

    Each image weighs 1 / (its micro-batch's size), so the gradient is the sum of the micro-batch means that stock
    accumulates before a step, the short last micro-batch of an epoch included. The logged loss is the chunk's mean.
    """

    def __call__(self, preds, batch: dict) -> tuple[torch.Tensor, dict]:
        preds = preds[1] if isinstance(preds, (list, tuple)) else preds
        ce = F.cross_entropy(preds, batch["cls"], reduction="none")
        loss = (ce * batch["weight"]).sum() if "weight" in batch else ce.mean()
        return loss, {"loss": DeviceLoss(ce.mean())}


def micro_groups(sizes: list[int] | tuple[int, ...], device) -> torch.Tensor:
    """(B, G) one-hot assignment of a chunk's images to its G micro-batches of `sizes` images, in order."""
    groups = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    return F.one_hot(groups, len(sizes)).float().to(device)


def grouped_batch_norm(bn: nn.Module, x: torch.Tensor, assign: torch.Tensor) -> torch.Tensor:
    """Training-mode BatchNorm of each micro-batch of `x` on its own, in one pass of tensor operations.

    `assign` is (B, G): image i belongs to micro-batch g. Each micro-batch is normalised by its own mean and
    (biased) variance, as a separate forward of it would; the running statistics take the G updates stock's
    separate forwards make, in order, in closed form: r <- (1 - m)^G r + sum_g m (1 - m)^(G - 1 - g) s_g, with the
    unbiased variance. Shapes depend on B and G only, so a compiled model or a CUDA graph sees the same operations
    for every chunk of one composition, and nothing reads a value on the host. Computed in fp32 under autocast too
    (the statistics of stock's BatchNorm are fp32).
    """
    with torch.autocast(x.device.type, enabled=False):
        xf = x.float()
        n = assign.sum(0) * (x.shape[2] * x.shape[3])  # values per channel in each micro-batch, (G,)
        mean = (assign.T @ xf.sum((2, 3))) / n[:, None]  # (G, C)
        xc = xf - (assign @ mean)[:, :, None, None]
        var = (assign.T @ xc.square().sum((2, 3))) / n[:, None]  # biased, as the normalisation uses
        scale = torch.rsqrt(var + bn.eps)
        if bn.weight is not None:
            scale = scale * bn.weight
        y = xc * (assign @ scale)[:, :, None, None]
        if bn.bias is not None:
            y = y + bn.bias[:, None, None]
        if bn.track_running_stats and bn.running_mean is not None:
            with torch.no_grad():
                g, m = assign.shape[1], bn.momentum
                weight = m * (1 - m) ** torch.arange(g - 1, -1, -1, device=x.device, dtype=torch.float32)
                unbiased = var * (n / (n - 1).clamp(min=1))[:, None]
                bn.running_mean.mul_((1 - m) ** g).add_(weight @ mean)
                bn.running_var.mul_((1 - m) ** g).add_(weight @ unbiased)
                bn.num_batches_tracked.add_(g)
    return y.to(x.dtype)


class MicroBatchNorm:
    """BatchNorm over each micro-batch of a fused chunk, as stock's separate forward passes normalise.

    Installed on the training model's BatchNorm layers only (the EMA, validation and checkpoints keep plain ones).
    While `assign` is set (a (B, G) one-hot of images to micro-batches, G > 1), each layer normalises each micro-batch
    on its own and updates its running statistics once per micro-batch, in order, in one grouped computation
    (grouped_batch_norm); the layers between see the whole chunk at once, and are per image anyway. So a fused chunk
    computes what stock's micro-batches compute. `detached()` takes the layers back to plain for a deep copy.
    """

    def __init__(self, model: nn.Module):
        self.assign: torch.Tensor | None = None  # (B, G) micro-batch of each image; None: plain BatchNorm
        self._layers = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if any(m.momentum is None for m in self._layers):  # a cumulative average has no closed form per group
            raise ConfigError("fast=True per-micro-batch BatchNorm needs BatchNorm momentum; use fused_bn=True")
        self._install()

    @property
    def sizes(self) -> list[int] | None:
        """The chunk's micro-batch sizes (from `assign`; reads the device, so for tests and logs only)."""
        return None if self.assign is None else [int(c) for c in self.assign.sum(0).tolist()]

    @sizes.setter
    def sizes(self, sizes: list[int] | None) -> None:
        self.assign = micro_groups(sizes, self._layers[0].weight.device) if sizes and len(sizes) > 1 else None

    def _install(self) -> None:
        for m in self._layers:
            m.forward = partial(self._forward, m)  # an instance attribute: the module's class stays stock's

    @contextlib.contextmanager
    def detached(self):
        """Within: the layers are plain BatchNorm, so a deep copy of the model (a new EMA) carries none of this."""
        for m in self._layers:
            del m.forward
        try:
            yield
        finally:
            self._install()

    def _forward(self, bn: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if not bn.training or self.assign is None:
            return type(bn).forward(bn, x)
        return grouped_batch_norm(bn, x, self.assign)


def resize_like_validation(x: torch.Tensor, size: int) -> torch.Tensor:
    """(B, H, W) uint8 -> (B, 1, size, size) in [0, 1], as Ultralytics' classify_transforms (bilinear, 8-bit result)."""
    x = x[:, None].float()
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        x = x.round().clamp(0, 255)  # PIL resizes to 8-bit pixels before ToTensor
    return x / 255


def nchw_where_degenerate(model: nn.Module, size: int) -> list[str]:
    """Convolution weights that see a size-1 feature map at `size` px, put back in NCHW; their names.

    At 32 px yolo11n-cls's later layers (model.8 on) see 1x1 maps. A size-1 tensor is "contiguous" in NCHW and
    channels_last alike, so cuDNN returns such a layer's weight gradient in NCHW, while Inductor planned for the
    weight's own channels_last layout and fails its stride assertion (`expected size 64==64, stride 9==1`). With
    these weights in NCHW the two agree; the other layers keep channels_last.
    """
    seen: dict[str, tuple[int, ...]] = {}

    def record(name: str, args: tuple) -> None:  # a pre-hook that returns something replaces the arguments
        seen.setdefault(name, tuple(args[0].shape))

    hooks = [m.register_forward_pre_hook(lambda mod, args, name=name: record(name, args))
             for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]  # fmt: skip
    p = next(model.parameters())
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, 3, size, size, device=p.device, dtype=p.dtype))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    changed = []
    for name, m in model.named_modules():
        if name in seen and min(seen[name][-2:]) == 1 and not m.weight.is_contiguous():
            m.weight.data = m.weight.data.contiguous()
            changed.append(name)
    return changed


class MemoryDataset:
    """One split in memory: (N, H, W) uint8 images and int64 labels, on the training device."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, files: list[str]):
        self.images, self.labels, self.files = images, labels, files

    def __len__(self) -> int:
        return len(self.labels)


class MemoryLoader:
    """Batches of a MemoryDataset in Ultralytics' format ({"img": (B, 3, S, S) float, "cls": (B,) int64}).

    Validation: fixed order, `batch_size` images a batch, the validation resize only.
    Training: a seeded shuffle and augmentation per epoch (seed + epoch: reproducible, also after a resume), cut into
    micro-batches of `batch_size` as stock does. Without a step schedule each micro-batch is one batch; with one
    (`schedule`, set by MemoryTrainer) each batch is a chunk of micro-batches fused for one optimizer step, and
    carries "weight" (per image, for ChunkLoss), "micro" (its images' micro-batches, for MicroBatchNorm) and "chunk".
    """

    num_workers = 0

    def __init__(self, dataset: MemoryDataset, batch_size: int, size: int, augment: Augment | None, seed: int = 0,
                 drop_last: bool = False):  # fmt: skip
        self.dataset, self.batch_size, self.size, self.augment, self.seed = dataset, batch_size, size, augment, seed
        self.sampler = range(len(dataset))  # Ultralytics reads len(loader.sampler)
        self.epoch = 0
        n = len(dataset)
        # as Ultralytics' build_dataloader: drop the short last micro-batch only when there is one and a full one
        self.drop_last = drop_last and n > batch_size > 0 and n % batch_size != 0
        self.micro_batches = n // batch_size if self.drop_last else math.ceil(n / batch_size)
        self._schedule: tuple[int, int, int] | None = None  # (warmup, accumulate, epochs)
        self._plan: dict[int, list[Chunk]] | None = None
        self._groups: dict[tuple[int, ...], torch.Tensor] = {}  # micro-batch sizes -> their (B, G) assignment

    def schedule(self, warmup: int, accumulate: int, epochs: int) -> None:
        """Fuse micro-batches as stock Ultralytics accumulates them (step_plan), from the next epoch iterated on."""
        self._schedule, self._plan = (warmup, accumulate, epochs), None

    def chunks(self, epoch: int) -> list[Chunk]:
        """The chunks of one epoch (one micro-batch each, all stepping, without a schedule)."""
        if self._schedule is None:
            return [Chunk(i, i + 1, True, i + self.micro_batches * epoch) for i in range(self.micro_batches)]
        if self._plan is None or epoch not in self._plan:  # planned from the first epoch trained (resume: its own)
            warmup, accumulate, epochs = self._schedule
            start = epoch if self._plan is not None else min(epoch, self.epoch)
            self._plan = step_plan(self.micro_batches, start, max(epochs, epoch + 1), warmup, accumulate)
        return self._plan[epoch]

    def __len__(self) -> int:
        """Batches an epoch: micro-batches, or with a schedule the chunks of an epoch after warm-up (the most)."""
        if self._schedule is None:
            return self.micro_batches
        warmup, _, epochs = self._schedule
        self.chunks(self.epoch)  # plan from the current epoch
        after = max(self.epoch, min(math.ceil((warmup + 1) / self.micro_batches), epochs - 1))
        return max(len(self.chunks(e)) for e in range(after, max(epochs, after + 1)))

    def groups(self, sizes: list[int]) -> torch.Tensor | None:
        """The (B, G) micro-batch assignment of a chunk of these sizes (None for one micro-batch), made once per
        composition on the device: the 100-epoch plan has 6 compositions, and a step copies nothing to the device."""
        if len(sizes) < 2:
            return None
        key = tuple(sizes)
        if key not in self._groups:
            self._groups[key] = micro_groups(sizes, self.dataset.images.device)
        return self._groups[key]

    def reset(self) -> None:
        """Nothing to rebuild (Ultralytics calls it when closing mosaic)."""

    def __iter__(self):
        images, labels = self.dataset.images, self.dataset.labels
        n = len(self.dataset)
        if self.augment is None:
            for start in range(0, n, self.batch_size):
                x = resize_like_validation(images[start : start + self.batch_size], self.size)
                yield {"img": x.expand(-1, 3, -1, -1).contiguous(), "cls": labels[start : start + self.batch_size]}
            return
        g = torch.Generator(device=images.device)
        g.manual_seed(self.seed * 100003 + self.epoch)
        order = torch.randperm(n, generator=g, device=images.device)
        draws = self.augment.draw(n, g, images.device)  # per position in the epoch: any chunking augments alike
        b = self.batch_size
        last = b if self.drop_last else n - (self.micro_batches - 1) * b  # the epoch's last micro-batch
        for chunk in self.chunks(self.epoch):
            span = slice(chunk.start * b, chunk.stop * b)
            idx = order[span]
            weight = torch.full((len(idx),), 1 / b, device=images.device)
            micro = [b] * (chunk.stop - chunk.start)
            if chunk.stop == self.micro_batches and last != b:
                weight[-last:], micro[-1] = 1 / last, last
            x = self.augment.apply(images[idx], {k: v[span] for k, v in draws.items()})
            batch = {"img": x.expand(-1, 3, -1, -1).contiguous(), "cls": labels[idx]}
            yield {**batch, "weight": weight, "chunk": chunk, "micro": self.groups(micro)} if self._schedule else batch
        self.epoch += 1


class DeviceValidator(ClassificationValidator):
    """Ultralytics' validator whose per-batch results stay on the device, moved to the host once per validation.

    Stock copies each batch's top-5 and labels to the host (a synchronisation per batch on a GPU); the metrics are
    computed from the same tensors either way.
    """

    def update_metrics(self, preds: torch.Tensor, batch: dict) -> None:
        n5 = min(len(self.names), 5)
        self.pred.append(preds.argsort(1, descending=True)[:, :n5].type(torch.int32))  # as stock, less .cpu()
        self.targets.append(batch["cls"].type(torch.int32))

    def get_stats(self) -> dict[str, float]:
        """Stock's metrics, after one move of all batches' results to the host."""
        self.pred = [torch.cat(self.pred).cpu()] if self.pred else []
        self.targets = [torch.cat(self.targets).cpu()] if self.targets else []
        return super().get_stats()


def load_split(path: str | Path, args, names: dict[int, str], mode: str, device: torch.device) -> MemoryDataset:
    """The images Ultralytics would use for this split (its fraction, its class indices), decoded into memory."""
    split = "train" if mode == "train" else args.split
    listing = ClassificationDataset(str(path), args, augment=False, prefix=split, names=names)
    check_all_images_used(listing, path, args.fraction, split)
    files = [s[0] for s in listing.samples]
    if not files:
        raise DataError(f"{path}: no images in the {mode} split")
    images = torch.from_numpy(decode(files)).to(device)
    labels = torch.tensor([s[1] for s in listing.samples], dtype=torch.int64, device=device)
    return MemoryDataset(images, labels, files)


class MemoryTrainer(Trainer):
    """ClassificationTrainer whose loaders serve a pre-decoded in-memory split, augmented in batches on the device.

    Stock's optimizer, steps, gradient scale, warm-up and learning rates (see the module docstring): the loop runs one
    iteration per fused chunk, and `optimizer_step` steps where stock does, with stock's warm-up values.
    """

    validator_class = DeviceValidator
    _STEP_ALWAYS = -sys.maxsize  # loop's `ni - last_opt_step >= accumulate` always true: the plan decides the steps

    def __init__(self, *args, fused_bn: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.fused_bn = fused_bn  # True: one BatchNorm over each chunk (faster; not stock's per-micro-batch statistics)
        if self.world_size > 1:
            raise ConfigError("fast=True trains on one device; drop fast=True for multi-GPU (DDP) training")
        if self.args.time:
            raise ConfigError("fast=True plans its optimizer steps by epoch; use epochs= instead of time=")
        if self.device.type == "cpu":  # Ultralytics leaves a core idle for loader workers that this path does not use
            torch.set_num_threads(os.cpu_count() or 1)
        self.add_callback("on_train_epoch_start", lambda t: setattr(t.train_loader, "epoch", t.epoch))
        self.add_callback("on_pretrain_routine_end", MemoryTrainer._start_plan)
        self._splits: dict[str, MemoryDataset] = {}
        self._chunk: Chunk | None = None
        self._micro_bn: MicroBatchNorm | None = None
        self.stock_accumulate, self.stock_warmup = 1, 0
        if self.args.auto_augment and self.args.auto_augment != "randaugment":
            LOGGER.warning(f"fast=True trains stock's optimizer steps, gradients and schedule, but does not apply "
                           f"auto_augment={self.args.auto_augment} (stock applies it per image; randaugment it does). "
                           f"Drop fast=True for the stock loader.")  # fmt: skip

    def get_dataloader(self, dataset_path, batch_size: int = 16, rank: int = 0, mode: str = "train"):
        key = f"{mode}:{dataset_path}"
        if key not in self._splits:
            self._splits[key] = load_split(dataset_path, self.args, self.data["names"], mode, self.device)
            LOGGER.info(f"fast loader: {len(self._splits[key])} {mode} images of {dataset_path} in memory "
                        f"({self._splits[key].images.nbytes / 1e6:.0f} MB, {self.device})")  # fmt: skip
        size = int(self.args.imgsz)
        if mode == "train":
            # stock drops the short last micro-batch when compiling (ClassificationTrainer.get_dataloader): one shape
            return MemoryLoader(self._splits[key], batch_size, size, Augment.from_args(self.args), self.args.seed,
                                drop_last=bool(self.args.compile))  # fmt: skip
        unwrap_model(self.model).transforms = classify_transforms(size=size)  # for best.pt's predictor, as stock
        return MemoryLoader(self._splits[key], max(batch_size, VAL_BATCH), size, None)

    def setup_model(self):
        """Ultralytics' model, in channels_last on CPU too unless `channels_last=False`.

        Ultralytics 8.4 applies channels_last on CUDA only ("no benefit on CPU"); on this project's 2-core Zen 4 the
        fast path trains 1.16x faster in it at 256 images a step and the model 1.13x at 64, fp32
        (benchmarks/RESULTS.md). The stock loader cannot feed that speed, so only this path takes it. The same
        computation to rounding; checkpoints are written NCHW as ever.
        """
        ckpt = super().setup_model()
        if self.device.type == "cpu" and self.args.channels_last is not False:
            self.model = self.model.to(memory_format=torch.channels_last)
            self._asked_channels_last, self.args.channels_last = self.args.channels_last, None  # no "ignored" warning
        return ckpt

    def _build_train_pipeline(self):
        """Stock's loaders, accumulation and optimizer, then the loader fuses what stock would accumulate."""
        super()._build_train_pipeline()
        loader = self.train_loader
        self.stock_accumulate = self.accumulate
        self.stock_warmup = super()._get_warmup_iterations(loader.micro_batches)
        loader.schedule(self.stock_warmup, self.stock_accumulate, self.epochs)
        loader.epoch = self.start_epoch
        self.accumulate = self._STEP_ALWAYS

    def _start_plan(self) -> None:
        """After a resume has set start_epoch: plan from there, and sum the losses of fused micro-batches."""
        self.train_loader.schedule(self.stock_warmup, self.stock_accumulate, self.epochs)
        self.train_loader.epoch = self.start_epoch
        if hasattr(self, "_asked_channels_last"):  # the argument as given, for the checkpoints' train_args
            self.args.channels_last = self._asked_channels_last
        unwrap_model(self.model).criterion = ChunkLoss()  # training model only: checkpoints strip the criterion
        if self.args.compile and self.device.type == "cuda":  # review finding 8: Inductor's stride assertion
            nchw_where_degenerate(unwrap_model(self.model), int(self.args.imgsz))
        if not self.fused_bn:  # after the EMA's copy was taken: the EMA stays plain
            self._micro_bn = MicroBatchNorm(unwrap_model(self.model))

    def label_loss_items(self, loss_items=None, prefix="train"):
        """Stock's, with each DeviceLoss read exactly (once an epoch: results.csv, the loggers)."""
        if loss_items is not None:
            loss_items = {k: v.exact() if isinstance(v, DeviceLoss) else v for k, v in loss_items.items()}
        return super().label_loss_items(loss_items, prefix)

    def _load_checkpoint_state(self, ckpt):
        """Stock's, with the training model's BatchNorm layers plain while it runs: a NaN recovery rebuilds the EMA
        as a deep copy of the training model, which would otherwise pickle MicroBatchNorm into every checkpoint."""
        with self._micro_bn.detached() if self._micro_bn else contextlib.nullcontext():
            super()._load_checkpoint_state(ckpt)

    def _get_warmup_iterations(self, num_batches):
        return 0  # the loop's per-batch warm-up is off: optimizer_step applies stock's, per micro-batch index

    def preprocess_batch(self, batch):
        self._chunk = batch.pop("chunk", None)
        assign = batch.pop("micro", None)
        if self._micro_bn is not None:
            self._micro_bn.assign = assign
        return batch  # already on the device

    def optimizer_step(self):
        """Step where stock steps, with the lr and momentum stock's warm-up gives at that micro-batch."""
        chunk = self._chunk
        if chunk is not None and not chunk.steps:
            return  # stock adds this gradient to the next micro-batches' before stepping
        if chunk is not None and self.stock_warmup:
            self._warmup(chunk.ni)
        super().optimizer_step()

    def _warmup(self, ni: int) -> None:
        """Stock's warm-up of lr and momentum at global micro-batch `ni` (BaseTrainer._do_train, 8.4.190)."""
        nw, a = self.stock_warmup, self.args
        for x in self.optimizer.param_groups:
            target = x["initial_lr"] * self.lf(self.epoch)
            if ni <= nw:
                start = a.warmup_bias_lr if x.get("param_group") == "bias" else 0.0
                x["lr"] = float(np.interp(ni, [0, nw], [start, target]))
                if "momentum" in x:
                    x["momentum"] = float(np.interp(ni, [0, nw], [a.warmup_momentum, a.momentum]))
            else:  # after warm-up: where stock's last warm-up micro-batch left them (the scheduler's lr)
                x["lr"] = target
                if "momentum" in x:
                    x["momentum"] = a.momentum
