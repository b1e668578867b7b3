"""The fast data path: the split decoded once into one uint8 tensor, batches augmented in torch on the device.

`MemoryTrainer` is Ultralytics' ClassificationTrainer with only the data loaders replaced: model, optimizer,
schedule, EMA, validator, checkpoints, results.csv and callbacks stay Ultralytics'. Selected by `fast=True`.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from ultralytics.data.augment import classify_transforms
from ultralytics.data.dataset import ClassificationDataset
from ultralytics.models.yolo.classify import ClassificationTrainer
from ultralytics.utils import LOGGER
from ultralytics.utils.torch_utils import unwrap_model

from .errors import ConfigError


def decode(files: list[str], workers: int | None = None) -> np.ndarray:
    """Read grey PNGs into one (N, H, W) uint8 array (OpenCV releases the GIL, so threads scale).

    Not Ultralytics' ClassificationDataset.cache_images: it decodes in colour on cpu_count - 1 threads, 7.4 s
    for the 55k training images on 2 cores against 3.5 s here.
    """
    import cv2

    def read(f: str) -> np.ndarray:
        im = cv2.imread(f, cv2.IMREAD_GRAYSCALE)
        if im is None:
            raise ConfigError(f"{f}: cannot decode image (run `fmnist-yolo check`)")
        return im

    with ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
        images = list(pool.map(read, files, chunksize=512))
    if len({im.shape for im in images}) > 1:
        raise ConfigError(f"{Path(files[0]).parent.parent}: images differ in size; the fast loader needs one size")
    return np.stack(images)


@dataclass
class Augment:
    """Batched training augmentation, the intent of Ultralytics' classify_augmentations on grey images.

    RandomResizedCrop (area in [1 - scale, 1], aspect in [3/4, 4/3], random position), a random shift of up to
    +-translate of the side (black fill: the background; stock classify transforms ignore translate),
    horizontal/vertical flips, brightness and contrast jitter of +-hsv_v (hue and saturation are no-ops on grey),
    random erasing to 0 (area 2-33 %, aspect 0.3-3.3, as torchvision's RandomErasing).
    """

    size: int
    scale: float = 0.5
    translate: float = 0.0
    fliplr: float = 0.5
    flipud: float = 0.0
    hsv_v: float = 0.4
    erasing: float = 0.4

    @classmethod
    def from_args(cls, args) -> Augment:
        return cls(int(args.imgsz), float(args.scale), float(args.translate), float(args.fliplr), float(args.flipud),
                   float(args.hsv_v), float(args.erasing))  # fmt: skip

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """(B, H, W) uint8 -> (B, 1, size, size) float in [0, 1]."""
        b, dev = len(x), x.device

        def uniform(lo: float, hi: float) -> torch.Tensor:
            return torch.rand(b, generator=g, device=dev) * (hi - lo) + lo

        x = x[:, None].float() / 255
        area = uniform(1 - self.scale, 1.0)
        ratio = torch.exp(uniform(math.log(3 / 4), math.log(4 / 3)))
        w, h = torch.sqrt(area * ratio).clamp(max=1), torch.sqrt(area / ratio).clamp(max=1)  # fractions of the side
        cx, cy = (uniform(-1, 1) * (1 - w)), (uniform(-1, 1) * (1 - h))  # crop centre, crop stays inside
        cx, cy = cx + uniform(-2, 2) * self.translate, cy + uniform(-2, 2) * self.translate  # [-1, 1] spans 2
        sx = torch.where(torch.rand(b, generator=g, device=dev) < self.fliplr, -w, w)
        sy = torch.where(torch.rand(b, generator=g, device=dev) < self.flipud, -h, h)
        zero = torch.zeros_like(w)
        theta = torch.stack([torch.stack([sx, zero, cx], 1), torch.stack([zero, sy, cy], 1)], 1)
        grid = F.affine_grid(theta, [b, 1, self.size, self.size], align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        if self.hsv_v:
            mean = x.mean((1, 2, 3), keepdim=True)
            contrast = uniform(1 - self.hsv_v, 1 + self.hsv_v).view(b, 1, 1, 1)
            brightness = uniform(1 - self.hsv_v, 1 + self.hsv_v).view(b, 1, 1, 1)
            x = (((x - mean) * contrast + mean) * brightness).clamp(0, 1)
        if self.erasing:
            e_area = uniform(0.02, 0.33) * self.size**2
            e_ratio = torch.exp(uniform(math.log(0.3), math.log(3.3)))
            eh = torch.sqrt(e_area * e_ratio).clamp(max=self.size)
            ew = torch.sqrt(e_area / e_ratio).clamp(max=self.size)
            y0, x0 = uniform(0, 1) * (self.size - eh), uniform(0, 1) * (self.size - ew)
            on = torch.rand(b, generator=g, device=dev) < self.erasing
            r = torch.arange(self.size, device=dev).view(1, -1, 1)
            c = torch.arange(self.size, device=dev).view(1, 1, -1)
            box = ((r >= y0.view(-1, 1, 1)) & (r < (y0 + eh).view(-1, 1, 1))
                   & (c >= x0.view(-1, 1, 1)) & (c < (x0 + ew).view(-1, 1, 1)) & on.view(-1, 1, 1))  # fmt: skip
            x = x.masked_fill(box[:, None], 0.0)
        return x


def resize_like_validation(x: torch.Tensor, size: int) -> torch.Tensor:
    """(B, H, W) uint8 -> (B, 1, size, size) in [0, 1], as Ultralytics' classify_transforms (bilinear, 8-bit result)."""
    x = x[:, None].float()
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        x = x.round().clamp(0, 255)  # PIL resizes to 8-bit pixels before ToTensor
    return x / 255


class MemoryDataset:
    """One split in memory: (N, H, W) uint8 images and int64 labels, on the training device."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, files: list[str]):
        self.images, self.labels, self.files = images, labels, files

    def __len__(self) -> int:
        return len(self.labels)


class MemoryLoader:
    """Batches of a MemoryDataset in Ultralytics' format ({"img": (B, 3, S, S) float, "cls": (B,) int64}).

    Training: a seeded shuffle and augmentation per epoch (seed + epoch: reproducible, also after a resume).
    Validation: fixed order, the validation resize only.
    """

    num_workers = 0
    drop_last = False

    def __init__(self, dataset: MemoryDataset, batch_size: int, size: int, augment: Augment | None, seed: int = 0):
        self.dataset, self.batch_size, self.size, self.augment, self.seed = dataset, batch_size, size, augment, seed
        self.sampler = range(len(dataset))  # Ultralytics reads len(loader.sampler)
        self.epoch = 0

    def __len__(self) -> int:
        return math.ceil(len(self.dataset) / self.batch_size)

    def reset(self) -> None:
        """Nothing to rebuild (Ultralytics calls it when closing mosaic)."""

    def __iter__(self):
        images, labels = self.dataset.images, self.dataset.labels
        g = torch.Generator(device=images.device)
        g.manual_seed(self.seed * 100003 + self.epoch)
        n = len(self.dataset)
        order = torch.randperm(n, generator=g, device=images.device) if self.augment else None
        for start in range(0, n, self.batch_size):
            idx = order[start : start + self.batch_size] if order is not None else slice(start, start + self.batch_size)
            x = self.augment(images[idx], g) if self.augment else resize_like_validation(images[idx], self.size)
            yield {"img": x.expand(-1, 3, -1, -1).contiguous(), "cls": labels[idx]}
        self.epoch += 1


def load_split(path: str | Path, args, names: dict[int, str], mode: str, device: torch.device) -> MemoryDataset:
    """The images Ultralytics would use for this split (its fraction, its class indices), decoded into memory."""
    listing = ClassificationDataset(str(path), args, augment=False, prefix="train" if mode == "train" else args.split,
                                    names=names)  # fmt: skip
    files = [s[0] for s in listing.samples]
    if not files:
        raise ConfigError(f"{path}: no images in the {mode} split")
    images = torch.from_numpy(decode(files)).to(device)
    labels = torch.tensor([s[1] for s in listing.samples], dtype=torch.int64, device=device)
    return MemoryDataset(images, labels, files)


class MemoryTrainer(ClassificationTrainer):
    """ClassificationTrainer whose loaders serve a pre-decoded in-memory split, augmented in batches on device."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.world_size > 1:
            raise ConfigError("fast=True trains on one device; drop fast=True for multi-GPU (DDP) training")
        if self.device.type == "cpu":  # Ultralytics leaves a core idle for loader workers that this path does not use
            torch.set_num_threads(os.cpu_count() or 1)
        self.add_callback("on_train_epoch_start", lambda t: setattr(t.train_loader, "epoch", t.epoch))
        self._splits: dict[str, MemoryDataset] = {}

    def get_dataloader(self, dataset_path, batch_size: int = 16, rank: int = 0, mode: str = "train"):
        key = f"{mode}:{dataset_path}"
        if key not in self._splits:
            self._splits[key] = load_split(dataset_path, self.args, self.data["names"], mode, self.device)
            LOGGER.info(f"fast loader: {len(self._splits[key])} {mode} images of {dataset_path} in memory "
                        f"({self._splits[key].images.nbytes / 1e6:.0f} MB, {self.device})")  # fmt: skip
        size = int(self.args.imgsz)
        if mode == "train":
            return MemoryLoader(self._splits[key], batch_size, size, Augment.from_args(self.args), self.args.seed)
        unwrap_model(self.model).transforms = classify_transforms(size=size)  # for best.pt's predictor, as stock
        return MemoryLoader(self._splits[key], batch_size, size, None)

    def preprocess_batch(self, batch):
        return batch  # already on the device
